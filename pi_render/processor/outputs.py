"""Output frames: checked (exists, non-empty, a valid image header) and only then moved, atomically,
into the output folder."""

import hashlib
import os
import re
import shutil
import struct
from pathlib import Path

from pi_render.errors import PiRenderError
from pi_render.fsync import fsync_path
from pi_render.manifest.frames import FrameOutput

FRAME_NAME = re.compile(r"frame_(-?\d+)\.")

# magic bytes at the start of each format Blender writes (TGA has none: checked by its header)
MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"\x76\x2f\x31\x01": "OPEN_EXR",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"BM": "BMP", b"#?RADIANCE": "HDR", b"#?RGBE": "HDR",
    b"\x01\xda": "IRIS", b"SDPX": "DPX", b"XPDS": "DPX", b"\x80\x2a\x5f\xd7": "CINEON",
    b"DDS ": "DDS", b"\x00\x00\x00\x0cjP  ": "JP2", b"\xff\x4f\xff\x51": "JP2",
}  # fmt: skip
VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")


class InvalidOutput(PiRenderError):
    """Raised when Blender's output file is missing, empty or not the image it claims to be."""


class UnwritableOutput(PiRenderError):
    """Raised when a frame cannot be placed in the output folder."""


def frame_number(path: Path) -> int | None:
    match = FRAME_NAME.match(path.name)
    return int(match.group(1)) if match else None


def check_image(path: Path) -> tuple[int, int] | None:
    """Raise InvalidOutput unless `path` is a plausible image; PNG's size is returned."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
    except OSError as exc:
        raise InvalidOutput(f"{path.name}: cannot read ({exc.strerror})") from None
    if not head:
        raise InvalidOutput(f"{path.name} is empty")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if head[12:16] != b"IHDR":
            raise InvalidOutput(f"{path.name}: PNG without its IHDR header")
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if any(head.startswith(magic) for magic in MAGIC):
        return None
    if head[4:8] == b"ftyp" or head.startswith(VIDEO_MAGIC) or head[8:12] == b"WEBP":
        return None
    if path.suffix.lower() == ".tga" and len(head) >= 18 and head[2] in (1, 2, 3, 9, 10, 11):
        return None
    raise InvalidOutput(f"{path.name}: not a recognised image (starts {head[:8]!r})")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def place(path: Path, output_dir: Path, frame: int) -> FrameOutput:
    """Validate `path`, then move it into `output_dir` atomically (copy + fsync + rename across
    file systems); returns its ledger entry."""
    check_image(path)
    size, checksum = path.stat().st_size, sha256_of(path)
    target = output_dir / path.name
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:  # another file system: copy beside the target, then rename
            _copy_across(path, output_dir / f".{path.name}.partial", target)
        fsync_path(output_dir)
    except OSError as exc:
        raise UnwritableOutput(
            f"cannot place {path.name} in {output_dir}: {exc.strerror or exc}"
        ) from None
    return FrameOutput(frame=frame, path=str(target), size=size, sha256=checksum)


def _copy_across(path: Path, temp: Path, target: Path) -> None:
    """Copy, fsync, rename; a copy cut short (a full disk) leaves no partial file behind."""
    try:
        shutil.copyfile(path, temp)
        fsync_path(temp)
        os.replace(temp, target)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    path.unlink()


def still_there(output: FrameOutput) -> bool:
    """A ledger entry counts only while its file is still there with the recorded size."""
    try:
        return os.stat(output.path).st_size == output.size
    except OSError:
        return False
