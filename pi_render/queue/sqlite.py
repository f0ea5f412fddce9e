"""One SQLite file per routing label: two persist-queue SQLiteAckQueue tables, high before normal.

persist-queue's own blocking `get` polls on a 10 s tick per queue and knows nothing of our two
lanes, so workers wait on one Condition here that `put` signals instead.

Durability: the task records are the source of truth and are fsynced on every commit. The queue
files run in WAL with `synchronous=NORMAL`: every commit survives a killed process, and a power
cut can lose only the newest commits, which the daemon rebuilds at start from the records
(a pending record without a row is enqueued again; a lost ack redelivers a task whose record is
final, which is acked without running). That halves the fsyncs on each task's path.

Delayed puts wait in a third table (`delayed`) and move to their lane when due (put, then ack:
a crash between delivers twice, which the contract allows). Leases are kept in memory: this
file has one process, and a restart hands back every unacked delivery anyway.
"""

import heapq
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import persistqueue
import persistqueue.serializers.json

from pi_render.clock import Clock, SystemClock
from pi_render.fsync import make_dirs
from pi_render.manifest.writer import translated
from pi_render.queue.base import QueueItem, WaitingRoom
from pi_render.task.record import Priority

log = logging.getLogger(__name__)

LANES = (Priority.HIGH, Priority.NORMAL)  # the order in which lanes are served
DELAYED = "delayed"


class NormalSyncAckQueue(persistqueue.SQLiteAckQueue):
    """persist-queue's ack queue with `synchronous=NORMAL` on its connections (see above)."""

    def _new_db_connection(
        self, path: str, multithreading: bool, timeout: float
    ) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._new_db_connection(path, multithreading, timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


class SqliteTaskQueue(WaitingRoom):
    """A label's durable queue; only one process may open it (the daemon's flock guards that)."""

    @translated
    def __init__(self, path: Path, prune_every: int = 500, clock: Clock | None = None,
                 lease_s: float | None = None) -> None:  # fmt: skip
        make_dirs(path.parent)
        self.path, self.clock, self.lease_s = path, clock or SystemClock(), lease_s
        self._prune_every = prune_every
        self._acks_since_prune = 0
        super().__init__()
        self._lanes: dict[str, Any] = {
            name: NormalSyncAckQueue(
                str(path.parent),
                name=name,
                db_file_name=path.name,
                multithreading=True,
                auto_resume=True,  # unacked rows of a dead daemon become ready again, in order
                serializer=persistqueue.serializers.json,
            )
            for name in (*(lane.value for lane in LANES), DELAYED)
        }
        # waiting rows by task id (cancel and reconciliation look here), rows handed out but not
        # yet acked (with their lease's end), and delayed rows by due time
        self._waiting: dict[str, tuple[Priority, int]] = {}
        # row → (task id, lease end, delivery number): a receipt names one delivery, so a worker
        # whose lease ran out cannot ack, nack or extend the row's next delivery
        self._taken: dict[tuple[Priority, int], tuple[str, float | None, int]] = {}
        self._deliveries = 0
        self._delayed: dict[str, tuple[float, int, Priority]] = {}
        self._due: list[tuple[float, int, str]] = []  # heap of (due, row, task id)
        for lane in LANES:
            for row in self._lanes[lane.value].queue():
                if int(row["status"]) < 5:  # not acked, not ack_failed
                    self._waiting[row["data"]["id"]] = (lane, row["id"])
        for row in self._lanes[DELAYED].queue():
            if int(row["status"]) < 5:
                data = row["data"]
                self._remember_delayed(data["id"], float(data["due"]), row["id"],
                                       Priority(data["priority"]))  # fmt: skip
        self._prune()

    @translated
    def put(self, task_id: str, priority: Priority, not_before: datetime | None = None,
            needs: Sequence[str] = (), avoid: Sequence[str] = ()) -> None:  # fmt: skip
        with self._cond:
            due = not_before.timestamp() if not_before is not None else None
            if due is not None and due > self.clock.now().timestamp():
                data = {"id": task_id, "priority": priority.value, "due": due}
                row_id = int(self._lanes[DELAYED].put(data))
                earlier = self._delayed.get(task_id)
                self._remember_delayed(task_id, due, row_id, priority)
                if earlier is not None:  # put again before its time: the new time stands
                    self._drop_row(DELAYED, earlier[1])
            else:
                row_id = self._lanes[priority.value].put({"id": task_id})
                self._waiting[task_id] = (priority, int(row_id))
            self._cond.notify()

    def _remember_delayed(self, task_id: str, due: float, row_id: int, lane: Priority) -> None:
        self._delayed[task_id] = (due, row_id, lane)
        heapq.heappush(self._due, (due, row_id, task_id))

    @translated
    def get(self, timeout: float | None = None) -> QueueItem | None:
        """The next due item, high lane first; None when closed, woken by `wake_all`, or timed
        out. A delayed item falling due within `timeout` ends the wait for it."""
        with self._cond:
            item = self._pop()
            if item is None and not self._closed:
                self._cond.wait(self._wait_for(timeout))
                item = self._pop()
            return item

    def _wait_for(self, timeout: float | None) -> float | None:
        if not self._due or self.paused:  # paused: due rows wait too (`set_paused` wakes us)
            return timeout
        until_due = max(0.0, self._due[0][0] - self.clock.now().timestamp())
        return until_due if timeout is None else min(timeout, until_due)

    def _pop(self) -> QueueItem | None:
        if self._closed or self.paused:
            return None
        self._promote_due()
        self._expire_leases()
        for lane in LANES:
            queue = self._lanes[lane.value]
            if not queue.qsize():
                continue
            try:
                row = queue.get(block=False, raw=True)
            except persistqueue.Empty:
                continue
            if row is not None:
                task_id, row_id = row["data"]["id"], int(row["pqid"])
                if self._waiting.get(task_id) == (lane, row_id):
                    del self._waiting[task_id]
                self._deliveries += 1
                self._taken[(lane, row_id)] = (task_id, self._lease_end(), self._deliveries)
                receipt = (lane, row_id, self._deliveries)
                return QueueItem(task_id=task_id, priority=lane, receipt=receipt)
        return None

    def _lease_end(self) -> float | None:
        return None if self.lease_s is None else self.clock.monotonic() + self.lease_s

    def _promote_due(self) -> None:
        """Delayed rows whose time has come join their lane (put, then ack: at least once)."""
        now = self.clock.now().timestamp()
        while self._due and self._due[0][0] <= now:
            due, row_id, task_id = self._due[0]
            if self._delayed.get(task_id, (None, None))[1] != row_id:
                heapq.heappop(self._due)
                continue  # removed, or put again later
            lane = self._delayed[task_id][2]
            new_row = self._lanes[lane.value].put(
                {"id": task_id}
            )  # first: a refusal forgets nothing
            heapq.heappop(self._due)
            del self._delayed[task_id]
            self._waiting[task_id] = (lane, int(new_row))
            self._drop_row(DELAYED, row_id)

    def _expire_leases(self) -> None:
        """Deliveries whose lease ran out are given back, in their place."""
        if self.lease_s is None:
            return  # no leases: nothing runs out
        now = self.clock.monotonic()
        for (lane, row_id), (task_id, end, _) in list(self._taken.items()):
            if end is not None and end <= now:
                log.warning("a delivery's lease ran out; it is delivered again",
                            extra={"task_id": task_id})  # fmt: skip
                self._give_back(task_id, lane, row_id)

    def _drop_row(self, lane: str, row_id: int) -> None:
        try:
            self._lanes[lane].get(block=False, id=row_id)  # marks it taken, keeps counts right
        except persistqueue.Empty:
            return  # already pruned: nothing left to take
        self._lanes[lane].ack(id=row_id)

    @translated
    def extend(self, item: QueueItem) -> bool:
        with self._cond:
            key = self._current(item)
            if key is not None:
                self._taken[key] = (item.task_id, self._lease_end(), self._taken[key][2])
            return key is not None

    def _current(self, item: QueueItem) -> tuple[Priority, int] | None:
        """The row of this delivery while it is still out (not acked, given back, redelivered)."""
        lane, row_id, number = cast(tuple[Priority, int, int], item.receipt)  # ours: made by _pop
        taken = self._taken.get((lane, row_id))
        return (lane, row_id) if taken is not None and taken[2] == number else None

    @translated
    def ack(self, item: QueueItem) -> None:
        with self._cond:
            key = self._current(item)
            if key is None:
                return  # its lease ran out and it went back: its next delivery decides
            lane, row_id = key
            del self._taken[key]
            self._lanes[lane.value].ack(id=row_id)
            self._acks_since_prune += 1
            if self._acks_since_prune >= self._prune_every:
                self._prune()

    @translated
    def nack(self, item: QueueItem) -> None:
        """Give the item back: it is delivered again, in its original place."""
        with self._cond:
            key = self._current(item)
            if key is not None:
                self._give_back(item.task_id, *key)
            self._cond.notify()

    def _give_back(self, task_id: str, lane: Priority, row_id: int) -> None:
        self._lanes[lane.value].nack(id=row_id)
        self._taken.pop((lane, row_id), None)
        self._waiting[task_id] = (lane, row_id)

    @translated
    def remove(self, task_id: str) -> bool:
        """Take a waiting (or delayed) task out; False if none waits (taken or unknown)."""
        with self._cond:
            if task_id in self._delayed:
                _, row_id, _ = self._delayed.pop(task_id)
                self._drop_row(DELAYED, row_id)
                return True
            if task_id not in self._waiting:
                return False
            lane, row_id = self._waiting.pop(task_id)
            self._drop_row(lane.value, row_id)
            return True

    def contains(self, task_id: str) -> bool:
        """Whether the task has a row waiting (rows already handed out do not count)."""
        with self._cond:
            return task_id in self._waiting or task_id in self._delayed

    @translated
    def depth(self) -> dict[str, int]:
        with self._cond:
            waiting = {lane.value: self._lanes[lane.value].qsize() for lane in LANES}
            return {**waiting, "delayed": len(self._delayed), "taken": len(self._taken)}

    def close(self) -> None:
        self._shut()
        with self._cond:
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
