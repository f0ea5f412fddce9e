"""Task types. The built-in ones register themselves on the first lookup (see base.task_type),
so importing a record model stays cheap for the CLI."""

from pi_render.task.base import MetaTask, TaskBase, task_type, task_types

__all__ = ["MetaTask", "TaskBase", "task_type", "task_types"]
