"""`inspect_blend`: what a .blend will render (version, scenes, current scene's settings)."""

import shutil

from pydantic import BaseModel, ConfigDict, field_validator

from pi_render.blend import BlendFileError, BlendInfo
from pi_render.errors import PiRenderError
from pi_render.paths import absolute_path, confined
from pi_render.snapshot.access import SubmitterAccess
from pi_render.task import labels
from pi_render.task.base import SubmitContext, TaskBase


class InspectBlendArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    snapshot: str | None = None  # set at submit: the copy the reader reads

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        checked = absolute_path(value)
        assert checked is not None
        return checked


class UnreadableBlend(PiRenderError):
    """Raised at submit when the file to inspect cannot be read for the user who asks."""

    http_status = 422
    retryable = False


class InspectBlendTask(TaskBase[InspectBlendArgs, BlendInfo]):
    """Runs the pure-Python reader in the daemon; Blender is not needed. The file is read at
    submit, as the submitter would (inside the source roots, readable by them, a regular file,
    bounded), and the worker reads that copy: no FIFO, device or swapped path reaches it."""

    type_name = "inspect_blend"
    default_label = labels.DEFAULT

    @classmethod
    def prepare(cls, args: InspectBlendArgs, ctx: SubmitContext) -> InspectBlendArgs:
        source = confined(args.path, list(ctx.source_roots), "path", ctx.privileged)
        access = SubmitterAccess(ctx.source_roots, ctx.reader, ctx.spool)
        try:
            access.read_blend(str(source))
        except (OSError, BlendFileError) as exc:
            shutil.rmtree(ctx.spool, ignore_errors=True)
            reason = exc.message if isinstance(exc, BlendFileError) else exc.strerror or str(exc)
            raise UnreadableBlend(f"cannot inspect {args.path}: {reason}") from None
        return args.model_copy(update={"snapshot": str(access.blends[str(source)])})
