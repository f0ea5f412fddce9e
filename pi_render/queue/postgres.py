"""The queue contract on PostgreSQL (farm mode): one `queue_items` row per waiting task, shared
by every host. A worker claims with `FOR UPDATE SKIP LOCKED` (high lane first, then put order),
so two hosts never get the same row; the claim sets a lease that heartbeats renew, and a row
whose lease ran out (by the database's clock) is claimable again: the sweep is in the claim.
A put announces itself with NOTIFY, so idle workers on every host wake at once; a slow poll is
only the fallback for a lost connection.

A receipt is (task id, claim token): a put, nack or ack from a holder whose lease ran out
names an old token and changes nothing (fencing).
"""

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from pi_render.clock import Clock
from pi_render.farm.db import Connection, FarmDatabase, follow
from pi_render.queue.base import QueueItem, WaitingRoom
from pi_render.task.record import Priority

log = logging.getLogger(__name__)

CHANNEL = "pi_render_queue"
LANES = {Priority.HIGH: 0, Priority.NORMAL: 1}
BY_LANE = {number: lane for lane, number in LANES.items()}
NOW = "coalesce(%(now)s::timestamptz, now())"  # the database's clock, unless a test gives one

CLAIM = f"""
UPDATE queue_items SET token = nextval('queue_tokens'), holder = %(host)s, again = false,
    claims = CASE WHEN again THEN 1 ELSE claims + 1 END,
    lease_until = {NOW} + %(lease)s * interval '1 second'
WHERE task_id = (
    SELECT task_id FROM queue_items
    WHERE label = %(label)s AND (not_before IS NULL OR not_before <= {NOW})
      AND (token IS NULL OR lease_until <= {NOW})
      AND needs <@ %(tags)s::text[] AND NOT (%(host)s = ANY(avoid))
    ORDER BY lane, seq FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING task_id, lane, token, claims
"""
NEXT_DUE = f"""
SELECT extract(epoch FROM min(not_before) - {NOW}) FROM queue_items
WHERE label = %(label)s AND token IS NULL AND not_before > {NOW}
"""


class QueueWakeups:
    """One LISTEN connection per daemon: a put on any host wakes this host's idle workers of
    that label. When the connection drops, every queue is woken (and polls) until it is back."""

    def __init__(self, db: FarmDatabase) -> None:
        self.db = db
        self._rooms: dict[str, WaitingRoom] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-wakeups", daemon=True)
        self._thread.start()

    def register(self, label: str, room: WaitingRoom) -> None:
        self._rooms[label] = room

    def _run(self) -> None:
        follow(self.db, [CHANNEL], self._stop, "queue wake-ups", self._connected, self._note)

    def _connected(self) -> None:
        """(Re)connected: puts made while we were away were not heard, so every room looks."""
        self._wake_every_room()

    def _note(self, label: str) -> None:
        room = self._rooms.get(label)
        if room is not None:
            room.wake_one()

    def _wake_every_room(self) -> None:
        for room in list(self._rooms.values()):
            room.wake_one()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class PostgresTaskQueue(WaitingRoom):
    """One label's share of the farm's queue table, as seen from one host."""

    def __init__(self, db: FarmDatabase, label: str, host: str, wakeups: QueueWakeups | None,
                 lease_s: float | None = 60.0, clock: Clock | None = None,
                 tags: list[str] | None = None, poll_s: float = 5.0) -> None:  # fmt: skip
        super().__init__()
        self.db, self.label, self.host, self.lease_s = db, label, host, lease_s
        self.clock, self.tags, self.poll_s = clock, sorted(tags or []), poll_s
        if wakeups is not None:
            wakeups.register(label, self)
        # what this host held when it stopped comes back now (without leases nothing else would)
        self.db.run(lambda conn: conn.execute(
            "UPDATE queue_items SET token = NULL, lease_until = NULL, holder = NULL "
            "WHERE label = %s AND holder = %s", (label, host)))  # fmt: skip

    def _params(self, **more: Any) -> dict[str, Any]:
        now = self.clock.now() if self.clock is not None else None
        lease = self.lease_s if self.lease_s is not None else 1e9  # "no lease": ~forever
        return {"now": now, "label": self.label, "host": self.host, "lease": lease,
                "tags": self.tags, **more}  # fmt: skip

    def put(self, task_id: str, priority: Priority, not_before: datetime | None = None,
            needs: Sequence[str] = (), avoid: Sequence[str] = ()) -> None:  # fmt: skip
        """Queue it (again). A put over a waiting row, or one this host holds (a worker's retry),
        replaces it (the old delivery's ack will not take the new row); a row another host
        holds is left to that host (its task is running there)."""
        params = self._params(id=task_id, lane=LANES[priority], not_before=not_before,
                              needs=sorted(needs), avoid=sorted(avoid))  # fmt: skip

        def put(conn: Connection) -> None:
            placed = conn.execute(
                "INSERT INTO queue_items (task_id, label, lane, not_before, needs, avoid) "
                "VALUES (%(id)s, %(label)s, %(lane)s, %(not_before)s, %(needs)s, %(avoid)s) "
                "ON CONFLICT (task_id) DO UPDATE SET label = EXCLUDED.label, "
                "lane = EXCLUDED.lane, not_before = EXCLUDED.not_before, token = NULL, "
                "lease_until = NULL, holder = NULL, claims = 0, again = false, "
                "needs = CASE WHEN cardinality(EXCLUDED.needs) > 0 THEN EXCLUDED.needs "
                "ELSE queue_items.needs END, avoid = ARRAY(SELECT DISTINCT unnest("
                "queue_items.avoid || EXCLUDED.avoid)), seq = nextval('queue_items_seq_seq') "
                # a row another host holds is its own: its worker acks, nacks or loses it
                "WHERE queue_items.token IS NULL OR queue_items.holder = %(host)s",
                params,
            ).rowcount
            if not placed:  # held elsewhere: once that delivery ends, the row waits again
                conn.execute(
                    "UPDATE queue_items SET again = true, lane = %(lane)s, not_before = "
                    "%(not_before)s WHERE task_id = %(id)s",
                    params,
                )
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.label))

        self.db.run(put)
        self.wake_one()  # this host's own workers need not wait for the round trip

    def get(self, timeout: float | None = None) -> QueueItem | None:
        with self._cond:
            if self._closed or self.paused:
                return None
            wakes = self._wakes
        item, due_in = self._claim()
        if item is not None:
            return item
        wait = self.poll_s if timeout is None else min(timeout, self.poll_s)
        if due_in is not None:
            wait = min(wait, max(0.0, due_in))
        with self._cond:
            if self._wakes == wakes and not self._closed and wait > 0:
                self._cond.wait(wait)
            if self._closed or self.paused:
                return None
        return self._claim()[0]

    def _claim(self) -> tuple[QueueItem | None, float | None]:
        """The next due row, or None and how long until a delayed one falls due."""
        params = self._params()

        def claim(conn: Connection) -> tuple[QueueItem | None, float | None]:
            row = conn.execute(CLAIM, params).fetchone()
            if row is not None:
                task_id, lane, token, claims = row
                item = QueueItem(
                    task_id=task_id,
                    priority=BY_LANE[lane],
                    receipt=(task_id, int(token)),
                    redelivered=claims > 1,
                )
                return item, None
            due = conn.execute(NEXT_DUE, params).fetchone()
            return None, (float(due[0]) if due and due[0] is not None else None)

        return self.db.run(claim)

    def extend(self, item: QueueItem) -> bool:
        task_id, token = cast(tuple[str, int], item.receipt)
        params = self._params(id=task_id, token=token)
        return self.db.run(lambda conn: conn.execute(
            f"UPDATE queue_items SET lease_until = {NOW} + %(lease)s * interval '1 second' "
            "WHERE task_id = %(id)s AND token = %(token)s", params).rowcount) > 0  # fmt: skip

    def ack(self, item: QueueItem) -> None:
        """Done with this delivery: the row goes, unless it was put again meanwhile (a retry by
        hand on another host), in which case it waits again."""
        task_id, token = cast(tuple[str, int], item.receipt)

        def ack(conn: Connection) -> None:
            gone = conn.execute(
                "DELETE FROM queue_items WHERE task_id = %s AND token = %s AND NOT again",
                (task_id, token),
            ).rowcount
            if not gone and self._release(conn, task_id, token, fresh=True):
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.label))

        self.db.run(ack)

    @staticmethod
    def _release(conn: Connection, task_id: str, token: int, fresh: bool = False) -> bool:
        """The delivery ends and the row waits again, in its place (`fresh`: as a new put, not
        a redelivery); False if that delivery was not out."""
        claims = "0" if fresh else "claims"
        return (
            conn.execute(
                "UPDATE queue_items SET token = NULL, lease_until = NULL, holder = NULL, "
                f"again = false, claims = {claims} WHERE task_id = %s AND token = %s",
                (task_id, token),
            ).rowcount
            > 0
        )

    def nack(self, item: QueueItem) -> None:
        """Given back in its place (its `seq` stays); a stale receipt changes nothing."""
        task_id, token = cast(tuple[str, int], item.receipt)

        def nack(conn: Connection) -> None:
            if self._release(conn, task_id, token):
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.label))

        self.db.run(nack)
        self.wake_one()

    def remove(self, task_id: str) -> bool:
        return self.db.run(lambda conn: conn.execute(
            "DELETE FROM queue_items WHERE task_id = %s AND label = %s AND token IS NULL",
            (task_id, self.label)).rowcount) > 0  # fmt: skip

    def contains(self, task_id: str) -> bool:
        row = self.db.run(lambda conn: conn.execute(
            "SELECT 1 FROM queue_items WHERE task_id = %s AND label = %s AND token IS NULL",
            (task_id, self.label)).fetchone())  # fmt: skip
        return row is not None

    def knows(self, task_id: str) -> bool:
        """Whether a row of the task is here at all, held by a worker or not."""
        row = self.db.run(lambda conn: conn.execute(
            "SELECT 1 FROM queue_items WHERE task_id = %s AND label = %s",
            (task_id, self.label)).fetchone())  # fmt: skip
        return row is not None

    def depth(self) -> dict[str, int]:
        params = self._params()
        row = self.db.run(lambda conn: conn.execute(
            f"SELECT count(*) FILTER (WHERE token IS NULL AND lane = 0 AND "
            f"(not_before IS NULL OR not_before <= {NOW})), "
            f"count(*) FILTER (WHERE token IS NULL AND lane = 1 AND "
            f"(not_before IS NULL OR not_before <= {NOW})), "
            f"count(*) FILTER (WHERE token IS NULL AND not_before > {NOW}), "
            "count(*) FILTER (WHERE token IS NOT NULL) "
            "FROM queue_items WHERE label = %(label)s", params).fetchone())  # fmt: skip
        assert row is not None
        high, normal, delayed, taken = (int(n) for n in row)
        return {"high": high, "normal": normal, "delayed": delayed, "taken": taken}

    def maintain(self) -> None:
        """Nothing to do: acked rows are deleted, and PostgreSQL's autovacuum gives space back."""

    def close(self) -> None:
        self._shut()
