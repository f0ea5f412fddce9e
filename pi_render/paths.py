"""Path confinement: a path a task names must resolve (symlinks followed) inside a configured
root. A prefix test is not a check: `/srv/renders/../../etc` starts with `/srv/renders`."""

import os
from pathlib import Path

from pi_render.errors import PiRenderError


class PathNotAllowed(PiRenderError):
    """Raised when a path resolves outside every allowed root."""

    http_status = 403
    retryable = False


def confined(path: str | Path, roots: list[Path], what: str, reveal: bool = True) -> Path:
    """The resolved path, if it lies inside one of `roots`.

    Raises:
        PathNotAllowed: naming the path, the roots and, if `reveal`, where it really leads (not
            for an unprivileged submitter: the daemon followed its links with rights they may
            not have, so the target could name a file in a folder they cannot read).
    """
    try:
        real = Path(os.path.realpath(path))
    except OSError:  # a link that stopped being one while it was followed: a swap under way
        raise PathNotAllowed(f"{what} {path} changed while it was checked") from None
    for root in roots:
        if real == (resolved := Path(os.path.realpath(root))) or real.is_relative_to(resolved):
            return real
    allowed = ", ".join(str(r) for r in roots) or "none"
    where = (
        ""
        if str(real) == str(path)
        else (f" (it resolves to {real})" if reveal else " (through a link or ..)")
    )
    raise PathNotAllowed(f"{what} {path}{where} is outside the allowed roots: {allowed}")


def readable_by(path: Path, uid: int, groups: set[int]) -> bool:
    """Whether `uid` (with `groups`) may read `path`: its folders searchable, the file readable.
    Root may; the daemon decides for its own user too."""
    if uid == 0:
        return True

    def allowed(target: Path, bits: tuple[int, int, int]) -> bool:
        st = target.stat()
        if st.st_uid == uid:
            return bool(st.st_mode & bits[0])
        if st.st_gid in groups:
            return bool(st.st_mode & bits[1])
        return bool(st.st_mode & bits[2])

    try:
        for folder in reversed(path.parents):
            if not allowed(folder, (0o100, 0o010, 0o001)):
                return False
        return allowed(path, (0o400, 0o040, 0o004))
    except OSError:
        return False


def writable_by(folder: Path, uid: int, groups: set[int]) -> bool:
    """Whether `uid` could make `folder` (or write into it): the nearest folder that exists on
    its way must be searchable and writable by them, and every folder above it searchable."""
    if uid == 0:
        return True
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent

    def may(target: Path, bits: tuple[int, int, int]) -> bool:
        st = target.stat()
        mode = st.st_mode
        if st.st_uid == uid:
            return mode & bits[0] == bits[0]
        if st.st_gid in groups:
            return mode & bits[1] == bits[1]
        return mode & bits[2] == bits[2]

    try:
        searchable = all(may(parent, (0o100, 0o010, 0o001)) for parent in existing.parents)
        return searchable and may(existing, (0o300, 0o030, 0o003))
    except OSError:
        return False


def absolute_path(value: str | None) -> str | None:
    """A path a request names: absolute (the daemon has no working folder of yours), no NUL."""
    if value is not None and "\0" in value:
        raise ValueError("must not contain a NUL byte")
    if value is not None and not Path(value).is_absolute():
        raise ValueError("must be an absolute path (the daemon has no working folder of yours)")
    return value
