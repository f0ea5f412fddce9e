"""Cron schedules that never drift and never fire twice: next fire times come from croniter in the
job's own time zone, stepped on wall-clock time and mapped to UTC once (first occurrence on a
fall-back day; the instant after the gap on a spring-forward day)."""

from datetime import datetime, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STEPS = 1000  # a schedule that never matches after a moment in time is refused, not looped


class CronJob(BaseModel):
    """A `[[cron]]` entry: a task submitted on a schedule (5 fields, or 6 with seconds first)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    schedule: str
    task: str
    args: dict[str, object] = Field(default_factory=dict)
    timezone: str = "UTC"
    catch_up: Literal["skip", "once"] = "skip"
    priority: Literal["normal", "high"] = "normal"

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        fields = len(value.split())
        if fields not in (5, 6) or not croniter.is_valid(value, second_at_beginning=fields == 6):
            raise ValueError(f"{value!r} is not a cron expression of 5 or 6 fields")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


def next_fire(schedule: str, zone: str, after: datetime) -> datetime:
    """The first fire time strictly after `after` (aware), in UTC."""
    tz = ZoneInfo(zone)
    wall = after.astimezone(tz).replace(tzinfo=None)
    steps = croniter(schedule, wall, second_at_beginning=len(schedule.split()) == 6)
    for _ in range(MAX_STEPS):
        naive: datetime = steps.get_next(datetime)
        candidate = naive.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
        if candidate > after:
            return candidate
    raise ValueError(f"{schedule!r} has no fire time after {after.isoformat()}")
