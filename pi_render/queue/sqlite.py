"""One SQLite file per routing label: two persist-queue SQLiteAckQueue tables, high before normal.

persist-queue's own blocking `get` polls on a 10 s tick per queue and knows nothing of our two
lanes, so workers wait on one Condition here that `put` signals instead.

Durability: the task records are the source of truth and are fsynced on every commit. The queue
files run in WAL with `synchronous=NORMAL`: every commit survives a killed process, and a power
cut can lose only the newest commits, which the daemon rebuilds at start from the records
(a pending record without a row is enqueued again; a lost ack redelivers a task whose record is
final, which is acked without running). That halves the fsyncs on each task's path.
"""

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import persistqueue
import persistqueue.serializers.json

from pi_render.manifest.writer import translated
from pi_render.queue.base import QueueItem
from pi_render.task.record import Priority

log = logging.getLogger(__name__)

LANES = (Priority.HIGH, Priority.NORMAL)  # the order in which lanes are served


class NormalSyncAckQueue(persistqueue.SQLiteAckQueue):
    """persist-queue's ack queue with `synchronous=NORMAL` on its connections (see above)."""

    def _new_db_connection(
        self, path: str, multithreading: bool, timeout: float
    ) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._new_db_connection(path, multithreading, timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


class SqliteTaskQueue:
    """A label's durable queue; only one process may open it (the daemon's flock guards that)."""

    @translated
    def __init__(self, path: Path, prune_every: int = 500) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._prune_every = prune_every
        self._acks_since_prune = 0
        self._cond = threading.Condition()
        self._closed = False
        self.paused = False  # accepting, but not handing out
        self._lanes: dict[Priority, Any] = {
            lane: NormalSyncAckQueue(
                str(path.parent),
                name=lane.value,
                db_file_name=path.name,
                multithreading=True,
                auto_resume=True,  # unacked rows of a dead daemon become ready again, in order
                serializer=persistqueue.serializers.json,
            )
            for lane in LANES
        }
        # waiting rows by task id (cancel and reconciliation look here), and rows handed out
        # but not yet acked: a task being retried can have one of each for a moment
        self._waiting: dict[str, tuple[Priority, int]] = {}
        self._taken: dict[tuple[Priority, int], str] = {}
        for lane, queue in self._lanes.items():
            for row in queue.queue():
                if int(row["status"]) < 5:  # not acked, not ack_failed
                    self._waiting[row["data"]["id"]] = (lane, row["id"])
        self._prune()

    @translated
    def put(self, task_id: str, priority: Priority) -> None:
        with self._cond:
            row_id = self._lanes[priority].put({"id": task_id})
            self._waiting[task_id] = (priority, int(row_id))
            self._cond.notify()

    @translated
    def get(self, timeout: float | None = None) -> QueueItem | None:
        """The next item, high lane first; None when closed, woken by `wake_all`, or timed out."""
        with self._cond:
            item = self._pop()
            if item is None and not self._closed:
                self._cond.wait(timeout)
                item = self._pop()
            return item

    def _pop(self) -> QueueItem | None:
        if self._closed or self.paused:
            return None
        for lane in LANES:
            if not self._lanes[lane].qsize():
                continue
            try:
                row = self._lanes[lane].get(block=False, raw=True)
            except persistqueue.Empty:
                continue
            if row is not None:
                task_id, row_id = row["data"]["id"], int(row["pqid"])
                if self._waiting.get(task_id) == (lane, row_id):
                    del self._waiting[task_id]
                self._taken[(lane, row_id)] = task_id
                return QueueItem(task_id=task_id, priority=lane, row_id=row_id)
        return None

    @translated
    def ack(self, item: QueueItem) -> None:
        with self._cond:
            self._lanes[item.priority].ack(id=item.row_id)
            self._taken.pop((item.priority, item.row_id), None)
            self._acks_since_prune += 1
            if self._acks_since_prune >= self._prune_every:
                self._prune()

    @translated
    def nack(self, item: QueueItem) -> None:
        """Give the item back: it is delivered again, in its original place."""
        with self._cond:
            self._lanes[item.priority].nack(id=item.row_id)
            self._taken.pop((item.priority, item.row_id), None)
            self._waiting[item.task_id] = (item.priority, item.row_id)
            self._cond.notify()

    @translated
    def remove(self, task_id: str) -> bool:
        """Take a waiting task out of the queue; False if it is not waiting (taken or unknown)."""
        with self._cond:
            if task_id not in self._waiting:
                return False
            lane, row_id = self._waiting.pop(task_id)
            try:
                self._lanes[lane].get(block=False, id=row_id)  # marks it taken, keeps counts right
            except persistqueue.Empty:
                pass  # already pruned: nothing left to take
            else:
                self._lanes[lane].ack(id=row_id)
            return True

    def contains(self, task_id: str) -> bool:
        """Whether the task has a row waiting (rows already handed out do not count)."""
        with self._cond:
            return task_id in self._waiting

    @translated
    def depth(self) -> dict[str, int]:
        with self._cond:
            waiting = {lane.value: self._lanes[lane].qsize() for lane in LANES}
            return {**waiting, "taken": len(self._taken)}

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self.paused = paused
            self._cond.notify_all()

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            for queue in self._lanes.values():
                queue.close()

    def _prune(self) -> None:
        """Delete acked rows: persist-queue keeps them, and selects slow down as they pile up."""
        for queue in self._lanes.values():
            queue.clear_acked_data(max_delete=0, keep_latest=0, clear_ack_failed=True)
        self._acks_since_prune = 0
        log.debug("pruned acked rows", extra={"queue": str(self.path)})

    @translated
    def maintain(self) -> None:
        """Prune acked rows and give the space back (VACUUM)."""
        with self._cond:
            self._prune()
            for queue in self._lanes.values():
                queue.shrink_disk_usage()

    def acked_rows(self) -> int:
        """Acked rows still on disk (for tests and maintenance reports)."""
        with self._cond:
            return sum(int(q.acked_count()) for q in self._lanes.values())
