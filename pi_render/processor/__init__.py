"""Processors; importing this package registers the built-in ones."""

from pi_render.processor import (  # noqa: F401  (the built-ins register themselves)
    encode_video,
    inspect_blend,
    noop,
    notify,
    render,
)
from pi_render.processor.base import Processor, processor_for
from pi_render.processor.context import StopReason, TaskContext, TaskStopped

__all__ = ["Processor", "processor_for", "StopReason", "TaskContext", "TaskStopped"]
