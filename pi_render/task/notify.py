"""`notify`: runs the configured local command with the task's JSON on stdin (a workflow's end)."""

from pydantic import BaseModel, ConfigDict

from pi_render.task import labels
from pi_render.task.base import TaskBase


class NotifyArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str | None = None


class NotifyResult(BaseModel):
    exit_code: int
    output: str


class NotifyTask(TaskBase[NotifyArgs, NotifyResult]):
    type_name = "notify"
    default_label = labels.DEFAULT
