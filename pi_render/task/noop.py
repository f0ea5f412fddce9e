"""`noop`: echoes its payload after an optional, cancellable sleep (diagnostics, benchmarks)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pi_render.task import labels
from pi_render.task.base import TaskBase


class NoopArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: Any = None
    sleep_s: float = Field(0.0, ge=0.0, le=86400.0)


class NoopResult(BaseModel):
    payload: Any = None


class NoopTask(TaskBase[NoopArgs, NoopResult]):
    """Does nothing useful, durably: proves the spine end to end."""

    type_name = "noop"
    default_label = labels.DEFAULT
