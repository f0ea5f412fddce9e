"""Completion hooks (the seed's finished callback): a local command that gets the task's JSON on
stdin, or an HTTP webhook that gets it as the body. Every delivery goes through a persistent
outbox and is retried until it succeeds, across restarts.

The outbox entry is written (fsynced) before the record's final state is, so a crash between
the two cannot lose a delivery; an entry is delivered only once the record really is final with
the status it was made for (and dropped if the task ended otherwise).
"""

import hashlib
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pi_render.manifest.base import DurableJsonTable
from pi_render.task.record import TaskRecord

log = logging.getLogger(__name__)

FinalStatus = Literal["completed", "failed", "cancelled"]
_COMPLETED: FinalStatus = "completed"
_FAILED: FinalStatus = "failed"


class Hook(BaseModel):
    """A `[[hooks]]` entry."""

    model_config = ConfigDict(extra="forbid")

    on: list[FinalStatus] = Field(default_factory=lambda: [_COMPLETED, _FAILED])
    types: list[str] | None = None  # only these task types; all when unset
    command: list[str] | None = None
    url: str | None = None
    timeout_s: float = Field(30.0, gt=0)
    retry_s: float = Field(5.0, gt=0, description="first retry delay; doubles, at most 1 h")

    @model_validator(mode="after")
    def _one_target(self) -> "Hook":
        if (self.command is None) == (self.url is None):
            raise ValueError("a hook needs exactly one of `command` or `url`")
        return self

    @property
    def hook_id(self) -> str:
        """Stable across reloads and reorderings: a hash of the hook's own settings."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    def wants(self, record: TaskRecord) -> bool:
        return record.status.value in self.on and (self.types is None or record.type in self.types)


class Delivery(BaseModel):
    key: str
    task_id: str
    hook: str  # the hook's id
    status: FinalStatus
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


class HookOutbox:
    """Deliveries owed, fsynced; `notify` wakes the hook worker."""

    def __init__(self, path: Path, hooks: list[Hook]) -> None:
        self.hooks = hooks
        self._store = DurableJsonTable(path, "outbox")
        self.changed = threading.Condition()

    def before_final(self, record: TaskRecord) -> None:
        """Records pre-commit listener: owe a delivery for each hook that wants this ending."""
        made = False
        for hook in self.hooks:
            if hook.wants(record):
                # one delivery per ending: a task retried by hand that fails again is told again
                key = f"{record.id}/{hook.hook_id}/{record.status.value}/{record.attempts}"
                if self._store.text(key) is None:
                    entry = Delivery.model_validate(
                        {"key": key, "task_id": record.id, "hook": hook.hook_id,
                         "status": record.status.value}
                    )  # fmt: skip
                    self._store.stage(key, entry.model_dump_json())
                    made = True
        if made:
            self._store.commit()

    def after_commit(self, record: TaskRecord) -> None:
        """Records listener: the final state is on disk now, so the hook worker may deliver."""
        if self.hooks and record.status.is_final:
            with self.changed:
                self.changed.notify_all()

    def owed(self) -> list[Delivery]:
        rows = self._store.query(
            "SELECT value FROM outbox WHERE json_extract(value, '$.delivered_at') IS NULL"
        )
        return [Delivery.model_validate_json(row[0]) for row in rows]

    def all(self) -> list[Delivery]:
        rows = self._store.query("SELECT value FROM outbox ORDER BY key")
        return [Delivery.model_validate_json(row[0]) for row in rows]

    def hook(self, hook_id: str) -> Hook | None:
        return next((h for h in self.hooks if h.hook_id == hook_id), None)

    def put(self, entry: Delivery) -> None:
        self._store.stage(entry.key, entry.model_dump_json())
        self._store.commit()

    def delete(self, entry: Delivery) -> None:
        self._store.delete(entry.key)
        self._store.commit()

    def forget_task(self, task_id: str) -> None:
        self._store.delete_prefix(f"{task_id}/")
        self._store.commit()

    def close(self) -> None:
        self._store.close()
