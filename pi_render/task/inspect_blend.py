"""`inspect_blend`: what a .blend will render (version, scenes, current scene's settings)."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from pi_render.blend import BlendInfo
from pi_render.task import labels
from pi_render.task.base import TaskBase


class InspectBlendArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not Path(value).is_absolute():
            raise ValueError(
                "must be an absolute path (the daemon has no working directory of yours)"
            )
        return value


class InspectBlendTask(TaskBase[InspectBlendArgs, BlendInfo]):
    """Runs the pure-Python reader in the daemon; Blender is not needed."""

    type_name = "inspect_blend"
    default_label = labels.DEFAULT
