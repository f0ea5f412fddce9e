"""One backoff for every loop that tries again: task retries, hook deliveries, a worker that
keeps dying, a write the disk refused. `delay(n) = min(max_s, base_s * factor**(n-1)) * (1 ±
jitter)`, for the n-th failure in a row (1-based)."""

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_s: float
    max_s: float
    factor: float = 2.0
    jitter: float = 0.0  # 0.1: each delay is within ±10 % (tries of many tasks spread out)

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after the `failures`-th failure in a row."""
        exponent = min(max(failures, 1) - 1, 64)  # past 2**64 the cap has long been reached
        base = min(self.max_s, self.base_s * self.factor**exponent)
        return max(0.0, base * (1 + self.jitter * (2 * rand() - 1)))

    def counter(self) -> "Tries":
        return Tries(self)


class Tries:
    """Failures in a row of one loop: `failed()` gives the next wait, `succeeded()` starts over."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff, self.failures = backoff, 0

    def failed(self) -> float:
        self.failures += 1
        return self.backoff.delay(self.failures)

    def succeeded(self) -> None:
        self.failures = 0
