"""TaskRecordManifest on a real SQLite file: durable JSON, atomic changes, indexed queries."""

import json
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import fill, small_disk

from pi_render.clock import FakeClock
from pi_render.errors import DiskFull, TaskNotFound
from pi_render.manifest.base import DurableJsonTable
from pi_render.manifest.records import TaskIdGenerator, TaskRecordManifest
from pi_render.task import lifecycle
from pi_render.task.record import TaskRecord, TaskStatus


def new_record(ids: TaskIdGenerator, clock: FakeClock, type_name: str = "noop") -> TaskRecord:
    return TaskRecord(id=ids.new(), type=type_name, label="default", created_at=clock.now())


def test_ids_sort_by_submission_even_within_one_microsecond() -> None:
    clock = FakeClock()
    ids = TaskIdGenerator(clock)
    made = [ids.new() for _ in range(100)]
    assert made == sorted(made) and len(set(made)) == 100


def test_records_are_durable_json(tmp_path: Path) -> None:
    clock = FakeClock()
    ids = TaskIdGenerator(clock)
    records = TaskRecordManifest(tmp_path / "r.sqlite")
    record = records.create(new_record(ids, clock))
    records.change(record.id, lambda r: lifecycle.start(r, clock.now(), "w"))
    records.close()
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        (value,) = db.execute("SELECT value FROM tasks WHERE key = ?", (record.id,)).fetchone()
    stored = json.loads(value)
    assert stored["status"] == "running" and stored["attempts"] == 1
    assert TaskRecordManifest(tmp_path / "r.sqlite").get(record.id).worker == "w"


def test_change_is_compare_and_set(tmp_path: Path) -> None:
    clock = FakeClock()
    ids = TaskIdGenerator(clock)
    records = TaskRecordManifest(tmp_path / "r.sqlite")
    record = records.create(new_record(ids, clock))
    assert records.change(record.id, lambda r: lifecycle.cancel(r, clock.now(), "no")) is not None
    assert records.change(record.id, lambda r: lifecycle.start(r, clock.now(), "w")) is None
    assert records.get(record.id).status is TaskStatus.CANCELLED
    with pytest.raises(TaskNotFound):
        records.get("missing")


def test_query_filters_newest_first_and_counts(tmp_path: Path) -> None:
    clock = FakeClock()
    ids = TaskIdGenerator(clock)
    records = TaskRecordManifest(tmp_path / "r.sqlite")
    made = []
    for i in range(6):
        clock.advance(1)
        made.append(records.create(new_record(ids, clock, "noop" if i % 2 else "other")).id)
    records.change(made[0], lambda r: lifecycle.cancel(r, clock.now(), "x"))
    assert [r.id for r in records.query(limit=3)] == made[::-1][:3]
    assert [r.id for r in records.query(type_name="noop")] == [made[5], made[3], made[1]]
    assert [r.id for r in records.query(status=TaskStatus.CANCELLED)] == [made[0]]
    assert records.count_by_status()["pending"] == 5
    assert [r.id for r in records.unfinished()] == made[1:]


def test_queries_use_the_indexes(tmp_path: Path) -> None:
    TaskRecordManifest(tmp_path / "r.sqlite").close()
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT value FROM tasks WHERE json_extract(value, '$.status') = ?"
            " ORDER BY key DESC LIMIT 10",
            ("pending",),
        ).fetchall()
    assert "tasks_status" in str(plan)


def test_records_are_fsynced_on_commit_unless_the_change_is_lazy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlitedict turns synchronous off; a confirmed record must survive a power cut. The
    connection runs at NORMAL (WAL: no fsync at commit) and a durable commit fsyncs the WAL;
    a lazy change (a pure task's start) is committed without one."""
    synced: list[str] = []
    real_fsync = os.fdatasync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fdatasync", fsync)
    path = tmp_path / "r.sqlite"
    clock = FakeClock()
    records = TaskRecordManifest(path)
    made = new_record(TaskIdGenerator(clock), clock)
    assert records.synchronous() == 1  # NORMAL: the WAL's fsync is ours
    wal = f"{path}-wal"
    synced.clear()
    records.create(made)
    assert synced == [wal]
    synced.clear()
    records.change(made.id, lambda r: lifecycle.start(r, clock.now(), "w"), lazy=lambda r: True)
    assert synced == []
    records.change(made.id, lambda r: lifecycle.complete(r, clock.now(), {}), lazy=lambda r: False)
    assert synced == [wal]
    records.close()
    again = TaskRecordManifest(path)
    assert again.get(made.id).status == "completed"
    again.close()


def test_concurrent_changes_are_neither_lost_nor_reordered(tmp_path: Path) -> None:
    """Writers share commits (group commit); read-modify-write must still see every change."""
    clock = FakeClock()
    ids = TaskIdGenerator(clock)
    records = TaskRecordManifest(tmp_path / "r.sqlite")
    record = records.create(new_record(ids, clock))

    def bump() -> None:
        for _ in range(50):
            records.change(record.id, lambda r: r.model_copy(update={"attempts": r.attempts + 1}))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert records.get(record.id).attempts == 200
    records.close()
    assert TaskRecordManifest(tmp_path / "r.sqlite").get(record.id).attempts == 200


def test_the_frame_ledger_forgets_one_task_only(tmp_path: Path) -> None:
    from pi_render.manifest.frames import FrameLedger, FrameOutput

    ledger = FrameLedger(tmp_path / "frames.sqlite")
    for task in ("aaa", "aab"):
        for frame in (-1, 1, 10):
            ledger.put(task, FrameOutput(frame=frame, path=f"/{task}/{frame}", size=1,
                                         sha256="0"))  # fmt: skip
    assert [f.frame for f in ledger.get("aaa")] == [-1, 1, 10]
    ledger.forget_task("aaa")
    assert ledger.get("aaa") == [] and len(ledger.get("aab")) == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small file system")
def test_a_write_a_full_disk_undid_is_reported_to_its_own_writer(tmp_path: Path) -> None:
    """Writer A stages; writer B's commit hits a full disk and undoes the whole transaction, A's
    write included: A must hear so from its own commit, even once the space is back and a later
    writer's commit went through."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        table = DurableJsonTable(disk / "t.sqlite", "t")
        writer_a, writer_b = ThreadPoolExecutor(1), ThreadPoolExecutor(1)  # one thread each
        writer_a.submit(table.stage, "a", "small").result()
        filler = fill(disk)
        writer_b.submit(table.stage, "b", "x" * 200_000).result()
        with pytest.raises(DiskFull, match="disk is full"):
            writer_b.submit(table.commit).result()
        filler.unlink()
        writer_c = ThreadPoolExecutor(1)  # a later writer's commit succeeds first…
        writer_c.submit(table.stage, "c", "later").result()
        writer_c.submit(table.commit).result()
        with pytest.raises(DiskFull):  # …and A must still hear that its own write is gone
            writer_a.submit(table.commit).result()
        assert table.text("a") is None and table.text("b") is None  # nothing half-written
        assert table.text("c") == "later"
        writer_a.submit(table.stage, "a", "again").result()
        writer_a.submit(table.commit).result()  # space is back: writes go through, no reopen
        assert table.text("a") == "again"
        table.close()
        with sqlite3.connect(disk / "t.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


WRITERS = """
import os, sys, threading
from pathlib import Path
from pi_render.manifest.base import DurableJsonTable
folder, life = Path(sys.argv[1]), sys.argv[2]
tables = [DurableJsonTable(folder / f"{name}.sqlite", "t") for name in ("a", "b")]

def write(table, name):
    n = 0
    while True:
        n += 1
        key = f"{life}-{name}-{n:07d}"
        table.stage(key, '"x"')
        table.commit(durable=n % 2 == 0)  # lazy commits too: they must survive a kill as well
        os.write(1, (key + "\\n").encode())  # acknowledged

for index, table in enumerate(tables):
    for thread in range(2):
        threading.Thread(target=write, args=(table, f"{index}{thread}"), daemon=True).start()
threading.Event().wait()
"""


def test_committed_writes_survive_kill_9_and_every_restart_leaves_the_files_intact(
    tmp_path: Path,
) -> None:
    """Writer processes (two tables, two threads each) killed -9 after a random number of
    acknowledged writes, again and again. A version of the table that opened and closed a
    connection just before its own (sqlitedict's) lost whole lives of writes, or corrupted
    the database, within a few kills."""
    import random
    import select
    import signal
    import subprocess
    import sys

    from conftest import assert_databases_intact

    rng = random.Random(7)
    acknowledged: set[str] = set()
    for life in range(8):
        child = subprocess.Popen([sys.executable, "-c", WRITERS, str(tmp_path), f"{life:02d}"],
                                 stdout=subprocess.PIPE)  # fmt: skip
        assert child.stdout is not None
        want, seen, pending = rng.randrange(50, 3000), 0, b""
        while seen < want:
            ready, _, _ = select.select([child.stdout], [], [], 30)
            assert ready, "the writers stopped acknowledging"
            chunk = os.read(child.stdout.fileno(), 65536)
            assert chunk, "the writers died"
            pending += chunk
            *lines, pending = pending.split(b"\n")
            acknowledged.update(line.decode() for line in lines)
            seen += len(lines)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert_databases_intact(tmp_path)
        stored: set[str] = set()
        for name in ("a", "b"):
            with sqlite3.connect(tmp_path / f"{name}.sqlite") as db:
                stored.update(key for (key,) in db.execute("SELECT key FROM t"))
            db.close()
        lost = acknowledged - stored
        assert not lost, f"life {life}: {len(lost)} acknowledged writes lost, e.g. {min(lost)}"


def test_the_records_file_is_a_sqlitedict_table(tmp_path: Path) -> None:
    """The writes bypass sqlitedict, the format does not: scripts can read records with it."""
    from sqlitedict import SqliteDict

    clock = FakeClock()
    records = TaskRecordManifest(tmp_path / "r.sqlite")
    made = records.create(new_record(TaskIdGenerator(clock), clock))
    with SqliteDict(str(tmp_path / "r.sqlite"), tablename="tasks", flag="r", journal_mode="WAL",
                    decode=json.loads) as table:  # fmt: skip
        assert list(table.keys()) == [made.id]
        assert TaskRecord.model_validate(table[made.id]) == made
    records.close()


def test_a_write_undone_by_another_threads_failure_fails_its_writers_later_commit(
    tmp_path: Path,
) -> None:
    """A thread's writes since its last commit stand or fall together: when another thread's
    failure rolls the first back, the thread's commit raises, even if its later write (in a new
    transaction) went through."""
    from pi_render.errors import StorageError
    from pi_render.manifest.writer import TicketedWriter

    conn = sqlite3.connect(tmp_path / "w.sqlite", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, value TEXT)")
    writer = TicketedWriter(conn, lambda: None)
    first_written, failed = threading.Event(), threading.Event()

    def other() -> None:
        first_written.wait(10)
        with pytest.raises(StorageError):
            writer.write("INSERT INTO no_such_table VALUES (1)")  # undoes the open transaction
        failed.set()

    helper = threading.Thread(target=other)
    helper.start()
    writer.write("INSERT INTO t VALUES ('a', '1')")
    first_written.set()
    failed.wait(10)
    writer.write("INSERT INTO t VALUES ('b', '2')")  # a new transaction, which commits
    with pytest.raises(StorageError):
        writer.commit()
    helper.join()
    assert [key for (key,) in conn.execute("SELECT key FROM t")] == ["b"]


def test_after_a_failed_sync_no_later_sync_is_trusted(tmp_path: Path) -> None:
    """Linux reports a lost write-back once; a sync that succeeds after one that failed proves
    nothing about what the failed one covered."""
    import errno

    from pi_render.errors import StorageError
    from pi_render.manifest.writer import TicketedWriter

    failures = [OSError(errno.EIO, "I/O error")]

    def sync() -> None:
        if failures:
            raise failures.pop()

    conn = sqlite3.connect(tmp_path / "w.sqlite", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, value TEXT)")
    writer = TicketedWriter(conn, sync)
    writer.write("INSERT INTO t VALUES ('a', '1')")
    with pytest.raises(StorageError, match="failed to sync"):
        writer.commit()
    writer.write("INSERT INTO t VALUES ('b', '2')")
    with pytest.raises(StorageError, match="failed to sync"):
        writer.commit()  # the sync itself would succeed now
    writer.write("INSERT INTO t VALUES ('c', '3')")
    writer.commit(durable=False)  # committed is all a lazy write asks
