"""Progress made on other hosts, for this host's event stream (and so its dashboard).

Each committed change of a task and each recorded frame sends a NOTIFY on one channel, in the
transaction that makes it (a rolled-back change says nothing). Every host follows the channel
and re-publishes what the others did: a job page on host A fills in the frames that host B
renders, as they land, not only when the chunk ends. A payload names the process that sent it,
so a host does not hear its own changes twice."""

import secrets
import threading
from collections.abc import Callable

from pi_render.farm.db import Connection, FarmDatabase, follow
from pi_render.task.record import TaskRecord

CHANNEL = "pi_render_progress"
ORIGIN = secrets.token_hex(6)  # this process


def announce_change(conn: Connection, task_id: str) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{ORIGIN} task {task_id}"))


def announce_frame(conn: Connection, key: str, frame: int) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{ORIGIN} frame {key} {frame}"))


class RemoteProgress:
    """Follows the channel on a thread of its own; `on_record` gets the newest record of a task
    changed elsewhere, `on_frame` each frame recorded elsewhere (the ledger key and number)."""

    def __init__(self, db: FarmDatabase, find: Callable[[str], TaskRecord | None],
                 on_record: Callable[[TaskRecord], None],
                 on_frame: Callable[[str, int], None]) -> None:  # fmt: skip
        self.db, self._find = db, find
        self._on_record, self._on_frame = on_record, on_frame
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="farm-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _follow(self) -> None:
        follow(self.db, [CHANNEL], self._stop, "progress follower", lambda: None, self.heard)

    def heard(self, payload: str) -> None:
        origin, kind, *rest = payload.split(" ")
        if origin == ORIGIN:
            return
        if kind == "task" and len(rest) == 1:
            record = self._find(rest[0])
            if record is not None:
                self._on_record(record)
        elif kind == "frame" and len(rest) == 2 and rest[1].lstrip("-").isdigit():
            self._on_frame(rest[0], int(rest[1]))
