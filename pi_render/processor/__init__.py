"""Processors; importing this package registers the built-in ones."""

from pi_render.processor import inspect_blend, noop, render  # noqa: F401  (the built-ins)
from pi_render.processor.base import Processor, processor_for
from pi_render.processor.context import StopReason, TaskContext, TaskStopped

__all__ = ["Processor", "processor_for", "StopReason", "TaskContext", "TaskStopped"]
