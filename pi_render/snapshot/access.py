"""Reading a project's files for the user who submitted it: inside the allowed roots, readable
by that user, regular files only, and the file checked is the file read (one handle).

A path is resolved and checked, then opened without following a last symlink, and the open
handle's own path (`/proc/self/fd`) must still be the one that was checked: a file or folder
swapped for a symlink between the check and the open is caught, not followed.
"""

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pi_render.blend.errors import BlendFileError
from pi_render.paths import readable_by

MAX_FILE_BYTES = 20 << 30


class SwappedFile(OSError):
    """Raised when a path led somewhere else by the time it was opened."""


@dataclass
class SubmitterAccess:
    """The tracer's view of the disk for one submit: `roots` confine, `reader` must be able to
    read (None: the daemon's own files, such as an unpacked upload)."""

    roots: tuple[Path, ...]
    reader: tuple[int, frozenset[int]] | None
    blends: dict[str, bytes] = field(default_factory=dict)  # what read_blend returned, by path

    def refuse(self, path: str) -> str | None:
        """Why `path` may not be used, in an order that tells the user nothing about folders they
        cannot search: their reach first, then the roots, then whether it is there at all."""
        if self.reader is not None and not _searchable(path, *self.reader):
            return f"not readable by uid {self.reader[0]}"
        real = Path(os.path.realpath(path))
        if not any(real == root or real.is_relative_to(root) for root in self._real_roots()):
            where = "" if str(real) == path else f" (it leads to {real})"
            return f"outside the allowed roots{where}"
        if not os.path.lexists(real):
            return None  # reported as missing; nothing is read
        if self.reader is not None and not readable_by(real, self.reader[0], set(self.reader[1])):
            return f"not readable by uid {self.reader[0]}"
        return None

    def _real_roots(self) -> list[Path]:
        return [Path(os.path.realpath(root)) for root in self.roots]

    def read_blend(self, path: str) -> bytes:
        refused = self.refuse(path)
        if refused:
            raise BlendFileError(refused, path)
        fd = self.open(path)
        try:
            chunks, size = [], 0
            while chunk := os.read(fd, 1 << 20):
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise BlendFileError(f"larger than {MAX_FILE_BYTES} bytes", path)
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        self.blends[path] = data
        return data

    def open(self, path: str) -> int:
        """A read-only handle on the regular file `path` leads to, checked for this user.

        Raises:
            OSError: missing, not a regular file, not readable by the user, or swapped.
        """
        real = os.path.realpath(path)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != real:
                raise SwappedFile(f"{path} changed while it was opened")
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path} is not a regular file")
            if self.reader is not None and not _may_read(info, *self.reader):
                raise PermissionError(f"{path} is not readable by uid {self.reader[0]}")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd


def _may_read(info: os.stat_result, uid: int, groups: frozenset[int]) -> bool:
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & 0o400)
    if info.st_gid in groups:
        return bool(info.st_mode & 0o040)
    return bool(info.st_mode & 0o004)


def _searchable(path: str, uid: int, groups: frozenset[int]) -> bool:
    """Whether the user may pass through every folder above `path` that exists."""
    if uid == 0:
        return True
    folder = Path(path).parent
    for ancestor in [*reversed(folder.parents), folder]:
        try:
            info = os.stat(ancestor)
        except OSError:
            return True  # from here on nothing exists: the user can see that much themselves
        if info.st_uid == uid:
            bit = 0o100
        elif info.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            return False
    return True
