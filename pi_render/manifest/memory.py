"""The records contract in memory: the second implementation the contract suite runs against,
and a store for tests and tools that need no file. Nothing survives the process."""

import threading
from collections.abc import Iterator

from pi_render.errors import TaskNotFound
from pi_render.manifest.contract import Change, Lazy, Listener, next_version
from pi_render.task.record import TaskRecord, TaskStatus

LIVE = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.RETRYING)


class MemoryRecordStore:
    def __init__(self) -> None:
        self._records: dict[str, TaskRecord] = {}
        self._lock = threading.Lock()  # the store's own; callers never hold it
        self._listeners: list[Listener] = []
        self._before_final: list[Listener] = []

    def create_many(self, records: list[TaskRecord]) -> None:
        with self._lock:
            for record in records:
                self._records[record.id] = record
        for record in records:
            self._tell(record)

    def create(self, record: TaskRecord) -> TaskRecord:
        self.create_many([record])
        return record

    def get(self, task_id: str) -> TaskRecord:
        with self._lock:
            record = self._records.get(task_id)
        if record is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return record

    latest = get

    def find(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            return self._records.get(task_id)

    def change(self, task_id: str, change: Change, lazy: Lazy | None = None) -> TaskRecord | None:
        while True:
            old = self.get(task_id)
            new = change(old)
            if new is None:
                return None
            with self._lock:  # the check, the before-final listeners and the write as one
                if self._records.get(task_id) is not old:
                    continue  # another change came between: run `change` on the newer one
                new = next_version(old, new, self._before_final)
                self._records[task_id] = new
            self._tell(new)
            return new

    def delete(self, task_id: str) -> None:
        with self._lock:
            self._records.pop(task_id, None)

    def delete_if(self, task_id: str, keep: Change) -> TaskRecord:
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                raise TaskNotFound(f"no task with id {task_id!r}")
            keep(record)
            del self._records[task_id]
            return record

    def _all(self) -> list[TaskRecord]:
        """Oldest first (ids sort by submission time)."""
        with self._lock:
            return [self._records[key] for key in sorted(self._records)]

    def query(self, status: TaskStatus | None = None, type_name: str | None = None,
              limit: int = 50, offset: int = 0) -> list[TaskRecord]:  # fmt: skip
        found = [r for r in reversed(self._all())
                 if (status is None or r.status is status)
                 and (type_name is None or r.type == type_name)]  # fmt: skip
        return found[offset : offset + limit]

    def with_status(self, status: TaskStatus) -> Iterator[TaskRecord]:
        yield from (r for r in self._all() if r.status is status)

    def unfinished(self) -> Iterator[TaskRecord]:
        for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
            yield from self.with_status(status)

    def children(self, parent_id: str) -> list[TaskRecord]:
        return [r for r in self._all() if r.parent == parent_id]

    def chunks_of(self, job_id: str) -> list[TaskRecord]:
        return [r for r in self._all() if r.job == job_id]

    def find_origin(self, origin: str) -> TaskRecord | None:
        return next((r for r in self._all() if r.origin == origin), None)

    def with_content_key(self, key: str) -> list[TaskRecord]:
        return [r for r in reversed(self._all()) if r.content_key == key]

    def live_of_type(self, type_name: str, statuses: tuple[TaskStatus, ...]) -> list[TaskRecord]:
        return [r for r in self._all() if r.type == type_name and r.status in statuses]

    def _of_uid(self, uid: int) -> list[TaskRecord]:
        return [r for r in self._all() if (r.submitted_by or {}).get("uid") == uid]

    def live_count_of_uid(self, uid: int) -> int:
        return sum(1 for r in self._of_uid(uid) if r.status in LIVE)

    def bytes_of_uid(self, uid: int) -> int:
        return sum(len(r.model_dump_json()) + int(r.args.get("snapshot_bytes") or 0)
                   for r in self._of_uid(uid))  # fmt: skip

    def finished_before(self, when: str, limit: int = 1000) -> list[TaskRecord]:
        done = [r for r in self._all() if r.status.is_final and r.finished_at is not None
                and r.finished_at.isoformat().replace("+00:00", "Z") < when]  # fmt: skip
        return done[:limit]

    def count_by_status(self) -> dict[str, int]:
        counts = {status.value: 0 for status in TaskStatus}
        for record in self._all():
            counts[record.status.value] += 1
        return counts

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_before_final(self, listener: Listener) -> None:
        self._before_final.append(listener)

    def synchronous(self) -> int:
        return 0  # memory: nothing is on disk

    def close(self) -> None:
        """Nothing to close."""

    def _tell(self, record: TaskRecord) -> None:
        for listener in self._listeners:
            listener(record)
