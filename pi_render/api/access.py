"""Who may do what on the socket (roles from config, given to users and groups; the peer's uid
and gid come from SO_PEERCRED), and the append-only audit log of every state-changing request."""

import grp
import json
import logging
import os
import pwd
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pi_render.identity import groups_of

log = logging.getLogger(__name__)

Role = Literal["admin", "submitter", "viewer"]
NO_SUCH_TASK = -1  # what `owner_of` answers for a task id nobody has
RANK = {"viewer": 1, "submitter": 2, "admin": 3}


class RoleGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class Roles(BaseModel):
    """`[roles.admin]`, `[roles.submitter]`, `[roles.viewer]`: users and groups by name (or
    number). The daemon's own user and root are always admins; unless `submitter` names groups,
    the socket's group may submit."""

    model_config = ConfigDict(extra="forbid")

    admin: RoleGrant = Field(default_factory=RoleGrant)
    submitter: RoleGrant = Field(default_factory=RoleGrant)
    viewer: RoleGrant = Field(default_factory=RoleGrant)


def _uid(name: str) -> int | None:
    try:
        return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _gid(name: str) -> int | None:
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class AccessPolicy:
    """Resolves a peer to its highest role."""

    def __init__(self, roles: Roles, socket_gid: int | None) -> None:
        self.roles = roles
        self.socket_gid = socket_gid

    def role_of(self, uid: int, gid: int) -> Role | None:
        if uid in (0, os.getuid()):
            return "admin"
        groups = groups_of(uid, gid)
        roles: tuple[Role, ...] = ("admin", "submitter", "viewer")
        for role in roles:
            grant: RoleGrant = getattr(self.roles, role)
            if uid in {_uid(u) for u in grant.users} or groups & {_gid(g) for g in grant.groups}:
                return role
        if not self.roles.submitter.groups and self.socket_gid in groups:
            return "submitter"
        return None


class AuditLog:
    """One JSON line per state-changing request, appended at once and never rewritten.

    A line is written at once (O_APPEND: lines never interleave, `read` sees it) and fsynced by a
    background thread that takes every line written meanwhile in one fsync: the event loop, which
    writes the line, must never wait on the disk (a per-line fsync there held every other request
    back). A line is on disk within milliseconds; `close` waits for it."""

    def __init__(self, path: Path, host: str | None = None) -> None:
        self.path = path
        self.host = host  # farm mode: each line names the host that served the request
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._written = 0  # lines written, and lines known to be on disk
        self._synced = 0
        self._wake = threading.Condition(self._lock)
        self._closed = False
        threading.Thread(target=self._sync_loop, name="audit-fsync", daemon=True).start()

    def append(self, entry: dict[str, Any]) -> None:
        where = {"host": self.host} if self.host else {}
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(), **where,
                           **entry}) + "\n"  # fmt: skip
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.fchmod(self._fd, 0o600)  # the daemon's alone, whatever an older file had
            os.write(self._fd, line.encode())
            self._written += 1
            self._wake.notify_all()

    def _sync_loop(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._written > self._synced or self._closed)
                if self._closed and self._written == self._synced:
                    return
                fd, upto = self._fd, self._written
            try:
                if fd is not None:
                    os.fsync(fd)
            except OSError as exc:
                log.error("audit log fsync failed: %s", exc)
            with self._lock:
                self._synced = max(self._synced, upto)
                self._wake.notify_all()

    def close(self) -> None:
        """Wait until every line is on disk, then close the file."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            self._wake.wait_for(lambda: self._synced >= self._written, timeout=30)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def read(self, since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        entries = [json.loads(line) for line in lines if line.strip()]
        if since:
            entries = [e for e in entries if e["time"] >= since]
        return entries[-limit:]


def needed_role(method: str, path: str) -> str:
    """The role a request needs: "own" means a submitter for its own tasks, else an admin."""
    parts = path.strip("/").split("/")
    if method in ("GET", "HEAD"):
        return "admin" if parts[:1] == ["audit"] else "viewer"
    if parts[:1] in (["queues"], ["farm"]):
        return "admin"
    controls = ("cancel", "retry", "pause", "resume", "priority")
    if len(parts) == 3 and parts[0] == "tasks" and parts[2] in controls:
        return "own"
    if method == "DELETE" and len(parts) == 2 and parts[0] == "tasks":
        return "own"  # forget
    return "submitter"


class AccessControl:
    """ASGI middleware: 403 with the missing role, and an audit line for every state change."""

    def __init__(self, app: Any, policy: AccessPolicy, audit: AuditLog,
                 owner_of: Any) -> None:  # fmt: skip
        self.app, self.policy, self.audit, self.owner_of = app, policy, audit, owner_of

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        peer = (scope.get("extensions") or {}).get("peercred") or {}
        uid, gid = peer.get("uid", -1), peer.get("gid", -1)
        role = self.policy.role_of(uid, gid) if peer else None
        need = needed_role(method, path)
        parts = path.strip("/").split("/")
        task_id = parts[1] if len(parts) >= 2 and parts[0] == "tasks" else None
        if need == "own":
            need = "admin"
            if role == "submitter" and task_id is not None:
                from starlette.concurrency import run_in_threadpool

                if await run_in_threadpool(self.owner_of, task_id) in (uid, NO_SUCH_TASK):
                    need = "submitter"  # their own task (or no such task: the route says 404)
        allowed = role is not None and RANK[role] >= RANK[need]
        changing = method not in ("GET", "HEAD")
        entry = {"uid": uid, "gid": gid, "pid": peer.get("pid"), "role": role,
                 "action": f"{method} {path}", "task_id": task_id}  # fmt: skip
        if not allowed:
            body = json.dumps(
                {
                    "error": "Forbidden",
                    "message": (
                        f"uid {uid} needs the {need} role to {method} {path} "
                        f"(it has {role or 'no role'}); ask an admin to add it to [roles.{need}]"
                    ),
                }
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})  # fmt: skip
            if changing or need == "admin":
                self.audit.append({**entry, "outcome": "refused: 403"})
            return
        status, audited = 0, not changing

        def audit() -> None:
            nonlocal audited
            audited = True
            made = (scope.get("state") or {}).get("audit_task_id")
            self.audit.append({**entry, "task_id": made or task_id, "outcome": status or 500})

        async def watched_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not audited and not message.get("more_body"):
                audit()  # before the caller has its answer: it can read the line at once
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:  # a request that failed inside (or whose client left) is audited too
            if not audited:
                audit()
