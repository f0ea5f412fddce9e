"""Retry policy: exponential backoff with jitter and a maximum number of attempts per task type;
failures that retrying cannot heal (bad input) end the task at once."""

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from pi_render.backoff import Backoff
from pi_render.blend.errors import BlendFileError


class RetryPolicy(BaseModel):
    """`delay(n) = min(max_delay_s, base_delay_s * factor**(n-1)) * (1 ± jitter)`."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=1000)
    base_delay_s: float = Field(10.0, ge=0)
    factor: float = Field(2.0, ge=1)
    max_delay_s: float = Field(3600.0, ge=0)
    jitter: float = Field(0.1, ge=0, le=1)

    def delay_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        backoff = Backoff(self.base_delay_s, self.max_delay_s, self.factor, self.jitter)
        return backoff.delay(attempt, rand)


def is_retryable(exc: BaseException) -> bool:
    """Bad input (a corrupt .blend, invalid arguments…) fails the same way every time."""
    if isinstance(exc, BlendFileError):
        return False
    return bool(getattr(exc, "retryable", True))


class RetryPolicies:
    """The policy of each task type (`default` for the rest), and the decision it leads to."""

    def __init__(self, policies: dict[str, RetryPolicy], rand: Callable[[], float] = random.random):
        self._policies = policies
        self._default = policies.get("default", RetryPolicy())
        self._rand = rand

    def update(self, policies: dict[str, RetryPolicy]) -> None:
        """Take new policies (a config reload); tasks already waiting keep their next attempt."""
        self._policies = policies
        self._default = policies.get("default", RetryPolicy())

    def policy(self, type_name: str) -> RetryPolicy:
        return self._policies.get(type_name, self._default)

    def next_attempt(
        self, type_name: str, attempts: int, exc: BaseException, now: datetime
    ) -> datetime | None:
        """When to try again, or None: the task is dead."""
        policy = self.policy(type_name)
        if not is_retryable(exc) or attempts >= policy.max_attempts:
            return None
        return now + timedelta(seconds=policy.delay_s(attempts, self._rand))
