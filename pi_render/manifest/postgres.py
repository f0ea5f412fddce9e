"""The records contract on PostgreSQL (farm mode): one `tasks` row per record, its JSON beside
the columns that queries filter on. A change locks its row (`SELECT … FOR UPDATE`), so
compare-and-set holds across every host; a move to a final state is announced on
`pi_render_final`, so a client waiting on one host hears of a task that ended on another."""

import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pi_render.errors import DuplicateOrigin, TaskNotFound
from pi_render.farm.db import Connection, FarmDatabase, follow
from pi_render.farm.relay import announce_change
from pi_render.manifest.contract import Change, Lazy, Listener, next_version, where_clause
from pi_render.task.record import TaskRecord, TaskStatus

log = logging.getLogger(__name__)

FINAL_CHANNEL = "pi_render_final"
COLUMNS = ("id, version, status, type, attempts, parent, job, origin, content_key, uid, "
           "kept_bytes, finished_at, body")  # fmt: skip
FINAL = ("completed", "failed", "cancelled")


def _row(record: TaskRecord) -> tuple[Any, ...]:
    body = record.model_dump_json()
    uid = (record.submitted_by or {}).get("uid")
    kept = len(body) + int(record.args.get("snapshot_bytes") or 0)
    return (record.id, record.version, record.status.value, record.type, record.attempts,
            record.parent, record.job, record.origin, record.content_key, uid, kept,
            record.finished_at, body)  # fmt: skip


class PostgresRecordStore:
    """Task records in the farm database; every write is committed before it returns."""

    def __init__(self, db: FarmDatabase) -> None:
        self.db = db
        self._listeners: list[Listener] = []
        self._before_final: list[Listener] = []
        self._remote: list[Listener] = []
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def synchronous(self) -> int:
        return 2  # PostgreSQL commits are fsynced (synchronous_commit=on)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_before_final(self, listener: Listener) -> None:
        self._before_final.append(listener)

    def add_final_listener(self, listener: Listener) -> None:
        """Called for every move to a final state, on any host (a waiter on this one hears of a
        task that ended on another): after its commit, from a thread of this store's."""
        self._remote.append(listener)
        if self._follower is None:
            self._follower = threading.Thread(target=self._follow, name="records-follow",
                                              daemon=True)  # fmt: skip
            self._follower.start()

    def create(self, record: TaskRecord) -> TaskRecord:
        self.create_many([record])
        return record

    def create_many(self, records: list[TaskRecord]) -> None:
        """One transaction; a record whose origin another already has undoes them all.

        Raises:
            DuplicateOrigin.
        """

        def insert(conn: Connection) -> None:
            with conn.cursor() as cur:
                for record in records:
                    cur.execute(
                        f"INSERT INTO tasks ({COLUMNS}) VALUES ({', '.join(['%s'] * 13)}) "
                        "ON CONFLICT (origin) WHERE origin IS NOT NULL DO NOTHING",
                        _row(record),
                    )
                    if cur.rowcount == 0:
                        raise DuplicateOrigin(f"a task from {record.origin} exists already")

        self.db.run(insert)
        for record in records:
            self._tell(record)

    def get(self, task_id: str) -> TaskRecord:
        record = self.find(task_id)
        if record is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return record

    latest = get  # every host writes here: the committed row is the newest there is

    def find(self, task_id: str) -> TaskRecord | None:
        rows = self._select("WHERE id = %s", (task_id,))
        return rows[0] if rows else None

    def change(self, task_id: str, change: Change, lazy: Lazy | None = None) -> TaskRecord | None:
        """Compare-and-set by row lock: `change` sees the newest version and no other writer
        (on any host) comes between it and the write. Always durable (`lazy` is not taken): a
        start's attempt fences the other hosts, so a database that lost it could let two hosts
        run the same attempt."""

        def write(conn: Connection) -> TaskRecord | None:
            row = conn.execute("SELECT body FROM tasks WHERE id = %s FOR UPDATE",
                               (task_id,)).fetchone()  # fmt: skip
            if row is None:
                raise TaskNotFound(f"no task with id {task_id!r}")
            old = TaskRecord.model_validate_json(row[0])
            new = change(old)
            if new is None:
                return None
            new = next_version(old, new, self._before_final)
            values = _row(new)
            conn.execute(
                "UPDATE tasks SET version=%s, status=%s, type=%s, attempts=%s, parent=%s, "
                "job=%s, origin=%s, content_key=%s, uid=%s, kept_bytes=%s, finished_at=%s, "
                "body=%s WHERE id=%s",
                (*values[1:], task_id),
            )
            if new.status.is_final and not old.status.is_final:
                conn.execute("SELECT pg_notify(%s, %s)", (FINAL_CHANNEL, task_id))
            announce_change(conn, task_id)  # other hosts' event streams (farm/relay.py)
            return new

        new = self.db.run(write)
        if new is not None:
            self._tell(new)
        return new

    def delete(self, task_id: str) -> None:
        self.db.run(lambda conn: conn.execute("DELETE FROM tasks WHERE id = %s", (task_id,)))

    def delete_if(self, task_id: str, keep: Change) -> TaskRecord:
        def delete(conn: Connection) -> TaskRecord:
            row = conn.execute("SELECT body FROM tasks WHERE id = %s FOR UPDATE",
                               (task_id,)).fetchone()  # fmt: skip
            if row is None:
                raise TaskNotFound(f"no task with id {task_id!r}")
            record = TaskRecord.model_validate_json(row[0])
            keep(record)
            conn.execute("DELETE FROM tasks WHERE id = %s", (task_id,))
            return record

        return self.db.run(delete)

    def query(self, status: TaskStatus | None = None, type_name: str | None = None,
              limit: int = 50, offset: int = 0) -> list[TaskRecord]:  # fmt: skip
        where, params = where_clause(status, type_name, ("status", "type"), "%s")
        return self._select(f"{where} ORDER BY id DESC LIMIT %s OFFSET %s",
                            (*params, limit, offset))  # fmt: skip

    def with_status(self, status: TaskStatus) -> Iterator[TaskRecord]:
        yield from self._select("WHERE status = %s ORDER BY id", (status.value,))

    def unfinished(self) -> Iterator[TaskRecord]:
        for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
            yield from self.with_status(status)

    def children(self, parent_id: str) -> list[TaskRecord]:
        return self._select("WHERE parent = %s ORDER BY id", (parent_id,))

    def chunks_of(self, job_id: str) -> list[TaskRecord]:
        return self._select("WHERE job = %s ORDER BY id", (job_id,))

    def find_origin(self, origin: str) -> TaskRecord | None:
        rows = self._select("WHERE origin = %s LIMIT 1", (origin,))
        return rows[0] if rows else None

    def with_content_key(self, key: str) -> list[TaskRecord]:
        return self._select("WHERE content_key = %s ORDER BY id DESC", (key,))

    def live_of_type(self, type_name: str, statuses: tuple[TaskStatus, ...]) -> list[TaskRecord]:
        return self._select("WHERE type = %s AND status = ANY(%s) ORDER BY id",
                            (type_name, [s.value for s in statuses]))  # fmt: skip

    def live_count_of_uid(self, uid: int) -> int:
        return self._scalar("SELECT count(*) FROM tasks WHERE uid = %s AND status IN "
                            "('pending', 'running', 'retrying')", (uid,))  # fmt: skip

    def bytes_of_uid(self, uid: int) -> int:
        return self._scalar("SELECT coalesce(sum(kept_bytes), 0) FROM tasks WHERE uid = %s",
                            (uid,))  # fmt: skip

    def finished_before(self, when: str, limit: int = 1000) -> list[TaskRecord]:
        cutoff = datetime.fromisoformat(when.replace("Z", "+00:00"))
        return self._select("WHERE status = ANY(%s) AND finished_at < %s ORDER BY id LIMIT %s",
                            (list(FINAL), cutoff, limit))  # fmt: skip

    def count_by_status(self) -> dict[str, int]:
        rows = self.db.run(lambda conn: conn.execute(
            "SELECT status, count(*) FROM tasks GROUP BY status").fetchall())  # fmt: skip
        counts = {status.value: 0 for status in TaskStatus}
        counts.update({str(status): int(n) for status, n in rows})
        return counts

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=5)

    def _select(self, where: str, params: tuple[Any, ...]) -> list[TaskRecord]:
        rows = self.db.run(
            lambda conn: conn.execute(f"SELECT body FROM tasks {where}", params).fetchall()
        )
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def _scalar(self, sql: str, params: tuple[Any, ...]) -> int:
        row = self.db.run(lambda conn: conn.execute(sql, params).fetchone())
        return int(row[0]) if row else 0

    def _tell(self, record: TaskRecord) -> None:
        for listener in self._listeners:
            listener(record)

    def _follow(self) -> None:
        """Hear every host's final moves; reconnect (with a pause) when the database goes."""
        follow(self.db, [FINAL_CHANNEL], self._stop, "records follower", lambda: None,
               self._heard)  # fmt: skip

    def _heard(self, task_id: str) -> None:
        record = self.find(task_id)
        if record is not None:
            for listener in self._remote:
                listener(record)
