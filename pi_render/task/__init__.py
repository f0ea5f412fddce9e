"""Task types; importing this package registers the built-in ones."""

from pi_render.task import inspect_blend, noop, render  # noqa: F401  (the built-in types)
from pi_render.task.base import MetaTask, TaskBase, task_type, task_types

__all__ = ["MetaTask", "TaskBase", "task_type", "task_types"]
