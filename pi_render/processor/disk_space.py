"""Will the rest of a render fit on its output disk? Before each frame is placed and after it, the
frames left × the average space a frame took, plus `min_free_bytes`, is set against the disk's
free space. When it will not fit, the render holds (Blender stopped, the record paused with the
reason) before the disk fills, and goes on by itself when there is room again."""

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from pi_render.cache_file import read_json, write_json
from pi_render.errors import PiRenderError
from pi_render.processor.context import TaskContext
from pi_render.task.output_space import on_disk

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often a held render looks at the disk again
KEY = re.compile(r"[0-9a-f]{64}")  # a frame key (sha256): the only names FrameSizes makes


class OutputDiskFull(PiRenderError):
    """Raised when a render's output disk stayed too full to finish it for max_pause_s (it
    held its worker that long); free space on it, then retry the task."""


class OutputDiskTooSmall(OutputDiskFull):
    """Raised when a frame, or (three frames agreeing) the rest of a render, needs more than its
    output disk holds even empty: no wait can help."""

    retryable = False


class Space(NamedTuple):
    free: int  # bytes free to an unprivileged writer
    block: int
    total: int  # the whole disk's bytes


def space_on(fd: int) -> Space:
    """The file system holding `fd`."""
    st = os.fstatvfs(fd)
    return Space(st.f_bavail * st.f_frsize, st.f_frsize, st.f_blocks * st.f_frsize)


class SpaceGuard:
    """One render's look at its output disk (through the folder's handle, as its frames are
    placed); `sizes` are what the frames it placed take there."""

    def __init__(self, ctx: TaskContext, fd: int, where: Path, reserve: int, max_hold_s: float,
                 free: Callable[[int], Space] = space_on) -> None:  # fmt: skip
        self.ctx, self.fd, self.where, self.reserve = ctx, fd, where, reserve
        self.max_hold_s, self.free = max_hold_s, free
        self.sizes: list[int] = []

    def expect(self, bytes_per_frame: int | None, frames: int) -> None:
        """Before Blender starts: hold while `frames` of the size an earlier render of this
        file made would not fit (unknown: nothing to project yet)."""
        space = self.free(self.fd)
        needed = on_disk(bytes_per_frame or 0, space.block) * frames + self.reserve
        if bytes_per_frame and needed <= space.total:  # more than the disk: the run will tell
            self._until(needed, f"{frames} frame(s) of ~{bytes_per_frame} bytes, as an earlier "
                        "render of this file made them")  # fmt: skip

    def before(self, size: int) -> None:
        """Before a frame of `size` bytes is placed: it must fit, with `min_free_bytes` left."""
        space = self.free(self.fd)
        needed = on_disk(size, space.block) + self.reserve
        if needed > space.total:
            raise OutputDiskTooSmall(f"a frame of {size} bytes (plus min_free_bytes "
                                     f"{self.reserve}) is more than {self.where}'s whole disk "
                                     f"holds ({space.total})")  # fmt: skip
        self._until(needed, f"its next frame ({size} bytes)")

    def after(self, size: int, left: int) -> None:
        """A frame of `size` bytes was placed; `left` more are to come: will they fit?"""
        space = self.free(self.fd)
        self.sizes.append(on_disk(size, space.block))
        if left <= 0:
            return
        average, smallest = sum(self.sizes) // len(self.sizes), min(self.sizes)
        if smallest * left + self.reserve > space.total:  # even at the smallest frame's size
            if len(self.sizes) >= 3:  # three frames agree: no wait can make it fit
                raise OutputDiskTooSmall(
                    f"the {left} frame(s) left need at least {smallest * left} bytes (at "
                    f"~{smallest} each, the smallest so far) plus min_free_bytes, more than "
                    f"{self.where}'s whole disk holds ({space.total}): render fewer frames at "
                    "a time, or to a larger disk")  # fmt: skip
            return  # too soon to tell (a title frame may be large): each frame still must fit
        if average * left + self.reserve <= space.total:
            self._until(average * left + self.reserve,
                        f"{left} frame(s) left at ~{average} bytes each")  # fmt: skip
        else:  # large frames first: project from the smallest
            self._until(smallest * left + self.reserve,
                        f"{left} frame(s) left at ~{smallest} bytes each")  # fmt: skip

    def average(self) -> int | None:
        return sum(self.sizes) // len(self.sizes) if self.sizes else None

    def _until(self, needed: int, what: str) -> None:
        """Return at once when `needed` bytes are free; else hold until they are.

        Raises:
            TaskStopped: cancelled or shut down while held.
            OutputDiskFull: still too full after max_pause_s.
        """
        free = self.free(self.fd).free
        if free >= needed:
            return
        state = (f"output disk full: {self.where} has {free} bytes free and the rest of this "
                 f"render needs {needed} ({what}, plus min_free_bytes {self.reserve})")  # fmt: skip
        reason = f"{state}; it goes on by itself once there is room"
        clock = self.ctx.clock
        since = clock.monotonic()
        self.ctx.hold(reason)  # Blender stops (SIGSTOP) before it writes more
        try:
            while free < needed:
                if clock.monotonic() - since > self.max_hold_s:
                    raise OutputDiskFull(f"{state}; still so after max_pause_s "
                                         f"({self.max_hold_s:g}s)")  # fmt: skip
                self.ctx.sleep(POLL_S)  # a cancel or a shutdown ends the wait at once
                free = self.free(self.fd).free
        finally:
            self.ctx.hold(None)  # it goes on, unless a person paused it meanwhile


class FrameSizes:
    """The bytes a frame of each file took (by `frame_key`): what a submit projects a render's
    disk use from. A cache, one small file per key (farm mode: on the shared folder, for every
    host): a lost or torn one only means no estimate."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get(self, key: str) -> int | None:
        if not KEY.fullmatch(key):
            return None
        try:
            size = read_json(self.folder / f"{key}.json", 4096)["bytes_per_frame"]
        except (KeyError, TypeError):  # missing, torn or not ours
            return None
        return size if isinstance(size, int) and size > 0 else None

    def prune(self, older_than: float) -> None:
        """Forget sizes not renewed since `older_than` (a time stamp): retention runs it."""
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_mtime < older_than:
                    os.unlink(entry.path)
            except OSError:
                continue

    def put(self, key: str, bytes_per_frame: int) -> None:
        if not KEY.fullmatch(key):
            return
        try:
            write_json(self.folder / f"{key}.json", {"bytes_per_frame": bytes_per_frame})
        except OSError as exc:
            log.warning("could not keep a frame size (%s): %s", key, exc)
