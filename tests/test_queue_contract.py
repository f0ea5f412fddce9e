"""The queue contract (`pi_render/queue/base.py`), one suite run against every backend: SQLite
(real files), memory and PostgreSQL (a real server: tests/pg_cluster.py)."""

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import fill, small_disk

from pi_render.clock import FakeClock
from pi_render.errors import DiskFull
from pi_render.queue.base import TaskQueue
from pi_render.queue.memory import MemoryTaskQueue
from pi_render.queue.sqlite import SqliteTaskQueue
from pi_render.task.record import Priority

HIGH, NORMAL = Priority.HIGH, Priority.NORMAL
Make = Callable[..., TaskQueue]


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    made: list[TaskQueue] = []
    db = None
    if request.param == "postgres":
        from pi_render.farm.db import FarmDatabase

        db = FarmDatabase(request.getfixturevalue("pg_url"))
        db.open()

    def make(clock: FakeClock, lease_s: float | None = None) -> TaskQueue:
        queue: TaskQueue
        if request.param == "sqlite":
            queue = SqliteTaskQueue(tmp_path / "q.db", clock=clock, lease_s=lease_s)
        elif db is not None:
            from pi_render.queue.postgres import PostgresTaskQueue

            queue = PostgresTaskQueue(db, "default", "host-1", None, lease_s=lease_s, clock=clock)
        else:
            queue = MemoryTaskQueue(clock, lease_s=lease_s)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()
    if db is not None:
        db.close()


def ids(queue: TaskQueue, n: int) -> list[str]:
    got = [queue.get(timeout=0) for _ in range(n)]
    return [item.task_id for item in got if item is not None]


def test_high_first_then_put_order_and_a_nack_keeps_its_place(make: Make) -> None:
    queue = make(FakeClock())
    for name, lane in [("n1", NORMAL), ("n2", NORMAL), ("h1", HIGH), ("n3", NORMAL)]:
        queue.put(name, lane)
    first = queue.get(timeout=0)
    assert first is not None and first.task_id == "h1"
    second = queue.get(timeout=0)
    assert second is not None and second.task_id == "n1"
    queue.nack(second)
    assert ids(queue, 4) == ["n1", "n2", "n3"]
    assert queue.get(timeout=0) is None


def test_a_delayed_put_waits_for_its_time_then_comes(make: Make) -> None:
    clock = FakeClock()
    queue = make(clock)
    queue.put("later", NORMAL, not_before=clock.now() + timedelta(seconds=30))
    queue.put("now", NORMAL, not_before=clock.now() - timedelta(seconds=1))  # already due
    assert ids(queue, 2) == ["now"]
    assert queue.contains("later") and queue.depth()["delayed"] == 1
    clock.advance(29)
    assert queue.get(timeout=0) is None
    clock.advance(1)
    assert ids(queue, 1) == ["later"] and queue.depth()["delayed"] == 0


def test_a_delayed_task_put_again_comes_once_at_its_new_time(make: Make) -> None:
    clock = FakeClock()
    queue = make(clock)
    queue.put("t", NORMAL, not_before=clock.now() + timedelta(seconds=30))
    queue.put("t", NORMAL, not_before=clock.now() + timedelta(seconds=5))
    assert queue.depth()["delayed"] == 1
    clock.advance(5)
    assert ids(queue, 2) == ["t"]
    clock.advance(30)
    assert queue.get(timeout=0) is None and queue.depth()["delayed"] == 0


def test_a_delayed_task_can_be_removed_before_its_time(make: Make) -> None:
    clock = FakeClock()
    queue = make(clock)
    queue.put("later", HIGH, not_before=clock.now() + timedelta(seconds=5))
    assert queue.remove("later") and not queue.contains("later")
    clock.advance(10)
    assert queue.get(timeout=0) is None


def test_a_lease_that_runs_out_delivers_again_and_extend_keeps_it(make: Make) -> None:
    clock = FakeClock()
    queue = make(clock, lease_s=60)
    queue.put("a", NORMAL)
    queue.put("b", NORMAL)
    a = queue.get(timeout=0)
    b = queue.get(timeout=0)
    assert a is not None and b is not None
    clock.advance(40)
    queue.extend(b)  # b's worker still beats; a's died
    clock.advance(30)
    again = queue.get(timeout=0)
    assert again is not None and again.task_id == "a"  # a ran out, b did not
    assert queue.get(timeout=0) is None
    queue.ack(a)  # the dead worker's late ack names its own delivery, not the new one
    queue.nack(a)
    queue.extend(a)
    assert queue.depth()["taken"] == 2 and queue.get(timeout=0) is None
    queue.ack(b)
    queue.ack(again)
    assert queue.depth()["taken"] == 0 and queue.get(timeout=0) is None


def test_without_a_lease_a_delivery_is_held_until_ack(make: Make) -> None:
    clock = FakeClock()
    queue = make(clock)
    queue.put("a", NORMAL)
    item = queue.get(timeout=0)
    clock.advance(86400)
    assert item is not None and queue.get(timeout=0) is None
    assert queue.depth()["taken"] == 1
    queue.ack(item)
    assert queue.depth()["taken"] == 0


def test_remove_takes_only_waiting_tasks(make: Make) -> None:
    queue = make(FakeClock())
    queue.put("a", NORMAL)
    queue.put("b", NORMAL)
    taken = queue.get(timeout=0)
    assert taken is not None and taken.task_id == "a"
    assert not queue.remove("a")  # a worker has it
    assert queue.remove("b") and not queue.remove("b")
    assert not queue.contains("b") and queue.get(timeout=0) is None


def test_a_paused_queue_accepts_but_delivers_nothing(make: Make) -> None:
    queue = make(FakeClock())
    queue.set_paused(True)
    queue.put("a", HIGH)
    assert queue.paused and queue.get(timeout=0) is None and queue.contains("a")
    queue.set_paused(False)
    assert ids(queue, 1) == ["a"]


def test_what_was_put_and_not_acked_survives_a_restart(tmp_path: Path) -> None:
    """Durability (backends that persist: SQLite here)."""
    clock = FakeClock()
    queue = SqliteTaskQueue(tmp_path / "q.db", clock=clock)
    for name in ("a", "b"):
        queue.put(name, NORMAL)
    queue.put("later", HIGH, not_before=clock.now() + timedelta(seconds=10))
    taken = queue.get(timeout=0)
    assert taken is not None
    queue.ack(taken)
    assert queue.get(timeout=0) is not None  # b: delivered, never acked (a crash)
    queue.close()
    reopened = SqliteTaskQueue(tmp_path / "q.db", clock=clock)
    try:
        assert ids(reopened, 2) == ["b"] and reopened.contains("later")
        clock.advance(10)
        assert ids(reopened, 1) == ["later"]
    finally:
        reopened.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small file system")
def test_a_full_disk_is_a_disk_full_error_and_changes_nothing(tmp_path: Path) -> None:
    """SQLite only: the backend's own error never leaks (DiskFull, a StorageError)."""
    with small_disk(tmp_path / "disk", "2M") as disk:
        queue = SqliteTaskQueue(disk / "q.db", clock=FakeClock())
        try:
            queue.put("before", NORMAL)
            fill(disk)
            with pytest.raises(DiskFull):
                for n in range(10_000):  # until a page is needed that the disk cannot give
                    queue.put(f"t{n:05}-" + "x" * 200, NORMAL)
            assert queue.contains("before")
        finally:
            queue.close()
