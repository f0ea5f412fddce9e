"""The records contract: what the service, the workers and recovery rely on, whatever stores the
task records. The SQLite backend (`manifest/records.py`) and the in-memory one
(`manifest/memory.py`) pass the one contract suite (`tests/test_records_contract.py`)."""

from collections.abc import Callable, Iterator
from typing import Protocol

from pi_render.task.record import TaskRecord, TaskStatus

Listener = Callable[[TaskRecord], None]
Change = Callable[[TaskRecord], TaskRecord | None]
# says of a changed record whether its write may be lost to a power cut (never to a kill); a
# backend may ignore it and make every write durable
Lazy = Callable[[TaskRecord], bool]


def next_version(old: TaskRecord, new: TaskRecord, before_final: list[Listener]) -> TaskRecord:
    """What every backend's `change` writes: `new` one version on from `old`, after telling the
    before-final listeners when it moves the record to a final state."""
    if new is old:  # a change that hands back the record it was given: never alter that one
        new = old.model_copy()
    new.version = old.version + 1  # in place: `new` is the change's own fresh copy (hot path)
    if new.status.is_final and not old.status.is_final:
        for listener in before_final:
            listener(new)
    return new


def where_clause(status: TaskStatus | None, type_name: str | None, columns: tuple[str, str],
                 mark: str) -> tuple[str, tuple[str, ...]]:  # fmt: skip
    """` WHERE …` for a listing filtered by status and/or type, in a backend's SQL (its column
    expressions and its parameter mark), and its parameters."""
    clauses, params = [], []
    for column, value in zip(columns, (status.value if status else None, type_name)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


class RecordStore(Protocol):
    """Task records by id (ids sort by submission time).

    Guarantees every backend gives:
    - **Durable when the call returns**: a create, change or delete that returned survives a
      killed process (and, for the SQLite backend, a power cut: synchronous=FULL).
    - **Compare-and-set**: `change(id, fn)` applies `fn` to the newest version and writes the
      result only if no other change came between (else `fn` runs again on the newer one);
      each write gives the record `version + 1`. No caller holds a backend lock.
    - **Listeners**: `add_before_final` listeners run before a move to a final state is
      written (an outbox can stage its hook in the same commit); `add_listener` ones after
      every committed change, in the writer's thread.
    - Errors: TaskNotFound for an unknown id; otherwise only StorageError (DiskFull when the
      disk is full), and a failed call changed nothing.
    """

    def create_many(self, records: list[TaskRecord]) -> None:
        """Write new records; one commit covers them all."""

    def create(self, record: TaskRecord) -> TaskRecord: ...

    def get(self, task_id: str) -> TaskRecord:
        """The last committed version."""

    def latest(self, task_id: str) -> TaskRecord:
        """The newest version (committed, or being committed by a change in flight)."""

    def find(self, task_id: str) -> TaskRecord | None: ...

    def change(self, task_id: str, change: Change, lazy: Lazy | None = None) -> TaskRecord | None:
        """Compare-and-set; returns what was written (on disk), or None when `change` left it.
        When `lazy` says so of the new record, committed is enough (a power cut may lose it)."""

    def delete(self, task_id: str) -> None: ...

    def delete_if(self, task_id: str, keep: Change) -> TaskRecord:
        """Delete unless `keep` raises, with no change in between; returns what was deleted."""

    def query(self, status: TaskStatus | None = None, type_name: str | None = None,
              limit: int = 50, offset: int = 0) -> list[TaskRecord]:  # fmt: skip
        """Newest first, filtered by status and/or type."""

    def with_status(self, status: TaskStatus) -> Iterator[TaskRecord]:
        """Oldest first."""

    def unfinished(self) -> Iterator[TaskRecord]:
        """Pending, then running records, oldest first (recovery)."""

    def children(self, parent_id: str) -> list[TaskRecord]: ...

    def chunks_of(self, job_id: str) -> list[TaskRecord]:
        """A render job's chunk tasks, oldest first."""

    def find_origin(self, origin: str) -> TaskRecord | None: ...

    def with_content_key(self, key: str) -> list[TaskRecord]:
        """Newest first."""

    def live_of_type(self, type_name: str, statuses: tuple[TaskStatus, ...]) -> list[TaskRecord]:
        """Oldest first."""

    def live_count_of_uid(self, uid: int) -> int:
        """Pending, running and retrying tasks of one submitter."""

    def bytes_of_uid(self, uid: int) -> int:
        """Their records' JSON and snapshot bytes (quotas)."""

    def finished_before(self, when: str, limit: int = 1000) -> list[TaskRecord]:
        """Final records that finished before `when` (ISO time)."""

    def count_by_status(self) -> dict[str, int]: ...

    def add_listener(self, listener: Listener) -> None: ...

    def add_before_final(self, listener: Listener) -> None: ...

    def synchronous(self) -> int:
        """How durably it writes (SQLite's `PRAGMA synchronous`; 2 = FULL)."""

    def close(self) -> None: ...


class TaskData(Protocol):
    """A store that keeps something per task beside its record (failed tasks, the frame ledger,
    the hook outbox): the same verbs everywhere (`put`, `get`, `delete`, `forget_task`), and
    `forget_task` drops all it keeps of one task when the record is forgotten or pruned."""

    def forget_task(self, task_id: str) -> None: ...

    def close(self) -> None: ...
