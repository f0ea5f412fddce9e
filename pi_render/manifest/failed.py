"""The failed-task manifest: tasks waiting for their next attempt, and dead ones, by task id."""

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from pi_render.manifest.base import DurableJsonTable
from pi_render.task.record import ErrorInfo, TaskRecord, TaskStatus

TABLE = "failed"


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


class FailedTaskManifest:
    """Durable (fsynced) entries; small, so reads are whole-table."""

    def __init__(self, path: Path) -> None:
        self._store = DurableJsonTable(path, TABLE)

    def put(self, entry: FailedTask) -> None:
        self._store.stage(entry.task_id, entry.model_dump_json())
        self._store.commit()

    def delete(self, task_id: str) -> None:
        self._store.delete(task_id)
        self._store.commit()

    def get(self, task_id: str) -> FailedTask | None:
        text = self._store.text(task_id)
        return None if text is None else FailedTask.model_validate_json(text)

    def all(self) -> list[FailedTask]:
        rows = self._store.query(f"SELECT value FROM {TABLE} ORDER BY key DESC")
        return [FailedTask.model_validate_json(row[0]) for row in rows]

    def waiting(self) -> list[FailedTask]:
        return [e for e in self.all() if e.state == "waiting"]

    def forget_task(self, task_id: str) -> None:
        self.delete(task_id)

    def close(self) -> None:
        self._store.close()
