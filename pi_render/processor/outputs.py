"""Output frames: checked (exists, non-empty, a valid image header) and only then moved, atomically,
into the output folder."""

import errno
import hashlib
import os
import re
import shutil
import stat
import struct
from pathlib import Path

from pi_render.errors import PiRenderError
from pi_render.manifest.frames import FrameOutput

FRAME_NAME = re.compile(r"frame_(-?\d+)\.")

# magic bytes at the start of each format Blender writes (TGA has none: checked by its header)
MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"\x76\x2f\x31\x01": "OPEN_EXR",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"BM": "BMP", b"#?RADIANCE": "HDR", b"#?RGBE": "HDR",
    b"\x01\xda": "IRIS", b"SDPX": "DPX", b"XPDS": "DPX", b"\x80\x2a\x5f\xd7": "CINEON",
    b"DDS ": "DDS", b"\x00\x00\x00\x0cjP  ": "JP2", b"\xff\x4f\xff\x51": "JP2",
}  # fmt: skip
FRAME_MODE, FOLDER_MODE = 0o644, 0o755  # what a submitter needs of frames and folders made for them
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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidOutput(f"{path.name} is not a regular file")
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


class OutputFolder:
    """The output folder as one handle, opened at render start one component at a time without
    following a link: a folder swapped for a symlink after submit is refused, not followed, and
    every frame lands in the folder that was opened. Frames belong to `owner` (a uid)."""

    def __init__(self, path: Path, owner: int | None = None) -> None:
        self.path, self.owner = path, owner
        self.fd = _walk_down(path, owner if os.geteuid() == 0 else None)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _walk_down(path: Path, owner: int | None) -> int:
    """A handle on `path` (made where missing, and then `owner`'s), each step `O_NOFOLLOW`.

    Raises:
        UnwritableOutput: a step is a link or not a folder, or cannot be made.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        parts = path.parts[1:]
        for index, part in enumerate(parts):
            try:
                step = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o700, dir_fd=fd)
                os.fsync(fd)  # the new entry survives a power cut
                step = os.open(part, flags, dir_fd=fd)
                theirs = owner is not None and index == len(parts) - 1
                # whatever the umask (the unit's is 0077): the folders on the way stay the
                # daemon's (a shared `output` folder must not become the first submitter's);
                # the last is theirs alone, or readable where the daemon cannot give it to them
                os.fchmod(step, 0o700 if theirs else FOLDER_MODE)
                if theirs and owner is not None:
                    os.fchown(step, owner, -1)
            os.close(fd)
            fd = step
    except OSError as exc:
        os.close(fd)
        why = "a link or not a folder" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else (
            exc.strerror or str(exc))  # fmt: skip
        raise UnwritableOutput(f"output folder {path}: {why} (it was checked at submit)") from None
    return fd


def place(path: Path, folder: OutputFolder, frame: int) -> FrameOutput:
    """Validate `path`, then move it into `folder` atomically (copy + fsync + rename across
    file systems), owned by the folder's owner; returns its ledger entry."""
    check_image(path)
    size, checksum = path.stat().st_size, sha256_of(path)
    _readable(path)
    name, fd = path.name, folder.fd
    try:
        try:
            os.replace(path, name, dst_dir_fd=fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_across(path, fd, name)  # another file system: copy beside it, then rename
        if folder.owner is not None and os.geteuid() == 0:
            os.chown(name, folder.owner, -1, dir_fd=fd, follow_symlinks=False)
        os.fsync(fd)
    except OSError as exc:
        raise UnwritableOutput(
            f"cannot place {path.name} in {folder.path}: {exc.strerror or exc}"
        ) from None
    return FrameOutput(frame=frame, path=str(folder.path / name), size=size, sha256=checksum)


def _readable(path: Path) -> None:
    """Give a frame FRAME_MODE, through a handle (no link followed), whatever the umask Blender
    wrote it under: the submitter reads it even where the daemon cannot make it theirs. Its
    bytes are fsynced too: Blender does not, and the ledger is about to vouch for them."""
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.fchmod(handle, FRAME_MODE)
        os.fsync(handle)
    finally:
        os.close(handle)


def _copy_across(path: Path, fd: int, name: str) -> None:
    """Copy, fsync, rename; a copy cut short (a full disk) leaves no partial file behind."""
    temp = f".{name}.partial"
    try:
        try:
            os.unlink(temp, dir_fd=fd)  # whatever is there (a planted link) goes first
        except FileNotFoundError:
            pass
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      FRAME_MODE, dir_fd=fd)  # fmt: skip
        os.fchmod(out, FRAME_MODE)
        with open(path, "rb") as source, os.fdopen(out, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError:
        try:
            os.unlink(temp, dir_fd=fd)
        except OSError:
            pass
        raise
    path.unlink()


def still_there(output: FrameOutput) -> bool:
    """A ledger entry counts only while its file is still there with the recorded size."""
    try:
        return os.stat(output.path).st_size == output.size
    except OSError:
        return False
