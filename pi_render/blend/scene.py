"""What a .blend will render: its version, its scenes, and the current scene's render settings.

Field names follow Blender's Python API (`render.resolution_x`, `image_settings.file_format`…).
"""

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from pi_render.blend.blocks import Block
from pi_render.blend.errors import (
    BlendFileError,
    CorruptBlendFile,
    UnsupportedBlendFile,
    guarded,
)
from pi_render.blend.file import BlendFile, open_blend
from pi_render.blend.header import blender_version
from pi_render.blend.idprops import scene_int_property

SCENE = b"SC\0\0"
R_EXTENSION = 1 << 4

# R_IMF_IMTYPE_* (DNA_scene_types.h) → Blender's identifiers
FILE_FORMATS = {
    0: "TARGA", 1: "IRIS", 4: "JPEG", 7: "IRIZ", 14: "TARGA_RAW", 15: "AVI_RAW", 16: "AVI_JPEG",
    17: "PNG", 20: "BMP", 21: "HDR", 22: "TIFF", 23: "OPEN_EXR", 24: "FFMPEG", 26: "CINEON",
    27: "DPX", 28: "OPEN_EXR_MULTILAYER", 29: "DDS", 30: "JPEG2000", 31: "H264", 32: "XVID",
    33: "THEORA", 34: "PSD", 35: "WEBP", 36: "AV1", 37: "AVIF",
}  # fmt: skip
COLOR_MODES = {8: "BW", 24: "RGB", 32: "RGBA"}
COLOR_DEPTHS = {1: "1", 2: "8", 4: "10", 8: "12", 16: "16", 32: "24", 64: "32"}


class SceneInfo(BaseModel):
    """The render settings of one scene."""

    name: str
    frame_start: int
    frame_end: int
    frame_step: int
    frame_current: int
    resolution_x: int
    resolution_y: int
    resolution_percentage: int
    fps: int
    fps_base: float
    engine: str
    file_format: str
    color_mode: str
    color_depth: str
    output_path: str  # as Blender on this OS reads it (a Windows file's `\` become `/`)
    output_path_resolved: str
    output_path_stored: str  # the bytes the file holds, unchanged
    use_file_extension: bool
    camera: str | None
    cycles_samples: int | None


class BlendInfo(BaseModel):
    """Everything `pi-render inspect` reports about a file."""

    path: str
    compression: Literal["none", "gzip", "zstd"]
    file_version: int
    file_subversion: int
    blender_version: str
    pointer_size: int
    endian: Literal["little", "big"]
    scenes: list[str]
    scene: SceneInfo


def _scene_of_window(blend: BlendFile) -> Block | None:
    """The first window's scene: `wmWindow.scene` (2.80+), else `wmWindow.screen.scene`."""
    wm = next(blend.blocks.with_code(b"WM\0\0"), None)
    if wm is None or not blend.has_field("wmWindowManager", "windows"):
        return None
    window = blend.deref(blend.get(wm, "windows.first", "wmWindowManager"))
    if window is None:
        return None
    if blend.has_field("wmWindow", "scene"):
        return blend.deref(blend.get(window, "scene", "wmWindow"))
    if blend.has_field("wmWindow", "screen") and blend.has_field("bScreen", "scene"):
        screen = blend.deref(blend.get(window, "screen", "wmWindow"))
        return blend.deref(blend.get(screen, "scene", "bScreen")) if screen else None
    return None


def current_scene_block(blend: BlendFile) -> Block:
    """`FileGlobal.curscene`, else the window's scene, else the first scene.

    Raises:
        UnsupportedBlendFile: the file has no scene at all.
    """
    glob = next(blend.blocks.with_code(b"GLOB"), None)
    candidates: list[Callable[[], Block | None]] = []
    if glob is not None and blend.has_field("FileGlobal", "curscene"):
        candidates.append(lambda: blend.deref(blend.get(glob, "curscene", "FileGlobal")))
    candidates.append(lambda: _scene_of_window(blend))
    candidates.append(lambda: next(blend.blocks.with_code(SCENE), None))
    for candidate in candidates:
        block = candidate()
        if block is not None and block.code == SCENE:
            return block
    raise UnsupportedBlendFile("the file has no scene", blend.path)


WINDOWS_DRIVE = re.compile(r"^([A-Za-z]):[\\/]")


def native_path(stored: str) -> str:
    """A path as Blender on this (POSIX) OS reads it: a file saved on Windows holds
    `//render\\frame_####` or `C:\\out\\`, which Blender reads as `//render/frame_####` and
    `/c/out/` (its BLI_path_abs: the drive becomes a folder, backslashes become slashes)."""
    drive = WINDOWS_DRIVE.match(stored)
    if drive:
        stored = f"/{drive.group(1).lower()}/{stored[3:]}"
    return stored.replace("\\", "/")


def _resolve_output(output: str, blend_path: Path) -> str:
    folder = blend_path.resolve().parent
    if output.startswith("//"):
        return os.path.normpath(folder / output[2:]) + ("/" if output.endswith("/") else "")
    return output if os.path.isabs(output) else os.path.normpath(folder / output)


def read_scene(blend: BlendFile, scene: Block) -> SceneInfo:
    def r(path: str) -> Any:
        return blend.get(scene, f"r.{path}", "Scene")

    camera = blend.deref(blend.get(scene, "camera", "Scene"))
    imtype = int(r("im_format.imtype"))
    stored = str(r("pic"))
    output = native_path(stored)
    return SceneInfo(
        name=blend.id_name(scene),
        frame_start=r("sfra"),
        frame_end=r("efra"),
        frame_step=r("frame_step"),
        frame_current=r("cfra"),
        resolution_x=r("xsch"),
        resolution_y=r("ysch"),
        resolution_percentage=r("size"),
        fps=r("frs_sec"),
        fps_base=round(float(r("frs_sec_base")), 6),
        engine=r("engine") if blend.has_field("Scene", "r.engine") else "BLENDER_RENDER",
        file_format=FILE_FORMATS.get(imtype, f"UNKNOWN_{imtype}"),
        color_mode=COLOR_MODES.get(r("im_format.planes"), "RGB"),
        color_depth=COLOR_DEPTHS.get(r("im_format.depth"), "8"),
        output_path=output,
        output_path_resolved=_resolve_output(output, blend.path),
        output_path_stored=stored,
        use_file_extension=bool(r("scemode") & R_EXTENSION),
        camera=blend.id_name(camera) if camera is not None and camera.id_code == b"OB" else None,
        cycles_samples=scene_int_property(blend, scene, "cycles", "samples"),
    )


def read_current_scene(blend: BlendFile) -> SceneInfo:
    blend.sdna  # noqa: B018  (raises TruncatedBlendFile when the catalogue is missing)
    return guarded(blend.path, lambda: read_scene(blend, current_scene_block(blend)))


def _subversion(blend: BlendFile) -> int:
    glob = next(blend.blocks.with_code(b"GLOB"), None)
    if glob is None or not blend.has_field("FileGlobal", "subversion"):
        return 0
    return int(blend.get(glob, "subversion", "FileGlobal"))


def scene_block_named(blend: BlendFile, name: str) -> Block:
    for block in blend.blocks.with_code(SCENE):
        if blend.id_name(block) == name:
            return block
    scenes = ", ".join(blend.id_name(b) for b in blend.blocks.with_code(SCENE))
    raise BlendFileError(f"no scene named {name!r} (scenes: {scenes})", blend.path)


def read_blend_info(path: str | Path, scene: str | None = None,
                    shown_as: str | Path | None = None) -> BlendInfo:  # fmt: skip
    """Read a .blend's version and the render settings of its current scene (or of `scene`).
    `shown_as`: the name its user knows a copy by (reports and `//` outputs use it).

    Raises:
        BlendFileError (a subclass for each kind of problem), and nothing else.
    """
    copy = Path(path)
    path = Path(shown_as) if shown_as is not None else copy
    try:
        with open_blend(copy, shown_as) as blend:

            def build() -> BlendInfo:
                blend.sdna  # noqa: B018  (a file without its catalogue is truncated: say so first)
                h = blend.header
                return BlendInfo(
                    path=str(path),
                    compression=blend.compression,
                    file_version=h.file_version,
                    file_subversion=_subversion(blend),
                    blender_version=blender_version(h.file_version),
                    pointer_size=h.pointer_size,
                    endian=h.endian,
                    scenes=[blend.id_name(b) for b in blend.blocks.with_code(SCENE)],
                    scene=read_scene(
                        blend,
                        scene_block_named(blend, scene) if scene else current_scene_block(blend),
                    ),
                )

            return guarded(path, build)
    except BlendFileError:
        raise
    except (MemoryError, RecursionError) as exc:  # pragma: no cover - defensive
        raise CorruptBlendFile(f"cannot be read ({type(exc).__name__})", path, 0) from None
