"""`render`: a .blend (or a zipped project) rendered by real Blender, frame by frame.

Anything the request leaves out comes from the file itself, read at submit from the snapshot.
"""

import hashlib
import os
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pi_render.blend import BlendFileError, read_blend_info
from pi_render.data_dir import DataDir
from pi_render.errors import PiRenderError
from pi_render.fsync import make_dirs
from pi_render.manifest.frames import FrameOutput
from pi_render.paths import PathNotAllowed, absolute_path, confined, readable_by, writable_by
from pi_render.snapshot.access import SubmitterAccess
from pi_render.snapshot.project import Snapshot, take_snapshot
from pi_render.snapshot.store import ContentStore
from pi_render.task import labels
from pi_render.task.base import SubmitContext, TaskBase
from pi_render.task.output_space import TrialFrame, check_fits
from pi_render.task.snapshot import SnapshotError, snapshot_project


class BlenderDataType(StrEnum):
    """The seed's data types: one .blend, or a project (textures, libraries) as a zip."""

    SINGLE_FILE = "SingleFile"
    MULTI_FILE = "MultiFile"


class RenderOutputType(StrEnum):
    """Blender's `-F` names."""

    TGA = "TGA"
    RAWTGA = "RAWTGA"
    JPEG = "JPEG"
    IRIS = "IRIS"
    IRIZ = "IRIZ"
    PNG = "PNG"
    BMP = "BMP"
    HDR = "HDR"
    TIFF = "TIFF"
    OPEN_EXR = "OPEN_EXR"
    OPEN_EXR_MULTILAYER = "OPEN_EXR_MULTILAYER"
    FFMPEG = "FFMPEG"
    CINEON = "CINEON"
    DPX = "DPX"
    DDS = "DDS"
    JP2 = "JP2"
    WEBP = "WEBP"


# the reader reports Blender's identifiers; `-F` spells three of them differently
_FROM_FILE_FORMAT = {"TARGA": "TGA", "TARGA_RAW": "RAWTGA", "JPEG2000": "JP2"}


MAX_FRAME = 1_048_574  # Blender's MAXFRAME


class InvalidRenderRequest(PiRenderError):
    """Raised at submit when the file or the requested settings cannot be rendered."""

    http_status = 422


class RenderArgs(BaseModel):
    """What to render; after submit every field but `blend` and `timeout_s` is filled in."""

    model_config = ConfigDict(extra="forbid")

    source: str
    blend: str | None = None  # MultiFile: the .blend inside the zip
    data_type: BlenderDataType | None = None
    output_type: RenderOutputType | None = None
    start_frame: int | None = None
    end_frame: int | None = None
    frame_step: int | None = Field(None, ge=1)
    scene: str | None = None
    engine: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,64}$")  # CYCLES, BLENDER_EEVEE…
    output_dir: str | None = None
    timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    snapshot: str | None = None  # set at submit: the copy in the spool that Blender renders
    content_sha256: str | None = None  # set at submit: the snapshot's bytes + the settings
    fps: float | None = None  # set at submit: the scene's frame rate
    allow_missing: bool | None = None  # render even if files it needs are missing (warned)
    snapshot_files: int | None = None  # set at submit: files in the snapshot, .blend included
    snapshot_bytes: int | None = None
    warnings: list[str] = Field(default_factory=list)  # set at submit: missing files allowed
    owner_uid: int | None = None  # set at submit: who the frames will belong to
    blend_version: str | None = None  # set at submit: the Blender that saved the file ("5.0")
    chunk_size: int | None = Field(None, ge=0)  # frames per chunk task (0: one task; None: config)
    device: Literal["auto", "cpu", "gpu"] | None = None  # where Cycles renders (None: the config's)
    frame_key: str | None = None  # set at submit: the file + what sets a frame's size (FrameSizes)
    check_space: bool = False  # render a trial frame at submit to see that the job fits

    @field_validator("source", "output_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return absolute_path(value)

    def frames(self) -> list[int]:
        assert self.start_frame is not None and self.end_frame is not None
        return list(range(self.start_frame, self.end_frame + 1, self.frame_step or 1))


class RenderResult(BaseModel):
    output_dir: str
    frames: list[FrameOutput]
    fps: float | None = None
    warnings: list[str] = Field(default_factory=list)  # missing files, at submit and in the log


class RenderTask(TaskBase[RenderArgs, RenderResult]):
    """Snapshots its source at submit, then renders on the `render` label's workers."""

    type_name = "render"
    default_label = labels.RENDER

    @classmethod
    def content_key(cls, args: RenderArgs) -> str | None:
        return args.content_sha256

    @classmethod
    def prepare(cls, args: RenderArgs, ctx: SubmitContext) -> RenderArgs:
        if not ctx.sandboxed and not ctx.privileged:
            raise PathNotAllowed(
                f"uid {(ctx.reader or (0,))[0]} may not render here: Blender has no "
                "sandbox on this machine (install bubblewrap; see `pi-render "
                "health`), so it renders only for the daemon's own user"
            )
        if ctx.upload is not None and Path(args.source).is_relative_to(ctx.upload):
            source = Path(args.source)  # an upload: checked by run_task, traced in its folder
        else:
            source = confined(args.source, list(ctx.source_roots), "source", ctx.privileged)
            if ctx.reader is not None and not readable_by(source, ctx.reader[0],
                                                          set(ctx.reader[1])):  # fmt: skip
                raise PathNotAllowed(f"uid {ctx.reader[0]} may not read {args.source}")
        data_type = args.data_type or (
            BlenderDataType.MULTI_FILE if source.suffix.lower() == ".zip"
            else BlenderDataType.SINGLE_FILE
        )  # fmt: skip
        allow_missing = ctx.allow_missing if args.allow_missing is None else args.allow_missing
        try:
            snap = _snapshot(source, data_type, args.blend, ctx, allow_missing)
            try:
                info = read_blend_info(snap.blend, scene=args.scene)
            except BlendFileError as exc:
                raise InvalidRenderRequest(f"cannot render {source}: {exc.message}") from None
            scene = info.scene
            start = scene.frame_start if args.start_frame is None else args.start_frame
            end = scene.frame_end if args.end_frame is None else args.end_frame
            if not scene.frame_start <= start <= end <= scene.frame_end:
                raise InvalidRenderRequest(
                    f"frames {start}-{end} are outside the file's range "
                    f"{scene.frame_start}-{scene.frame_end} (scene {scene.name!r})"
                )
            if not -MAX_FRAME <= start <= end <= MAX_FRAME:  # a crafted file can say anything
                raise InvalidRenderRequest(f"frames {start}-{end}: Blender renders frames "
                                           f"{-MAX_FRAME} to {MAX_FRAME} only")  # fmt: skip
            if args.output_dir is None:
                output_dir = ctx.output_root / ctx.task_id
            else:
                output_dir = confined(args.output_dir, [*ctx.output_roots, ctx.output_root],
                                      "output dir", ctx.privileged)  # fmt: skip
                if ctx.reader is not None and not writable_by(output_dir, ctx.reader[0],
                                                              set(ctx.reader[1])):  # fmt: skip
                    raise PathNotAllowed(f"uid {ctx.reader[0]} may not write in "
                                         f"{args.output_dir}")  # fmt: skip
            _check_writable(output_dir, ctx.reader[0] if ctx.reader is not None else None)
            file_format = _FROM_FILE_FORMAT.get(scene.file_format, scene.file_format)
            output_type = args.output_type or (
                RenderOutputType(file_format) if file_format in RenderOutputType.__members__
                else None
            )  # fmt: skip
            # what a frame's size depends on: the file, and the settings that change the image
            looks = [scene.name, args.engine or scene.engine, str(output_type), args.blend]
            sized = hashlib.sha256(f"{snap.digest}{looks!r}".encode()).hexdigest()
            if output_type is not RenderOutputType.FFMPEG:  # frames, not one growing file
                trial = TrialFrame(
                    ctx.task_id,
                    snap.blend,
                    scene.name,
                    start,
                    args.engine,
                    output_type.value if output_type else None,
                    info.blender_version,
                    ctx.reader[0] if ctx.reader else None,
                )
                _check_space(
                    args,
                    ctx,
                    output_dir,
                    sized,
                    trial,
                    len(range(start, end + 1, args.frame_step or scene.frame_step)),
                )
        except PiRenderError:
            shutil.rmtree(ctx.spool, ignore_errors=True)  # refused: leave nothing behind
            raise
        digest = hashlib.sha256(snap.digest.encode())
        settings = [
            scene.name,
            start,
            end,
            args.frame_step or scene.frame_step,
            args.engine or scene.engine,
            str(output_type),
            args.output_dir,
            args.blend,
        ]
        digest.update(repr(settings).encode())  # fmt: skip
        return args.model_copy(
            update={
                "content_sha256": digest.hexdigest(),
                "frame_key": sized,
                "fps": round(scene.fps / scene.fps_base, 6),
                "blend_version": info.blender_version,
                "data_type": data_type,
                "snapshot": str(snap.blend),
                "snapshot_files": snap.files,
                "snapshot_bytes": snap.bytes,
                "warnings": snap.warnings,
                "allow_missing": allow_missing,
                "owner_uid": ctx.reader[0] if ctx.reader is not None else None,
                "scene": scene.name,
                "start_frame": start,
                "end_frame": end,
                "frame_step": args.frame_step or scene.frame_step,
                "engine": args.engine or scene.engine,
                "output_type": output_type,
                "output_dir": str(output_dir),
            }
        )


def _check_space(args: RenderArgs, ctx: SubmitContext, output_dir: Path, key: str,
                 trial: TrialFrame, frames: int) -> None:  # fmt: skip
    """Refuse a render whose frames cannot fit where they go, when a frame's size is known: from
    an earlier render of the file, or from a trial frame when the submitter asked for one."""
    size, known_from = ctx.frame_size(key), "as an earlier render of this file made them"
    if size is None and args.check_space:
        if ctx.trial_frame is None:
            raise InvalidRenderRequest("check_space renders a trial frame for a render submitted "
                                       "on its own, not in a batch")  # fmt: skip
        size, known_from = ctx.trial_frame(trial), f"as a trial frame ({trial.frame}) came out"
    if size:
        check_fits(output_dir, size, frames, ctx.min_free_bytes, known_from)


def _snapshot(source: Path, data_type: BlenderDataType, blend: str | None, ctx: SubmitContext,
              allow_missing: bool) -> Snapshot:  # fmt: skip
    """The .blend and every file it needs, from the submitter's disk (as that user, inside the
    source roots) or from their upload (inside its folder only); a zip is traced inside."""
    roots, reader, unpacked = ctx.source_roots, ctx.reader, None
    if ctx.upload is not None and source.is_relative_to(ctx.upload):  # through init_new_task
        if not source.is_file():
            raise SnapshotError(f"nothing was uploaded to {source}")
        roots = (ctx.upload,)  # its own folder only; read as its uploader
    elif not source.is_file():
        raise SnapshotError(f"source {source} does not exist or is not a file")
    if data_type is BlenderDataType.MULTI_FILE:
        if not blend:
            raise InvalidRenderRequest("a MultiFile (zip) render needs `blend`: the .blend inside")
        unpacked = ctx.spool / "project"
        source = _unpack(source, blend, ctx, SubmitterAccess(roots, reader, ctx.spool / "traced"))
        roots, reader = (unpacked,), None
    store = ContentStore(ctx.store or DataDir(ctx.spool.parent.parent).store)
    access = SubmitterAccess(roots, reader, ctx.spool / "traced")
    try:
        return take_snapshot(source, ctx.spool, store, access, allow_missing,
                             ctx.max_snapshot_bytes)  # fmt: skip
    except BlendFileError as exc:
        raise InvalidRenderRequest(f"cannot render {source}: {exc.message}") from None
    finally:
        if unpacked is not None:  # its files are in the snapshot now
            shutil.rmtree(unpacked, ignore_errors=True)


def _unpack(zipped: Path, blend: str, ctx: SubmitContext, access: SubmitterAccess) -> Path:
    """Unpack a zipped project read through one handle, checked for the submitter."""
    try:
        fd = access.open(str(zipped))
    except OSError as exc:
        raise SnapshotError(f"cannot read {zipped}: {exc.strerror or exc}") from None
    room = shutil.disk_usage(ctx.spool.parent).free - ctx.min_free_bytes
    with os.fdopen(fd, "rb") as handle:
        return snapshot_project(handle, zipped, blend, ctx.spool, max(0, room))


def _check_writable(folder: Path, owner: int | None) -> None:
    """Make the folder and write a probe file in it, for the daemon's own renders. For another
    user's (`owner`), `writable_by` has checked it as them, and nothing is made by path here:
    the render makes it through a handle, theirs (a path made and then chowned could be swapped
    for a link in between)."""
    if owner is not None and owner != 0:
        return
    try:
        make_dirs(folder)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pi-render-probe-"):
            pass
    except OSError as exc:
        raise InvalidRenderRequest(
            f"output dir {folder} is not writable: {exc.strerror or exc}"
        ) from None
