"""The farm's hosts: each daemon registers itself and beats (`last_seen`, by the database's
clock); a host silent for `host_timeout_s` is offline, and the leases it holds end at once so
its tasks go back to the queue (the sweep runs on every host; it is one idempotent UPDATE)."""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pi_render.errors import ConfigError
from pi_render.farm.db import Connection, FarmDatabase

log = logging.getLogger(__name__)


class HostRegistry:
    def __init__(self, db: FarmDatabase, name: str, info: Callable[[], dict[str, Any]],
                 timeout_s: float) -> None:  # fmt: skip
        self.db, self.name, self.info, self.timeout_s = db, name, info, timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listed: tuple[float, list[dict[str, Any]]] | None = None

    def start(self) -> None:
        """Register; refuses (ConfigError) a name a live daemon of another machine, or another
        live daemon of this one, holds: two hosts of one name would release each other's work."""

        def register(conn: Connection) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"host:{self.name}",))
            self._check_name(conn)
            conn.execute(
                "INSERT INTO hosts (name, info, started_at, last_seen) VALUES "
                "(%s, %s, now(), now()) ON CONFLICT (name) DO UPDATE SET info = EXCLUDED.info, "
                "started_at = now(), last_seen = now()",
                (self.name, self._info("online")),
            )

        self.db.run(register)  # check and claim the name as one step: two starts cannot both
        self._thread = threading.Thread(target=self._run, name="host-beat", daemon=True)
        self._thread.start()

    def _check_name(self, conn: Connection) -> None:
        row = conn.execute("SELECT info, extract(epoch FROM now() - last_seen) FROM hosts "
                           "WHERE name = %s", (self.name,)).fetchone()  # fmt: skip
        if row is None:
            return
        info, silent = json.loads(row[0]), float(row[1])
        if info.get("state") != "online" or silent > self.timeout_s:
            return  # stopped, or silent long enough to be offline: the name is free
        same_machine = info.get("boot_id") == boot_id()
        if same_machine and not _alive(int(info.get("pid", 0))):
            return  # this machine's daemon of that name died (kill -9) and is restarting
        raise ConfigError(
            f"farm host name {self.name!r} is in use by a live daemon (pid {info.get('pid')}"
            f"{'' if same_machine else ' on another machine'}, seen {silent:.0f}s ago): give "
            "each host its own farm.host_name"
        )

    def _info(self, state: str) -> str:
        info = {"pid": os.getpid(), **self.info(), "state": state, "boot_id": boot_id()}
        return json.dumps(info)

    def _run(self) -> None:
        every = max(0.2, self.timeout_s / 4)
        while not self._stop.wait(every):
            try:
                self.beat()
                self.sweep()
            except Exception as exc:  # the beat's boundary: an outage must not end it
                log.warning("host heartbeat failed: %s", exc)

    def beat(self) -> None:
        self.db.run(lambda conn: conn.execute(
            "UPDATE hosts SET last_seen = now(), info = %s WHERE name = %s",
            (self._info("online"), self.name)))  # fmt: skip

    def sweep(self) -> int:
        """End the leases of offline hosts: their tasks are claimable now, not at lease end."""

        def sweep(conn: Connection) -> int:
            return conn.execute(
                "UPDATE queue_items SET lease_until = now() WHERE token IS NOT NULL AND "
                "lease_until > now() AND holder IN (SELECT name FROM hosts WHERE last_seen < "
                "now() - %s * interval '1 second')", (self.timeout_s,)).rowcount  # fmt: skip

        released = self.db.run(sweep)
        if released:
            log.warning("released %d task(s) of offline hosts", released)
        return released

    def listing(self) -> list[dict[str, Any]]:
        """Every host the farm has seen: online, offline or stopped, with its blocklists."""

        def rows(conn: Connection) -> list[Any]:
            hosts = conn.execute(
                "SELECT name, info, started_at, last_seen, "
                "extract(epoch FROM now() - last_seen) FROM hosts ORDER BY name"
            ).fetchall()
            blocked = conn.execute("SELECT host, job, reason FROM blocklist").fetchall()
            return [hosts, blocked]

        hosts, blocked = self.db.run(rows)
        answer = []
        for name, info, started_at, last_seen, silent in hosts:
            data = json.loads(info)
            state = data.pop("state", "online")
            if state == "online" and float(silent) > self.timeout_s:
                state = "offline"
            answer.append({"name": name, "state": state, "started_at": started_at.isoformat(),
                           "last_seen": last_seen.isoformat(),
                           "silent_s": round(float(silent), 1),
                           "blocklisted_for": [{"job": job, "reason": reason}
                                               for host, job, reason in blocked if host == name],
                           **data})  # fmt: skip
        return answer

    def online(self) -> list[str]:
        return [host["name"] for host in self.listing() if host["state"] == "online"]

    def pools(self, label: str) -> list[dict[str, Any]]:
        """What each online host's pool of `label` offers (for admission: a task is accepted
        when one host could run it). Read at most every 5 s: every submit asks."""
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] > 5.0:
            self._listed = (now, self.listing())
        return [
            host["capabilities"][label]
            for host in self._listed[1]
            if host["state"] == "online" and label in host.get("capabilities", {})
        ]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.db.run(lambda conn: conn.execute(
                "UPDATE hosts SET info = %s, last_seen = now() WHERE name = %s",
                (self._info("stopped"), self.name)))  # fmt: skip
        except Exception as exc:  # stopping anyway: the others see it go silent
            log.warning("could not mark this host stopped: %s", exc)


def boot_id() -> str:
    """This machine's current boot (a pid means something only within one)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def _alive(pid: int) -> bool:
    """Whether `pid` (on this machine) is a live process other than this one: a row with this
    very pid is this daemon's previous life (a container restart reuses pid 1)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SlotClaims:
    """Once per farm: the first host to insert (name, slot) runs it; the others skip it. A
    unique row, not a leader: no election to split."""

    def __init__(self, db: FarmDatabase, host: str) -> None:
        self.db, self.host = db, host

    def claim(self, name: str, slot: str) -> bool:
        return self.db.run(lambda conn: conn.execute(
            "INSERT INTO slots (name, slot, host) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (name, slot, self.host)).rowcount) > 0  # fmt: skip
