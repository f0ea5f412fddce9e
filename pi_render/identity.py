"""Who asks: the caller's uid, gid and pid (from SO_PEERCRED at the API's edge) and their
groups, resolved once per request and handed to the service, which never looks them up."""

import os
import pwd
from dataclasses import dataclass
from typing import Any

from pi_render.clock import SYSTEM

GROUPS_TTL_S = 10.0  # how long a uid's groups are trusted (NSS lookups on every request cost)
_groups_seen: dict[tuple[int, int], tuple[float, frozenset[int]]] = {}


def groups_of(uid: int, gid: int) -> frozenset[int]:
    """The uid's primary and supplementary groups (looked up at most every GROUPS_TTL_S)."""
    now = SYSTEM.monotonic()
    seen = _groups_seen.get((uid, gid))
    if seen is not None and now - seen[0] < GROUPS_TTL_S:
        return seen[1]
    groups = {gid}
    try:
        name = pwd.getpwuid(uid).pw_name
        groups |= set(os.getgrouplist(name, gid))
    except KeyError:
        pass
    if len(_groups_seen) > 4096:
        _groups_seen.clear()
    _groups_seen[(uid, gid)] = (now, frozenset(groups))
    return frozenset(groups)


@dataclass(frozen=True)
class Caller:
    """A person (or process) on the socket; None where the daemon acts on its own (cron)."""

    uid: int
    gid: int
    pid: int | None = None
    groups: frozenset[int] = frozenset()

    @classmethod
    def from_peer(cls, peer: dict[str, Any] | None) -> "Caller | None":
        if not peer:
            return None
        uid, gid = int(peer["uid"]), int(peer["gid"])
        return cls(uid, gid, peer.get("pid"), groups_of(uid, gid))

    @property
    def submitted_by(self) -> dict[str, int]:
        """What a record keeps of them."""
        kept = {"uid": self.uid, "gid": self.gid}
        return kept if self.pid is None else {**kept, "pid": self.pid}

    @property
    def reader(self) -> tuple[int, frozenset[int]]:
        """Whose rights files are read with (uid and groups)."""
        return self.uid, self.groups
