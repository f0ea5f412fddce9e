"""The durable record of one task: what was asked, where it stands, and how it ended."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class TaskStatus(StrEnum):
    """A task's life: pending → running → completed | failed | cancelled; a retryable failure
    waits as `retrying` until its next attempt is due, then is pending again."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class Priority(StrEnum):
    """High-priority tasks are always taken before normal ones of the same label."""

    NORMAL = "normal"
    HIGH = "high"


class ErrorInfo(BaseModel):
    """Why a task failed, kept whole so a person can act on it."""

    type: str
    message: str
    traceback: str | None = None
    host: str | None = None  # farm mode: where it failed


class TaskRecord(BaseModel):
    """One task's record as stored in the records manifest and returned by the API."""

    id: str
    type: str
    label: str
    status: TaskStatus = TaskStatus.PENDING
    priority: Priority = Priority.NORMAL
    args: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    attempts: int = 0  # only ever grows: a writer's attempt fences its writes
    retried_at_attempt: int = 0  # a retry by hand gives a fresh budget from here
    errors_before_retry: int = 0  # errors before the last retry by hand (history only)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    progress: float = 0.0
    progress_message: str | None = None
    progress_detail: dict[str, Any] | None = None  # e.g. a render's frames done, ETA
    errors: list[ErrorInfo] = Field(default_factory=list)  # every failed attempt's error
    next_attempt_at: datetime | None = None  # while retrying
    origin: str | None = None  # who made it: "cron:<job>@<time>", "watch:<file>", …
    timeout_s: float | None = None  # maximum runtime of one attempt
    heartbeat_at: datetime | None = None  # written every few seconds while running
    paused: bool = False  # a running render stopped with SIGSTOP
    paused_reason: str | None = None  # why pi-render paused it itself (its output disk is full)
    parent: str | None = None  # runs only after this task completed…
    parent_result: dict[str, Any] | None = None  # …and gets its result
    limit_key: str | None = None  # what its type's limit counts it under
    content_key: str | None = None  # a render's content + settings hash (dedup)
    requires: dict[str, Any] | None = None  # capabilities its pool must have
    submitted_by: dict[str, int] | None = None  # the peer's uid, gid and pid
    job: str | None = None  # a chunk: the render job it is part of
    chunks: int | None = None  # a job split into chunks: how many (never queued itself)
    version: int = 0  # the store's: one more with every change (compare-and-set)
