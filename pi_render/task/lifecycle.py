"""The allowed moves of a task record, as pure functions the manifest applies atomically.

Each returns the new record, or None when the move does not apply (the record stays as is).
"""

import traceback
from datetime import datetime
from typing import Any

from pi_render.task.record import ErrorInfo, TaskRecord, TaskStatus


def start(record: TaskRecord, now: datetime, worker: str) -> TaskRecord | None:
    """pending (or retrying, once its next attempt is due) → running. A final record is never
    run again; a retrying one delivered early (a delivery handed back by a crash) waits for its
    delayed one; a running one is not started twice (after a crash, recovery has made it
    pending again before any worker runs)."""
    due = record.status is TaskStatus.RETRYING and (
        record.next_attempt_at is None or record.next_attempt_at <= now)  # fmt: skip
    if record.status is not TaskStatus.PENDING and not due:
        return None
    return record.model_copy(
        update={
            "status": TaskStatus.RUNNING,
            "attempts": record.attempts + 1,
            "started_at": now,
            "worker": worker,
            "progress": 0.0,
            "progress_message": None,
            "heartbeat_at": now,
            "paused": False,
            "next_attempt_at": None,
        }
    )


def set_paused(record: TaskRecord, paused: bool) -> TaskRecord | None:
    if record.status is not TaskStatus.RUNNING:
        return None
    return record.model_copy(update={"paused": paused})


def heartbeat(record: TaskRecord, now: datetime) -> TaskRecord | None:
    if record.status is not TaskStatus.RUNNING:
        return None
    return record.model_copy(update={"heartbeat_at": now})


def progress(
    record: TaskRecord, fraction: float, message: str | None, detail: dict[str, Any] | None = None
) -> TaskRecord | None:
    if record.status is not TaskStatus.RUNNING:
        return None
    return record.model_copy(
        update={"progress": fraction, "progress_message": message, "progress_detail": detail}
    )


def complete(record: TaskRecord, now: datetime, result: dict[str, Any]) -> TaskRecord | None:
    if record.status is not TaskStatus.RUNNING:
        return None
    detail = record.progress_detail
    if detail and "frames_total" in detail:  # the last throttled report may be behind
        detail = {**detail, "frames_done": detail["frames_total"], "percent": 100.0, "eta_s": 0}
    return record.model_copy(
        update={
            "status": TaskStatus.COMPLETED,
            "result": result,
            "error": None,
            "finished_at": now,
            "progress": 1.0,
            "progress_detail": detail,
        }
    )


def error_info(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        type=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        traceback="".join(traceback.format_exception(exc)),
    )


def fail(record: TaskRecord, now: datetime, error: ErrorInfo) -> TaskRecord | None:
    """Dead: no attempt is left, or the failure cannot heal by retrying."""
    if record.status.is_final:
        return None
    return record.model_copy(
        update={
            "status": TaskStatus.FAILED,
            "error": error,
            "errors": [*record.errors, _short(error)],
            "finished_at": now,
            "next_attempt_at": None,
        }
    )


def retry_later(record: TaskRecord, error: ErrorInfo, at: datetime) -> TaskRecord | None:
    """running → retrying until `at`."""
    if record.status is not TaskStatus.RUNNING:
        return None
    return record.model_copy(
        update={
            "status": TaskStatus.RETRYING,
            "error": error,
            "errors": [*record.errors, _short(error)],
            "next_attempt_at": at,
            "worker": None,
        }
    )


def due(record: TaskRecord) -> TaskRecord | None:
    """retrying → pending: its next attempt is due."""
    if record.status is not TaskStatus.RETRYING:
        return None
    return record.model_copy(update={"status": TaskStatus.PENDING, "next_attempt_at": None})


def retry_now(record: TaskRecord) -> TaskRecord | None:
    """A person asked: a failed (dead) or retrying task is pending again, with a fresh budget."""
    if record.status not in (TaskStatus.FAILED, TaskStatus.RETRYING):
        return None
    return record.model_copy(
        update={
            "status": TaskStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": None,
            "finished_at": None,
            "error": None,
        }
    )


def _short(error: ErrorInfo) -> ErrorInfo:
    """The history keeps type and message; only the latest error keeps its traceback."""
    return ErrorInfo(type=error.type, message=error.message)


def cancel(record: TaskRecord, now: datetime, reason: str) -> TaskRecord | None:
    if record.status.is_final:
        return None
    return record.model_copy(
        update={
            "status": TaskStatus.CANCELLED,
            "error": ErrorInfo(type="Cancelled", message=reason),
            "finished_at": now,
        }
    )


def requeue(record: TaskRecord) -> TaskRecord | None:
    """running → pending: the daemon stopped (or died) under it; it resumes on the next start."""
    if record.status is not TaskStatus.RUNNING:
        return None
    return record.model_copy(update={"status": TaskStatus.PENDING, "worker": None})
