"""The allowed moves of a task record, as pure functions the manifest applies atomically.

Each returns the new record, or None when the move does not apply (the record stays as is).
"""

import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pi_render.errors import StaleAttempt
from pi_render.task.record import ErrorInfo, TaskRecord, TaskStatus


def start(
    record: TaskRecord, now: datetime, worker: str, take_over: bool = False
) -> TaskRecord | None:
    """pending (or retrying, once its next attempt is due) → running. A final record is never
    run again; a retrying one delivered early (a delivery handed back by a crash) waits for its
    delayed one; a running one is not started twice (after a crash, recovery has made it
    pending again before any worker runs), unless `take_over`: its delivery's lease ran out
    (farm mode: its host died or was cut off), and the new attempt fences the old one out."""
    due = record.status is TaskStatus.RETRYING and (
        record.next_attempt_at is None or record.next_attempt_at <= now)  # fmt: skip
    taken = take_over and record.status is TaskStatus.RUNNING
    if record.status is not TaskStatus.PENDING and not due and not taken:
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
            "paused_reason": None,
            "next_attempt_at": None,
        }
    )


def fenced(attempt: int, move: Callable[[TaskRecord], TaskRecord | None]
           ) -> Callable[[TaskRecord], TaskRecord | None]:  # fmt: skip
    """`move`, applied only while the record is still at `attempt`: a worker whose attempt was
    taken over (its lease ran out) writes nothing more.

    Raises (from the returned function):
        StaleAttempt.
    """

    def apply(record: TaskRecord) -> TaskRecord | None:
        if record.attempts != attempt:
            raise StaleAttempt(
                f"task {record.id} is at attempt {record.attempts}; attempt "
                f"{attempt}'s write was refused (another host took it over)"
            )
        return move(record)

    return apply


def set_paused(record: TaskRecord, paused: bool, reason: str | None = None) -> TaskRecord | None:
    """Paused by a person (no reason) or by pi-render itself (the reason: a full output disk);
    the reason is also the progress message, which every view shows."""
    if record.status is not TaskStatus.RUNNING:
        return None
    update: dict[str, object] = {"paused": paused, "paused_reason": reason if paused else None}
    if reason is not None or record.paused_reason is not None:
        update["progress_message"] = reason
    return record.model_copy(update=update)


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
            # attempts only grow: a worker still at the old attempt is fenced out at once, and
            # the budget (and the farm's count of failing hosts) starts afresh from here
            "attempts": record.attempts + 1,
            "retried_at_attempt": record.attempts + 1,
            "errors_before_retry": len(record.errors),
            "next_attempt_at": None,
            "finished_at": None,
            "error": None,
        }
    )


def retry_chunk(record: TaskRecord) -> TaskRecord | None:
    """A job retried by hand: each chunk that failed or was cancelled with it runs again."""
    if record.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.RETRYING):
        return None
    return retry_now(record.model_copy(update={"status": TaskStatus.FAILED}))


def _short(error: ErrorInfo) -> ErrorInfo:
    """The history keeps type and message; only the latest error keeps its traceback."""
    return ErrorInfo(type=error.type, message=error.message, host=error.host)


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
