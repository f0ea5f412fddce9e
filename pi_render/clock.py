"""Time is passed in, never patched: the daemon uses SystemClock, tests use FakeClock."""

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """What time-dependent code needs: wall time for records, monotonic time for intervals, and a
    wait on a condition that this clock's time ends (so a fake clock drives every deadline)."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def wait_for(self, cond: threading.Condition, predicate: Callable[[], bool],
                 timeout: float | None) -> bool:  # fmt: skip
        """Like `cond.wait_for` (the caller holds `cond`), timed by this clock."""


class SystemClock:
    """The real clock (UTC wall time)."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait_for(self, cond: threading.Condition, predicate: Callable[[], bool],
                 timeout: float | None) -> bool:  # fmt: skip
        return cond.wait_for(predicate, timeout)


SYSTEM = SystemClock()  # for code with nobody to hand it a clock (the CLI, module caches)


class FakeClock:
    """A clock that moves only when told to; thread-safe so workers may read it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
        self._mono = 0.0
        self._lock = threading.Lock()
        self._waiting: dict[threading.Condition, int] = {}  # waits on each condition

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def wait_for(self, cond: threading.Condition, predicate: Callable[[], bool],
                 timeout: float | None) -> bool:  # fmt: skip
        """Returns when `predicate` holds or `advance` has moved this clock past the timeout;
        woken by the condition's own notifications and by every `advance`."""
        deadline = None if timeout is None else self.monotonic() + timeout
        with self._lock:
            self._waiting[cond] = self._waiting.get(cond, 0) + 1
        try:
            while not predicate():
                if deadline is not None and self.monotonic() >= deadline:
                    return predicate()
                cond.wait(1.0)  # a safety net: `advance` notifies
            return True
        finally:
            with self._lock:
                if self._waiting[cond] == 1:
                    del self._waiting[cond]
                else:
                    self._waiting[cond] -= 1

    def waiting(self) -> int:
        """How many waits this clock is timing now: a test moves the clock once they wait, so
        that no deadline is computed after the move it was meant to see."""
        with self._lock:
            return sum(self._waiting.values())

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
            waiting = list(self._waiting)
        for cond in waiting:
            with cond:
                cond.notify_all()
