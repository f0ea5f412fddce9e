"""At submit: will a render's frames fit on its output disk? Known once a frame of the same file
has been rendered before (FrameSizes keeps its size) or, when the submitter asks
(`--check-space`), from a trial frame rendered now."""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pi_render.errors import PiRenderError


class OutputWontFit(PiRenderError):
    """Raised at submit when a render's frames cannot fit on its output disk."""

    http_status = 507
    retryable = False


@dataclass(frozen=True)
class TrialFrame:
    """One frame to render now, only to learn its size (`--check-space`)."""

    task_id: str
    blend: Path  # the snapshot's
    scene: str
    frame: int
    engine: str | None
    file_format: str | None
    blend_version: str | None
    uid: int | None  # who asked (one trial at a time each)


FrameSize = Callable[[str], "int | None"]  # a frame key → bytes a frame took before
TrialRender = Callable[[TrialFrame], int]  # renders the trial frame; its bytes


def free_bytes(folder: Path) -> tuple[int, int]:
    """(free bytes, block size) of the disk `folder` is or will be on (its nearest existing
    parent); health shows the first."""
    for candidate in (folder, *folder.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize, st.f_frsize
    return shutil.disk_usage("/").free, 4096


def on_disk(size: int, block: int) -> int:
    """What a file of `size` bytes takes on a disk of `block`-sized blocks (one at least)."""
    return max(1, -(-size // block)) * block


def check_fits(output_dir: Path, bytes_per_frame: int, frames: int, reserve: int,
               known_from: str) -> None:  # fmt: skip
    """Raises OutputWontFit when `frames` of `bytes_per_frame` (rounded up to the disk's blocks),
    plus `reserve` (min_free_bytes), exceed the free space where they will go."""
    free, block = free_bytes(output_dir)
    per_frame = on_disk(bytes_per_frame, block)
    needed = per_frame * frames + reserve
    if needed > free:
        raise OutputWontFit(
            f"this render cannot fit on its output disk: {frames} frame(s) of ~{bytes_per_frame} "
            f"bytes ({known_from}) plus min_free_bytes ({reserve}) need {needed} bytes, and "
            f"{output_dir} has {free} free: free space there, render fewer frames, or choose "
            "another output folder; nothing was submitted"
        )
