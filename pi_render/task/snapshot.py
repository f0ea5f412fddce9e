"""Snapshot at submit: the .blend (or a zipped project) is copied into the task's spool folder,
so editing or deleting the source afterwards changes nothing."""

import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pi_render.errors import PiRenderError

MAX_PROJECT_BYTES = 20 << 30  # a zip that unpacks to more than this is refused
MAX_PROJECT_FILES = 10_000  # as many as a traced project may need
MAX_RATIO, RATIO_FLOOR = 200, 64 << 20  # unpacked / packed: past both, it is a zip bomb


class SnapshotError(PiRenderError):
    """Raised when the source cannot be snapshotted: missing, unreadable, or an unsafe zip."""

    http_status = 422


def snapshot_project(zipped: BinaryIO, source: Path, blend: str, spool: Path,
                     room: int) -> Path:  # fmt: skip
    """Unpack a zipped project (read from the handle `zipped`, which `source` names) into the
    spool; returns the path of its `blend` inside.

    Refuses members that would land outside the folder (absolute paths, `..`, symlinks), and zips
    that claim more than MAX_PROJECT_FILES entries, or more bytes than MAX_PROJECT_BYTES, than
    `room` (the data disk's free space to spare) or than MAX_RATIO times their own size.
    """
    root = spool / "project"
    packed = os.fstat(zipped.fileno()).st_size
    try:
        with zipfile.ZipFile(zipped) as archive:
            members = archive.infolist()
            if len(members) > MAX_PROJECT_FILES:
                raise SnapshotError(f"{source} has more than {MAX_PROJECT_FILES} entries")
            claimed = sum(m.file_size for m in members)
            limit = min(MAX_PROJECT_BYTES, room, max(RATIO_FLOOR, MAX_RATIO * packed))
            if claimed > limit:
                raise SnapshotError(f"{source} unpacks to {claimed:,} bytes, more than the "
                                    f"{limit:,} it may (the project limit, the data disk's free "
                                    f"space, or {MAX_RATIO}× its size: a zip bomb?)")  # fmt: skip
            for member in members:
                target = _safe_target(root, member, source)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except SnapshotError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError,
            ValueError) as exc:  # fmt: skip
        # corrupt, encrypted, or packed with a method Python cannot unpack
        shutil.rmtree(root, ignore_errors=True)
        raise SnapshotError(f"{source} cannot be unpacked: {exc}") from None
    except OSError as exc:
        raise SnapshotError(f"cannot unpack {source}: {exc.strerror or exc}") from None
    inner = _safe_relative(blend, source)
    path = root / inner
    if not path.is_file():
        raise SnapshotError(f"{source} has no {blend!r} (name it with --blend, e.g. shots/a.blend)")
    return path


def _safe_relative(name: str, source: Path) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise SnapshotError(f"{source}: unsafe path {name!r} (absolute or with '..')")
    return Path(*pure.parts)


def _safe_target(root: Path, member: zipfile.ZipInfo, source: Path) -> Path:
    mode = member.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise SnapshotError(f"{source}: {member.filename!r} is a symlink; links are refused")
    return root / _safe_relative(member.filename, source)
