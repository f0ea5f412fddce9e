"""Frames and their thumbnails, served only from inside the task's own output folder: the
folder is walked down with no link at any step, and the frame opened as a regular file with
O_NOFOLLOW, then checked again through the handle. A thumbnail (a JPEG at most 320 px wide) is
made once per frame and kept by (path, size, mtime): PNG, JPEG, TIFF, WebP with Pillow,
OpenEXR with the OpenEXR wheel, and a video's first frame with ffmpeg (a poster)."""

import io
import os
import stat
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

WIDTH = 320
MAX_PIXELS = 64_000_000  # 8K × 8K fits; beyond, a thumbnail costs too much memory to make
MAX_FRAME_BYTES = 512 << 20  # a bigger "frame" is not something to open in a web process


class FrameRefused(Exception):
    """Raised when a frame's path is outside its task's output folder, or not a plain file."""


def open_frame(output_dir: str, frame_path: str) -> tuple[int, os.stat_result]:
    """An fd of the frame, directly inside `output_dir`: the folder is walked down from `/` one
    part at a time, none of them a link (as the daemon made it: processor/outputs.py), then the
    frame is opened by name relative to that handle, with O_NOFOLLOW, and checked through its
    own handle: a plain file, of a sensible size, with no other name (a hard link to a file
    the dashboard's user may read and its submitter may not). Raises FrameRefused."""
    folder = os.path.normpath(output_dir)
    target = os.path.normpath(frame_path) if frame_path else ""
    name = os.path.basename(target)
    if not os.path.isabs(folder) or os.path.dirname(target) != folder or name in ("", ".", ".."):
        raise FrameRefused("a frame must be directly in its task's output folder")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    folder_fd = _walk_down(folder, flags | os.O_DIRECTORY)
    try:
        fd = os.open(name, flags | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError as exc:
        raise FrameRefused(f"cannot open the frame: {exc.strerror}") from None
    finally:
        os.close(folder_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FRAME_BYTES or info.st_nlink != 1:
        os.close(fd)
        raise FrameRefused("not a plain file of a sensible size, with one name")
    return fd, info


def _walk_down(folder: str, flags: int) -> int:
    fd = os.open("/", flags)
    for part in folder.split("/")[1:]:
        if not part:
            continue
        try:
            step = os.open(part, flags, dir_fd=fd)
        except OSError as exc:
            raise FrameRefused(f"cannot open the output folder: {exc.strerror}") from None
        finally:
            os.close(fd)
        fd = step
    return fd


def warm_up() -> None:
    """Load Pillow's plugins and JPEG encoder now (in the background at start): done on the
    first thumbnail instead, they cost it half a second, past the 1 s a landed frame has to
    show in the browser."""
    from PIL import Image

    Image.init()
    Image.new("RGB", (8, 8)).save(io.BytesIO(), "JPEG")


class Thumbnails:
    def __init__(self, keep: int = 2000) -> None:
        self._cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()
        self._decoding = threading.BoundedSemaphore(2)

    def thumbnail(self, output_dir: str, frame_path: str) -> bytes:
        """A small JPEG of the frame. Raises FrameRefused."""
        fd, info = open_frame(output_dir, frame_path)
        key = (frame_path, info.st_size, info.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            os.close(fd)
            return cached
        suffix = Path(frame_path).suffix.lower()
        with self._decoding:  # a few at once: each decode may take hundreds of MB
            if suffix in DEMUXERS:
                made = _poster(fd, suffix)
            elif suffix == ".exr":
                try:
                    made = _exr_jpeg(fd)
                finally:
                    os.close(fd)
            else:
                with os.fdopen(fd, "rb") as handle:
                    made = _jpeg(handle)
        with self._lock:
            self._cache[key] = made
            if len(self._cache) > self._keep:
                self._cache.popitem(last=False)
        return made


def _exr_jpeg(fd: int) -> bytes:
    """An OpenEXR frame (linear, HDR) as a thumbnail: its RGB(A) layer (or the first channel),
    clipped and encoded for sRGB. The film look an artist set in Blender (Filmic, AgX) is not
    applied: highlights read brighter than in Blender's viewer."""
    import numpy as np
    import OpenEXR  # type: ignore[import-not-found]
    from PIL import Image

    try:
        with OpenEXR.File(f"/dev/fd/{fd}") as exr:  # the handle that was checked
            low, high = exr.header()["dataWindow"]
            if (high[0] - low[0] + 1) * (high[1] - low[1] + 1) > MAX_PIXELS:
                raise FrameRefused("the frame has too many pixels to make a thumbnail of")
            channels = exr.channels()
            name = next((n for n in channels if n.endswith(("RGBA", "RGB"))), next(iter(channels)))
            pixels = np.asarray(channels[name].pixels, dtype=np.float32)
    except FrameRefused:
        raise
    except Exception as exc:  # the reader's many errors: not an EXR it reads
        raise FrameRefused(f"not an EXR this dashboard can show: {exc}") from None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    rgb = np.clip(np.nan_to_num(pixels[..., :3]), 0.0, 1.0)
    srgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    image = Image.fromarray((srgb * 255 + 0.5).astype(np.uint8), "RGB")
    image.thumbnail((WIDTH, 4 * WIDTH))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


DEMUXERS = {".mp4": "mov", ".mov": "mov", ".mkv": "matroska", ".webm": "matroska", ".avi": "avi"}


def _poster(fd: int, suffix: str) -> bytes:
    """A video's first frame, by ffmpeg reading the handle that was checked, with the demuxer
    its name says (not one guessed from its bytes: an HLS playlist named .mp4 would read other
    files) and no protocol but the file."""
    try:
        made = subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-protocol_whitelist",
                "file,fd",
                "-f",
                DEMUXERS[suffix],
                "-i",
                f"/dev/fd/{fd}",
                "-frames:v",
                "1",
                "-vf",
                f"scale='min({WIDTH},iw)':-2",
                "-f",
                "image2pipe",
                "-vcodec",
                "mjpeg",
                "-",
            ],
            capture_output=True,
            timeout=30,
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FrameRefused(f"no poster frame: {exc}") from None
    finally:
        os.close(fd)
    if made.returncode != 0 or not made.stdout.startswith(b"\xff\xd8"):
        raise FrameRefused(f"no poster frame: {made.stderr.decode(errors='replace')[-200:]}")
    return made.stdout


def _jpeg(handle: BinaryIO) -> bytes:
    """A JPEG that fits in WIDTH × 4·WIDTH (never bigger than the frame). An image of more than
    MAX_PIXELS is refused from its header, before it is decoded (a decompression bomb)."""
    from PIL import Image  # the web extra's; imported when a thumbnail is first asked for

    try:
        with Image.open(handle) as image:
            if image.width * image.height > MAX_PIXELS:
                raise FrameRefused(f"the frame is {image.width}×{image.height}: too many "
                                   "pixels to make a thumbnail of")  # fmt: skip
            image.draft("RGB", (WIDTH, WIDTH))
            image.thumbnail((WIDTH, 4 * WIDTH))
            frame = image.convert("RGB")
    except FrameRefused:
        raise
    except Exception as exc:  # Pillow's many errors: the file is not an image it reads
        raise FrameRefused(f"not an image this dashboard can show: {exc}") from None
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=80)
    return out.getvalue()
