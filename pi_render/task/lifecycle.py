"""The allowed moves of a task record, as pure functions the manifest applies atomically.

Each returns the new record, or None when the move does not apply (the record stays as is).
"""

import traceback
from datetime import datetime
from typing import Any

from pi_render.task.record import ErrorInfo, TaskRecord, TaskStatus


def start(record: TaskRecord, now: datetime, worker: str) -> TaskRecord | None:
    """pending (or running, after a crash) → running; a final record is never run again."""
    if record.status.is_final:
        return None
    return record.model_copy(
        update={
            "status": TaskStatus.RUNNING,
            "attempts": record.attempts + 1,
            "started_at": now,
            "worker": worker,
            "progress": 0.0,
            "progress_message": None,
        }
    )


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
    if record.status.is_final:
        return None
    return record.model_copy(
        update={"status": TaskStatus.FAILED, "error": error, "finished_at": now}
    )


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
