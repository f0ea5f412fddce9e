"""`encode_video`: a render's frames → one H.264 MP4 (ffmpeg), at the scene's frame rate."""

from pydantic import BaseModel, ConfigDict, Field

from pi_render.task import labels
from pi_render.task.base import TaskBase


class EncodeVideoArgs(BaseModel):
    """Frames come from the parent task's result (a render); `fps` defaults to the scene's."""

    model_config = ConfigDict(extra="forbid")

    fps: float | None = Field(None, gt=0, le=1000)
    crf: int = Field(18, ge=0, le=51)
    name: str = Field("video.mp4", pattern=r"^[\w.-]+\.mp4$")


class EncodeVideoResult(BaseModel):
    path: str
    frames: int
    fps: float
    size: int
    sha256: str


class EncodeVideoTask(TaskBase[EncodeVideoArgs, EncodeVideoResult]):
    type_name = "encode_video"
    default_label = labels.DEFAULT
