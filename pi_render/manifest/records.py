"""Task records in a sqlitedict manifest (JSON, committed before anyone is told).

Keys are time-ordered task ids, so "newest first" is key order. Filtered listing runs as SQL on
sqlitedict's own table through a read-only connection with expression indexes, so it stays fast
and memory-flat however many records pile up.
"""

import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pi_render.clock import Clock
from pi_render.errors import StorageError, TaskNotFound
from pi_render.manifest.base import DurableJsonTable
from pi_render.manifest.contract import Change, Lazy, Listener, next_version, where_clause
from pi_render.task.record import TaskRecord, TaskStatus

TABLE = "tasks"
RECENT_CACHE = 4096  # records kept in memory for read-modify-write (running tasks and more)


class TaskIdGenerator:
    """Ids that sort by submission time: 14 hex digits of µs since the epoch, then 6 random ones."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            stamp = max(self._last + 1, int(self._clock.now().timestamp() * 1_000_000))
            self._last = stamp
        return f"{stamp:014x}{secrets.token_hex(3)}"


class TaskRecordManifest:
    """Durable, thread-safe task records; every write is committed before it returns."""

    def __init__(self, path: Path) -> None:
        self._store = DurableJsonTable(path, TABLE)
        self.lock = threading.RLock()  # held across read-modify-write; callers may hold it too
        # the newest version of recently written records, committed or not: read-modify-write
        # starts from here (no SQL, no JSON); only this process writes, so it is never stale
        self._recent: OrderedDict[str, TaskRecord] = OrderedDict()
        self._listeners: list[Listener] = []
        self._before_final: list[Listener] = []
        for column in ("status", "type", "origin", "parent", "content_key", "job"):
            self._store.execute_ddl(
                f"CREATE INDEX IF NOT EXISTS {TABLE}_{column} ON {TABLE}"
                f"(json_extract(value, '$.{column}'), key)"
            )
        self._store.execute_ddl(  # quotas sum one uid's records
            f"CREATE INDEX IF NOT EXISTS {TABLE}_uid ON {TABLE}"
            f"(json_extract(value, '$.submitted_by.uid'))"
        )

    def synchronous(self) -> int:
        return self._store.synchronous()

    def add_before_final(self, listener: Listener) -> None:
        """Called before a record's move to a final state is written (the hook outbox)."""
        self._before_final.append(listener)

    def add_listener(self, listener: Listener) -> None:
        """Called (in the writer's thread) after every committed change."""
        self._listeners.append(listener)

    def create(self, record: TaskRecord) -> TaskRecord:
        self.create_many([record])
        return record

    def create_many(self, records: list[TaskRecord]) -> None:
        """Write new records; one commit covers them all."""
        with self._forgotten_if_undone():
            with self.lock:
                self._stage(*records)
            self._commit(*records)

    def get(self, task_id: str) -> TaskRecord:
        """The last committed record (read beside the writer: WAL readers never wait on fsync).

        Raises:
            TaskNotFound.
        """
        text = self._store.text(task_id)
        if text is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return TaskRecord.model_validate_json(text)

    def latest(self, task_id: str) -> TaskRecord:
        """The newest record, committed or not: for callers holding `lock` about to change it."""
        with self.lock:
            record = self._recent.get(task_id)
            return record if record is not None else self.get(task_id)

    def change(self, task_id: str, change: Change, lazy: Lazy | None = None) -> TaskRecord | None:
        """Apply `change` atomically (compare-and-set): it returns the new record, or None to
        leave the record as it is. Returns what was written, once it is on disk, or None; once
        it is committed (a power cut may lose it) when `lazy` says so of the new record."""
        with self._forgotten_if_undone():
            with self.lock:
                old = self.latest(task_id)
                new = change(old)
                if new is None:
                    return None
                new = next_version(old, new, self._before_final)
                self._stage(new)
            self._commit(new, durable=lazy is None or not lazy(new))
        return new

    def query(
        self,
        status: TaskStatus | None = None,
        type_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Newest first, filtered by status and/or type."""
        where, params = self._filters(status, type_name)
        sql = f"SELECT value FROM {TABLE}{where} ORDER BY key DESC LIMIT ? OFFSET ?"
        rows = self._store.query(sql, (*params, limit, offset))
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def unfinished(self) -> Iterator[TaskRecord]:
        """Pending and running records, oldest first (for recovery after a crash)."""
        for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
            yield from self.with_status(status)

    def find_origin(self, origin: str) -> TaskRecord | None:
        """The task a cron fire or a watched file already made, if any."""
        rows = self._store.query(
            f"SELECT value FROM {TABLE} WHERE json_extract(value, '$.origin') = ? LIMIT 1",
            (origin,),
        )
        return TaskRecord.model_validate_json(rows[0][0]) if rows else None

    def live_of_type(self, type_name: str, statuses: tuple[TaskStatus, ...]) -> list[TaskRecord]:
        marks = ",".join("?" * len(statuses))
        rows = self._store.query(
            f"SELECT value FROM {TABLE} WHERE json_extract(value, '$.type') = ? AND "
            f"json_extract(value, '$.status') IN ({marks}) ORDER BY key",
            (type_name, *(s.value for s in statuses)),
        )
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def live_count_of_uid(self, uid: int) -> int:
        """Pending, running and retrying tasks submitted by `uid` (the status index narrows)."""
        rows = self._store.query(
            f"SELECT count(*) FROM {TABLE} WHERE json_extract(value, '$.status') IN "
            "('pending', 'running', 'retrying') AND json_extract(value, '$.submitted_by.uid') = ?",
            (uid,),
        )
        return int(rows[0][0])

    def bytes_of_uid(self, uid: int) -> int:
        """What `uid`'s records keep: their JSON and their snapshots' bytes (for quotas)."""
        rows = self._store.query(
            f"SELECT coalesce(sum(length(value) + coalesce("
            f"json_extract(value, '$.args.snapshot_bytes'), 0)), 0) FROM {TABLE} "
            "WHERE json_extract(value, '$.submitted_by.uid') = ?",
            (uid,),
        )
        return int(rows[0][0])

    def with_content_key(self, key: str) -> list[TaskRecord]:
        rows = self._store.query(
            f"SELECT value FROM {TABLE} WHERE json_extract(value, '$.content_key') = ? "
            "ORDER BY key DESC",
            (key,),
        )
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def children(self, parent_id: str) -> list[TaskRecord]:
        rows = self._store.query(
            f"SELECT value FROM {TABLE} WHERE json_extract(value, '$.parent') = ? ORDER BY key",
            (parent_id,),
        )
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def chunks_of(self, job_id: str) -> list[TaskRecord]:
        rows = self._store.query(
            f"SELECT value FROM {TABLE} WHERE json_extract(value, '$.job') = ? ORDER BY key",
            (job_id,),
        )
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def find(self, task_id: str) -> TaskRecord | None:
        try:
            return self.get(task_id)
        except TaskNotFound:
            return None

    def delete(self, task_id: str) -> None:
        with self.lock:  # through the commit: a change meanwhile would read the old row back
            self._recent.pop(task_id, None)
            self._store.delete(task_id)
            self._store.commit()

    def delete_if(self, task_id: str, keep: Change) -> TaskRecord:
        """Delete the record unless `keep` (given the newest version) raises: a check and a delete
        no change can come between. Returns what was deleted.

        Raises:
            TaskNotFound; whatever `keep` raises (then nothing is deleted).
        """
        with self.lock:  # through the commit (deletes are rare): no change can read it back
            record = self.latest(task_id)
            keep(record)
            self._recent.pop(task_id, None)
            self._store.delete(task_id)
            self._store.commit()
        return record

    def finished_before(self, when: str, limit: int = 1000) -> list[TaskRecord]:
        """Final records that finished before `when` (ISO time), oldest first."""
        rows = self._store.query(
            f"SELECT value FROM {TABLE} WHERE json_extract(value, '$.status') IN "
            "('completed', 'failed', 'cancelled') AND json_extract(value, '$.finished_at') < ? "
            "LIMIT ?",
            (when, limit),
        )
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def with_status(self, status: TaskStatus) -> Iterator[TaskRecord]:
        """Every record of a status, oldest first."""
        where, params = self._filters(status, None)
        rows = self._store.query(f"SELECT value FROM {TABLE}{where} ORDER BY key", params)
        for row in rows:
            yield TaskRecord.model_validate_json(row[0])

    def count_by_status(self) -> dict[str, int]:
        sql = f"SELECT json_extract(value, '$.status'), count(*) FROM {TABLE} GROUP BY 1"
        rows = self._store.query(sql)
        counts = {status.value: 0 for status in TaskStatus}
        counts.update({str(status): int(n) for status, n in rows})
        return counts

    def close(self) -> None:
        with self.lock:
            self._store.close()

    @contextmanager
    def _forgotten_if_undone(self) -> Iterator[None]:
        """A write the disk refused undid every write not yet committed: the cache of newest
        versions would lie, so it is dropped (reads fall back to what is on disk)."""
        try:
            yield
        except StorageError:
            with self.lock:
                self._recent.clear()
            raise

    def _stage(self, *records: TaskRecord) -> None:
        """Write them in the open transaction, together (under the lock, so writes reach SQLite
        in the order they were made)."""
        for record in records:
            self._recent[record.id] = record
            self._recent.move_to_end(record.id)
            if len(self._recent) > RECENT_CACHE:
                self._recent.popitem(last=False)
        self._store.stage_many([(record.id, record.model_dump_json()) for record in records])

    def _commit(self, *records: TaskRecord, durable: bool = True) -> None:
        """Wait for a commit that covers the staged writes, outside the lock: writers that staged
        meanwhile share one fsync (group commit)."""
        self._store.commit(durable)
        for record in records:
            for listener in self._listeners:
                listener(record)

    @staticmethod
    def _filters(status: TaskStatus | None, type_name: str | None) -> tuple[str, tuple[str, ...]]:
        return where_clause(
            status,
            type_name,
            ("json_extract(value, '$.status')", "json_extract(value, '$.type')"),
            "?",
        )
