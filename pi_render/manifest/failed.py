"""What `pi-render failed` lists of a task waiting for its next attempt or dead (made from its
record: a retry is a delayed put on the task's own queue, so no store of its own is needed)."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from pi_render.task.record import ErrorInfo, TaskRecord, TaskStatus


class FailedTask(BaseModel):
    """What `pi-render failed` lists."""

    task_id: str
    type: str
    state: Literal["waiting", "dead"]
    attempts: int
    next_attempt_at: datetime | None
    last_error: ErrorInfo | None
    errors: list[ErrorInfo]

    @classmethod
    def of(cls, record: TaskRecord) -> "FailedTask":
        return cls(
            task_id=record.id,
            type=record.type,
            state="waiting" if record.status is TaskStatus.RETRYING else "dead",
            attempts=record.attempts,
            next_attempt_at=record.next_attempt_at,
            last_error=record.error,
            errors=record.errors,
        )
