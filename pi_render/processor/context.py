"""What a running processor may see and do: its id, a stop signal, and a way to report progress."""

import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pi_render.clock import SYSTEM, Clock


class StopReason(StrEnum):
    """Why a running task is asked to stop; decides whether it ends or resumes later."""

    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    TIMEOUT = "timeout"
    LEASE_LOST = "lease_lost"  # farm: another host took the task over; stop, write nothing


class TaskStopped(Exception):
    """Raised by a processor when it honours a stop request."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(f"task stopped: {reason.value}")
        self.reason = reason


ProgressSink = Callable[[float, str | None, dict[str, Any] | None], None]


class TaskContext:
    """Handed to `Processor.run`; one per delivery of a task."""

    def __init__(
        self,
        task_id: str,
        attempt: int,
        on_progress: ProgressSink,
        parent_result: dict[str, Any] | None = None,
        clock: Clock = SYSTEM,
        on_hold: Callable[[str | None], None] = lambda reason: None,
    ) -> None:
        self.clock = clock  # what its time limits, pauses and progress are timed by
        self.task_id = task_id
        self.attempt = attempt
        self.parent_result = parent_result  # what the parent task returned (chaining)
        self.record_json: str | None = None  # this task's record as JSON, for notify
        self.job: str | None = None  # a chunk's job: its frames are the job's (one ledger key)
        self.gpu_slot: int | None = None  # gpu_per_worker: the GPU (an index) this worker owns
        self._on_progress = on_progress
        self._on_hold = on_hold
        self.held: str | None = None  # why the processor holds itself paused (None: it does not)
        self._stop = threading.Event()
        self._reason: StopReason | None = None
        self._on_stop: list[Callable[[], None]] = []
        self._on_pause: Callable[[bool], None] | None = None
        self._paused_since: float | None = None
        self._user_since: float | None = None  # when a person paused it (None: not paused)
        self._resumed_at: float | None = None
        self._paused_total = 0.0
        self._lock = threading.Lock()

    def request_stop(self, reason: StopReason) -> None:
        """Ask the processor to stop; the first reason given wins."""
        with self._lock:
            if self._reason is None:
                self._reason = reason
            self._stop.set()
            callbacks = list(self._on_stop)
        for callback in callbacks:
            callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a stop is requested (at once if one already was): lets a
        processor that waits on something else (a subprocess) hear about it."""
        with self._lock:
            self._on_stop.append(callback)
            stopped = self._stop.is_set()
        if stopped:
            callback()

    @property
    def stop_reason(self) -> StopReason | None:
        return self._reason

    def on_pause(self, callback: Callable[[bool], None] | None) -> None:
        """A processor that can pause (a render: SIGSTOP/SIGCONT) says how; None withdraws it,
        and with it a person's pause (the work it paused is over)."""
        with self._lock:
            self._on_pause = callback
            if callback is None:
                before, self._user_since = self._stopped(), None
                self._changed(before)

    def set_paused(self, paused: bool) -> bool:
        """A person pauses or resumes the work; False if this processor cannot pause now. While
        the processor holds itself (`hold`), a resume only withdraws the person's pause: the
        work stays stopped until the hold ends too."""
        with self._lock:
            if self._on_pause is None:
                return False
            before = self._stopped()
            if paused != (self._user_since is not None):
                self._user_since = self.clock.monotonic() if paused else None
            self._changed(before)
        return True

    def hold(self, reason: str | None) -> None:
        """The processor stops its work for `reason` (a full output disk), or lets go (None: it
        goes on, unless a person paused it meanwhile); the record, health and dashboard say so."""
        with self._lock:
            before, self.held = self._stopped(), reason
            self._changed(before)
        self._on_hold(reason)

    @property
    def paused(self) -> bool:
        """Stopped by a person, by the processor's own hold, or both."""
        with self._lock:
            return self._stopped()

    def _stopped(self) -> bool:
        return self._user_since is not None or self.held is not None

    def _changed(self, before: bool) -> None:
        """Signal the work (in order: the caller holds the lock) when whether it is stopped has
        changed, and keep the paused time."""
        after = self._stopped()
        if after == before:
            return
        if self._on_pause is not None:
            self._on_pause(after)
        now = self.clock.monotonic()
        if after:
            self._paused_since = now
        elif self._paused_since is not None:
            self._paused_total += now - self._paused_since
            self._paused_since = None
            self._resumed_at = now

    def user_paused_since(self) -> float | None:
        """When a person's pause began (max_pause_s counts from it); None: none is on."""
        with self._lock:
            return self._user_since

    def resumed_at(self) -> float | None:
        """When the work last went on after a pause (the hang watchdog counts from it)."""
        with self._lock:
            return self._resumed_at

    def paused_s(self) -> float:
        """How long the work has been paused in all (a time limit does not count it)."""
        with self._lock:
            since = self._paused_since
            ongoing = 0.0 if since is None else self.clock.monotonic() - since
            return self._paused_total + ongoing

    def sleep(self, seconds: float) -> None:
        """Wait, but wake at once on a stop request.

        Raises:
            TaskStopped: when asked to stop before the time is up.
        """
        if self._stop.wait(seconds):
            self.check_stop()

    def check_stop(self) -> None:
        """Raises TaskStopped if a stop was requested."""
        if self._stop.is_set():
            raise TaskStopped(self._reason or StopReason.CANCEL)

    def report_progress(
        self, fraction: float, message: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        self._on_progress(min(1.0, max(0.0, fraction)), message, detail)
