"""Open files as another user, in this thread only, so the kernel checks every folder on the
way and the file itself as it would for them: modes, ACLs, and whatever else it knows.

Linux keeps the file-system uid, gid and groups per thread; the raw system calls change only the
calling thread (glibc's wrappers would change every thread of the daemon, so they are not used).
Only root may do this; elsewhere `as_user` does nothing and says so.
"""

import ctypes
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

# setfsuid, setfsgid, setgroups: their numbers differ by architecture
_SYSCALLS = {"x86_64": (122, 123, 116), "aarch64": (151, 152, 159)}
_libc = ctypes.CDLL(None, use_errno=True)


class CannotActAs(OSError):
    """Raised when the thread's identity could not be changed (or changed back)."""


def _set(number: int, value: int) -> int:
    return int(_libc.syscall(ctypes.c_long(number), ctypes.c_long(value)))


def _set_groups(number: int, groups: list[int]) -> None:
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    if _libc.syscall(ctypes.c_long(number), ctypes.c_long(len(groups)), array) != 0:
        raise CannotActAs(ctypes.get_errno(), "setgroups failed")


def can_act_as_others() -> bool:
    return os.geteuid() == 0 and platform.machine() in _SYSCALLS


@contextmanager
def as_user(uid: int, groups: frozenset[int]) -> Iterator[bool]:
    """Within the block, this thread opens files as `uid` with `groups`; yields False (and
    changes nothing) where that cannot be done."""
    if not can_act_as_others() or uid == 0:
        yield False
        return
    setfsuid, setfsgid, setgroups = _SYSCALLS[platform.machine()]
    ordered = sorted(groups) or [uid]
    before = os.getgroups()
    _set_groups(setgroups, ordered)
    _set(setfsgid, ordered[0])
    _set(setfsuid, uid)
    try:
        if _set(setfsuid, -1) != uid:  # -1 changes nothing and answers the current one
            raise CannotActAs(0, f"could not act as uid {uid}")
        yield True
    finally:
        _set(setfsuid, os.geteuid())
        _set(setfsgid, os.getegid())
        _set_groups(setgroups, before)
        if _set(setfsuid, -1) != os.geteuid():
            raise CannotActAs(0, "could not return to the daemon's own identity")
