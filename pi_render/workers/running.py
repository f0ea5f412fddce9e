"""Which tasks are running right now, so a cancel or a shutdown can reach their processors."""

import threading

from pi_render.processor.context import StopReason, TaskContext


class RunningTasks:
    """Thread-safe map of task id → the context of its current delivery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: dict[str, TaskContext] = {}

    def add(self, ctx: TaskContext) -> None:
        with self._lock:
            self._contexts[ctx.task_id] = ctx

    def discard(self, task_id: str) -> None:
        with self._lock:
            self._contexts.pop(task_id, None)

    def request_stop(self, task_id: str, reason: StopReason) -> bool:
        with self._lock:
            ctx = self._contexts.get(task_id)
        if ctx is None:
            return False
        ctx.request_stop(reason)
        return True

    def set_paused(self, task_id: str, paused: bool) -> bool:
        with self._lock:
            ctx = self._contexts.get(task_id)
        return ctx is not None and ctx.set_paused(paused)

    def stop_all(self, reason: StopReason) -> int:
        with self._lock:
            contexts = list(self._contexts.values())
        for ctx in contexts:
            ctx.request_stop(reason)
        return len(contexts)

    def pause_state(self, task_id: str) -> tuple[bool, str | None] | None:
        """(stopped, the hold's reason) of a running task's work, read when its record is
        written (so the last write says the newest state); None when it is not running here."""
        with self._lock:
            ctx = self._contexts.get(task_id)
        return None if ctx is None else (ctx.paused, ctx.held)

    def held(self) -> dict[str, str]:
        """The tasks whose processors paused themselves, and why (a full output disk)."""
        with self._lock:
            contexts = list(self._contexts.values())
        return {ctx.task_id: ctx.held for ctx in contexts if ctx.held}

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._contexts)

    def __len__(self) -> int:
        with self._lock:
            return len(self._contexts)
