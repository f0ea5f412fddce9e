"""Freed memory back to the system when the daemon goes idle after a burst.

glibc's malloc keeps what Python frees in its heaps and arenas (one per busy thread), so after a
burst of submits the daemon's RSS stays near the burst's peak for good: 100,000 records left
~145 MiB resident of which ~65 MiB were live objects (docs/reliability.md, load). `malloc_trim`
hands the free pages back. It runs when a worker finds its queue empty, at most every
`MIN_INTERVAL_S`, and only after work was done since the last time.
"""

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

MIN_INTERVAL_S = 10.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl has none): nothing to give back this way
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class HeapTrimmer:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 trim: Callable[[int], int] | None = None) -> None:  # fmt: skip
        self._clock = clock
        self._trim = trim if trim is not None else _malloc_trim()
        self._lock = threading.Lock()
        self._last = -MIN_INTERVAL_S
        self._work_since = False

    def worked(self) -> None:
        self._work_since = True

    def idle(self) -> bool:
        """Called by a worker that found nothing to do; True when it trimmed."""
        if self._trim is None or not self._work_since:
            return False
        with self._lock:
            now = self._clock()
            if now - self._last < MIN_INTERVAL_S:
                return False
            self._last, self._work_since = now, False
        self._trim(0)
        return True


TRIMMER = HeapTrimmer()
