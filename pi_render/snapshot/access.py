"""Reading a project's files for the user who submitted it: inside the allowed roots, readable
by that user, regular files only, and the file checked is the file read (one handle).

A path is resolved, and the place it resolves to is checked (every folder above it searchable
by the user, inside the roots, readable); then exactly that place is opened without following a
last symlink, and the handle's own path (`/proc/self/fd`) must still be it: a file or folder
swapped for a symlink between the check and the open is caught, not followed. The user learns
nothing about folders they cannot search: "not readable" is all they hear, there or not.
"""

import os
import stat
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from pi_render.blend.errors import BlendFileError
from pi_render.fsync import make_dirs
from pi_render.paths import readable_by
from pi_render.snapshot.as_user import as_user

MAX_FILE_BYTES = 20 << 30  # one dependency
MAX_BLEND_BYTES = 4 << 30  # one .blend (the reader holds it in memory while it traces it)
MAX_BLENDS_BYTES = 16 << 30  # every .blend of one submit together


class SwappedFile(OSError):
    """Raised when a path led somewhere else by the time it was opened."""


@dataclass
class SubmitterAccess:
    """The tracer's view of the disk for one submit: `roots` confine, `reader` must be able to
    read (None: the daemon's own files, such as an unpacked upload). Each .blend read is kept
    in `workdir` (the very bytes that were traced), not in memory."""

    roots: tuple[Path, ...]
    reader: tuple[int, frozenset[int]] | None
    workdir: Path
    blends: dict[str, Path] = field(default_factory=dict)  # traced path → its kept bytes
    blend_bytes: int = 0

    def refuse(self, path: str) -> str | None:
        return self._checked(path)[1]

    def _checked(self, path: str) -> tuple[str, str | None]:
        """Where `path` leads, and why it may not be used (None: it may, or it is missing)."""
        denied = f"not readable by uid {self.reader[0]}" if self.reader else ""
        if self.reader is not None and not _searchable(path, *self.reader):
            return path, denied
        real = os.path.realpath(path)
        if self.reader is not None and not _searchable(real, *self.reader):
            return real, denied
        if not any(_inside(real, root) for root in self.roots):
            where = "" if real == path else f" (it leads to {real})"
            return real, f"outside the allowed roots{where}"
        if not os.path.lexists(real):
            return real, None  # reported as missing; nothing is read
        if self.reader is not None and not readable_by(Path(real), self.reader[0],
                                                       set(self.reader[1])):  # fmt: skip
            return real, denied
        return real, None

    def read_blend(self, path: str) -> bytes:
        fd = self.open(path)
        try:
            size = os.fstat(fd).st_size
            if size > MAX_BLEND_BYTES or self.blend_bytes + size > MAX_BLENDS_BYTES:
                raise BlendFileError(f"too large to trace ({size} bytes; at most "
                                     f"{MAX_BLEND_BYTES} per file, {MAX_BLENDS_BYTES} in all)",
                                     path)  # fmt: skip
            chunks, read = [], 0
            while chunk := os.read(fd, 1 << 20):
                read += len(chunk)
                if read > size:  # it grew while we read: not the file that was checked
                    raise BlendFileError("changed while it was read", path)
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        self.blend_bytes += len(data)
        make_dirs(self.workdir)  # the first folder of the task's spool: durable, as the rest
        kept = self.workdir / f"{len(self.blends)}.blend"
        kept.write_bytes(data)
        self.blends[path] = kept
        return data

    def open(self, path: str) -> int:
        """A read-only handle on the regular file `path` leads to, checked for this user.

        Raises:
            OSError: missing, refused (outside the roots, not the user's to read), not a
                regular file, or swapped between the check and the open.
        """
        real, refused = self._checked(path)
        if refused:
            raise PermissionError(refused)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with as_user(*self.reader) if self.reader else nullcontext(False):
            try:  # as the submitter: the kernel checks the way and the file (ACLs too)
                fd = os.open(real, flags)
            except PermissionError:
                raise PermissionError(
                    f"{path} is not readable by uid {self.reader[0]}"
                    if self.reader
                    else f"{path} is not readable"
                ) from None
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


def _inside(real: str, root: Path) -> bool:
    resolved = os.path.realpath(root)
    return real == resolved or real.startswith(resolved.rstrip("/") + "/")


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
