"""SqliteTaskQueue on real SQLite files: order, priority, ack, redelivery, pruning, wake-up."""

import sqlite3
import threading
import time
from pathlib import Path

from pi_render.queue.sqlite import SqliteTaskQueue
from pi_render.task.record import Priority


def drain(queue: SqliteTaskQueue) -> list[str]:
    ids = []
    while (item := queue.get(timeout=0)) is not None:
        ids.append(item.task_id)
        queue.ack(item)
    return ids


def test_fifo_with_high_lane_first(tmp_path: Path) -> None:
    queue = SqliteTaskQueue(tmp_path / "q.db")
    for name in ("n1", "n2"):
        queue.put(name, Priority.NORMAL)
    queue.put("h1", Priority.HIGH)
    queue.put("n3", Priority.NORMAL)
    queue.put("h2", Priority.HIGH)
    assert queue.depth() == {"high": 2, "normal": 3, "delayed": 0, "taken": 0}
    assert drain(queue) == ["h1", "h2", "n1", "n2", "n3"]


def test_items_survive_reopen_and_unacked_ones_come_back_in_order(tmp_path: Path) -> None:
    queue = SqliteTaskQueue(tmp_path / "q.db")
    for i in range(5):
        queue.put(f"t{i}", Priority.NORMAL)
    first, second = queue.get(timeout=0), queue.get(timeout=0)
    assert first is not None and second is not None
    queue.ack(first)  # t0 done; t1 taken but never acked (the daemon "dies")
    del queue  # no close: as after kill -9
    reopened = SqliteTaskQueue(tmp_path / "q.db")
    assert reopened.contains("t1") and not reopened.contains("t0")
    assert drain(reopened) == ["t1", "t2", "t3", "t4"]


def test_rows_are_json_on_disk(tmp_path: Path) -> None:
    queue = SqliteTaskQueue(tmp_path / "q.db")
    queue.put("abc", Priority.HIGH)
    queue.close()
    with sqlite3.connect(tmp_path / "q.db") as db:
        (data,) = db.execute("SELECT data FROM ack_queue_high").fetchone()
    assert bytes(data) == b'{"id": "abc"}'


def test_remove_takes_a_waiting_item_out_but_not_a_taken_one(tmp_path: Path) -> None:
    queue = SqliteTaskQueue(tmp_path / "q.db")
    queue.put("a", Priority.NORMAL)
    queue.put("b", Priority.NORMAL)
    taken = queue.get(timeout=0)
    assert taken is not None and taken.task_id == "a"
    assert queue.remove("a") is False
    assert queue.remove("b") is True
    assert queue.remove("b") is False
    assert queue.depth() == {"high": 0, "normal": 0, "delayed": 0, "taken": 1}
    queue.ack(taken)
    assert queue.get(timeout=0) is None


def test_nack_puts_an_item_back_in_its_place(tmp_path: Path) -> None:
    queue = SqliteTaskQueue(tmp_path / "q.db")
    for name in ("a", "b"):
        queue.put(name, Priority.NORMAL)
    item = queue.get(timeout=0)
    assert item is not None
    queue.nack(item)
    assert drain(queue) == ["a", "b"]


def test_acked_rows_are_pruned(tmp_path: Path) -> None:
    queue = SqliteTaskQueue(tmp_path / "q.db", prune_every=10)
    for i in range(25):
        queue.put(f"t{i}", Priority.NORMAL)
    assert len(drain(queue)) == 25
    assert queue.acked_rows() == 5  # pruned at the 10th and 20th ack
    queue.close()
    assert SqliteTaskQueue(tmp_path / "q.db").acked_rows() == 0  # and on every open


def test_put_wakes_a_waiting_get_at_once(tmp_path: Path) -> None:
    queue = SqliteTaskQueue(tmp_path / "q.db")
    got: list[float] = []
    waiting = threading.Event()

    def consumer() -> None:
        waiting.set()
        item = queue.get(timeout=30)
        got.append(time.monotonic())
        assert item is not None and item.task_id == "wake"

    thread = threading.Thread(target=consumer)
    thread.start()
    waiting.wait(5)
    put_at = time.monotonic()
    queue.put("wake", Priority.NORMAL)
    thread.join(10)
    assert got and got[0] - put_at < 0.5  # woken by put, not by a polling tick


def test_close_releases_waiting_consumers(tmp_path: Path) -> None:
    queue = SqliteTaskQueue(tmp_path / "q.db")
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(queue.get(timeout=30)))
    thread.start()
    queue.close()
    thread.join(10)
    assert results == [None]
