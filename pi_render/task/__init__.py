"""Task types; importing this package registers the built-in ones."""

from pi_render.task import inspect_blend, noop  # noqa: F401  (registers the built-in types)
from pi_render.task.base import MetaTask, TaskBase, task_type, task_types

__all__ = ["MetaTask", "TaskBase", "task_type", "task_types"]
