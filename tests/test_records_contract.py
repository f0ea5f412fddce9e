"""The records contract (`pi_render/manifest/contract.py`), one suite run against every backend:
SQLite (a real file), memory and PostgreSQL (a real server: tests/pg_cluster.py)."""

import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import fill, small_disk

from pi_render.errors import DiskFull, TaskNotFound, TaskStateConflict
from pi_render.manifest.contract import RecordStore
from pi_render.manifest.memory import MemoryRecordStore
from pi_render.manifest.records import TaskRecordManifest
from pi_render.task import lifecycle
from pi_render.task.record import TaskRecord, TaskStatus

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    made: RecordStore
    if request.param == "postgres":
        from pi_render.farm.db import FarmDatabase
        from pi_render.manifest.postgres import PostgresRecordStore

        db = FarmDatabase(request.getfixturevalue("pg_url"))
        db.open()
        made = PostgresRecordStore(db)
        yield made
        made.close()
        db.close()
        return
    made = (TaskRecordManifest(tmp_path / "records.sqlite")
            if request.param == "sqlite" else MemoryRecordStore())  # fmt: skip
    yield made
    made.close()


def record(n: int, **fields: object) -> TaskRecord:
    return TaskRecord.model_validate({"id": f"{n:020x}", "type": "noop", "label": "default",
                                      "created_at": T0, **fields})  # fmt: skip


def test_created_records_are_found_and_unknown_ones_are_not(store: RecordStore) -> None:
    store.create_many([record(1), record(2, type="render")])
    assert store.get(record(1).id).type == "noop" and store.find(record(2).id) is not None
    assert store.find("nope") is None
    with pytest.raises(TaskNotFound):
        store.get("nope")
    assert store.count_by_status()["pending"] == 2


def test_change_is_compare_and_set_with_a_version(store: RecordStore) -> None:
    store.create(record(1))
    assert store.change(record(1).id, lambda r: None) is None  # left as it was
    assert store.get(record(1).id).version == 0
    started = store.change(record(1).id, lambda r: lifecycle.start(r, T0, "w"))
    assert started is not None and started.version == 1 and started.status == "running"
    assert store.change(record(1).id, lambda r: lifecycle.start(r, T0, "w2")) is None  # running
    assert store.get(record(1).id).version == 1


def test_concurrent_changes_lose_no_update(store: RecordStore) -> None:
    store.create(record(1, progress=0.0))
    task_id = record(1).id

    def bump() -> None:
        for _ in range(50):
            store.change(task_id, lambda r: r.model_copy(update={"attempts": r.attempts + 1}))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.get(task_id)
    assert final.attempts == 200 and final.version == 200


def test_listeners_hear_every_commit_and_before_final_comes_first(store: RecordStore) -> None:
    heard: list[tuple[str, str]] = []
    store.add_before_final(lambda r: heard.append(("before", r.status.value)))
    store.add_listener(lambda r: heard.append(("after", r.status.value)))
    store.create(record(1))
    store.change(record(1).id, lambda r: lifecycle.cancel(r, T0, "no"))
    assert heard == [("after", "pending"), ("before", "cancelled"), ("after", "cancelled")]


def test_queries_filter_and_order(store: RecordStore) -> None:
    store.create_many([
        record(1, origin="cron:a@1", submitted_by={"uid": 7, "gid": 7}),
        record(2, type="render", parent=record(1).id, content_key="k"),
        record(3, content_key="k", submitted_by={"uid": 7, "gid": 7}, args={"snapshot_bytes": 10}),
    ])  # fmt: skip
    store.change(record(1).id, lambda r: lifecycle.cancel(r, T0, "x"))
    assert [r.id for r in store.query()] == [record(3).id, record(2).id, record(1).id]
    assert [r.id for r in store.query(limit=1, offset=1)] == [record(2).id]
    assert [r.id for r in store.query(status=TaskStatus.CANCELLED)] == [record(1).id]
    assert [r.id for r in store.query(type_name="render")] == [record(2).id]
    assert [r.id for r in store.with_status(TaskStatus.PENDING)] == [record(2).id, record(3).id]
    assert [r.id for r in store.unfinished()] == [record(2).id, record(3).id]
    assert [r.id for r in store.children(record(1).id)] == [record(2).id]
    assert (store.find_origin("cron:a@1") or record(0)).id == record(1).id
    assert [r.id for r in store.with_content_key("k")] == [record(3).id, record(2).id]
    live = store.live_of_type("noop", (TaskStatus.PENDING,))
    assert [r.id for r in live] == [record(3).id]
    assert store.live_count_of_uid(7) == 1  # the cancelled one is not live
    mine = [store.get(record(1).id), store.get(record(3).id)]
    assert store.bytes_of_uid(7) == sum(len(r.model_dump_json()) for r in mine) + 10
    later = (T0 + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert [r.id for r in store.finished_before(later)] == [record(1).id]
    assert store.finished_before(T0.isoformat().replace("+00:00", "Z")) == []


def test_delete_if_checks_and_deletes_as_one(store: RecordStore) -> None:
    store.create_many([record(1), record(2)])

    def only_final(r: TaskRecord) -> None:
        if not r.status.is_final:
            raise TaskStateConflict("not final")

    with pytest.raises(TaskStateConflict):
        store.delete_if(record(1).id, only_final)
    assert store.find(record(1).id) is not None  # kept
    store.change(record(1).id, lambda r: lifecycle.cancel(r, T0, "x"))
    assert store.delete_if(record(1).id, only_final).id == record(1).id
    assert store.find(record(1).id) is None
    store.delete(record(2).id)
    assert store.query() == []
    with pytest.raises(TaskNotFound):
        store.delete_if("nope", only_final)


def test_what_was_written_survives_reopening(tmp_path: Path) -> None:
    """Durability (backends that persist: SQLite here)."""
    path = tmp_path / "records.sqlite"
    first = TaskRecordManifest(path)
    first.create(record(1))
    first.change(record(1).id, lambda r: lifecycle.start(r, T0, "w"))
    first.close()
    again = TaskRecordManifest(path)
    try:
        got = again.get(record(1).id)
        assert got.status == "running" and got.version == 1 and again.synchronous() == 1
    finally:
        again.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small file system")
def test_a_full_disk_is_a_disk_full_error_and_the_record_stays_as_it_was(tmp_path: Path) -> None:
    """SQLite only: the backend's own error never leaks, and a refused change changed nothing."""
    with small_disk(tmp_path / "disk", "2M") as disk:
        store = TaskRecordManifest(disk / "records.sqlite")
        try:
            store.create(record(1))
            fill(disk)
            with pytest.raises(DiskFull):
                for n in range(2, 10_000):  # until a page is needed that the disk cannot give
                    store.create(record(n, args={"pad": "x" * 2000}))
            with pytest.raises(DiskFull):
                store.change(
                    record(1).id, lambda r: r.model_copy(update={"args": {"pad": "y" * 8000}})
                )
            assert store.get(record(1).id).version == 0 and store.get(record(1).id).args == {}
        finally:
            store.close()
