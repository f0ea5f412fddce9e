"""The queue contract in memory: the second implementation the contract suite runs against, and
a queue for tests and tools that need no file. Nothing survives the process: "durable" here
means only "for as long as the object lives"."""

import heapq
import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from pi_render.clock import Clock, SystemClock
from pi_render.queue.base import QueueItem, WaitingRoom
from pi_render.task.record import Priority

LANES = (Priority.HIGH, Priority.NORMAL)


class MemoryTaskQueue(WaitingRoom):
    def __init__(self, clock: Clock | None = None, lease_s: float | None = None) -> None:
        self.clock, self.lease_s = clock or SystemClock(), lease_s
        super().__init__()
        self._seq = itertools.count()  # a put's place in its lane (a nack keeps it)
        self._lanes: dict[Priority, list[tuple[int, str]]] = {lane: [] for lane in LANES}
        self._delayed: dict[str, tuple[float, int, Priority]] = {}
        self._taken: dict[int, tuple[str, Priority, float | None, int]] = {}
        self._deliveries = itertools.count(1)

    def put(self, task_id: str, priority: Priority, not_before: datetime | None = None,
            needs: Sequence[str] = (), avoid: Sequence[str] = ()) -> None:  # fmt: skip
        with self._cond:
            seq = next(self._seq)
            due = not_before.timestamp() if not_before is not None else None
            if due is not None and due > self.clock.now().timestamp():
                self._delayed[task_id] = (due, seq, priority)
            else:
                heapq.heappush(self._lanes[priority], (seq, task_id))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> QueueItem | None:
        with self._cond:
            item = self._pop()
            if item is None and not self._closed:
                wait = timeout
                if self._delayed and not self.paused:  # paused: `set_paused` wakes us
                    due = min(d for d, _, _ in self._delayed.values())
                    until = max(0.0, due - self.clock.now().timestamp())
                    wait = until if wait is None else min(wait, until)
                self._cond.wait(wait)
                item = self._pop()
            return item

    def _pop(self) -> QueueItem | None:
        if self._closed or self.paused:
            return None
        now = self.clock.now().timestamp()
        for task_id, (due, seq, lane) in list(self._delayed.items()):
            if due <= now:
                del self._delayed[task_id]
                heapq.heappush(self._lanes[lane], (seq, task_id))
        mono = self.clock.monotonic()
        for seq, (task_id, lane, end, _) in list(self._taken.items()):
            if end is not None and end <= mono:
                self._give_back(seq)
        for lane in LANES:
            if self._lanes[lane]:
                seq, task_id = heapq.heappop(self._lanes[lane])
                end = None if self.lease_s is None else mono + self.lease_s
                number = next(self._deliveries)
                self._taken[seq] = (task_id, lane, end, number)
                return QueueItem(task_id=task_id, priority=lane, receipt=(seq, number))
        return None

    def _give_back(self, seq: int) -> None:
        task_id, lane, _, _ = self._taken.pop(seq)
        heapq.heappush(self._lanes[lane], (seq, task_id))

    def _current(self, item: QueueItem) -> int | None:
        """This delivery's place, while it is still out (a receipt names one delivery)."""
        seq, number = cast(tuple[int, int], item.receipt)  # ours: made by _pop
        taken = self._taken.get(seq)
        return seq if taken is not None and taken[3] == number else None

    def extend(self, item: QueueItem) -> bool:
        with self._cond:
            seq = self._current(item)
            if seq is not None and self.lease_s is not None:
                task_id, lane, _, number = self._taken[seq]
                self._taken[seq] = (task_id, lane, self.clock.monotonic() + self.lease_s, number)
            return seq is not None

    def ack(self, item: QueueItem) -> None:
        with self._cond:
            seq = self._current(item)
            if seq is not None:
                del self._taken[seq]

    def nack(self, item: QueueItem) -> None:
        with self._cond:
            seq = self._current(item)
            if seq is not None:
                self._give_back(seq)
            self._cond.notify()

    def remove(self, task_id: str) -> bool:
        with self._cond:
            if self._delayed.pop(task_id, None) is not None:
                return True
            for lane in LANES:
                kept = [entry for entry in self._lanes[lane] if entry[1] != task_id]
                if len(kept) != len(self._lanes[lane]):
                    heapq.heapify(kept)
                    self._lanes[lane] = kept
                    return True
            return False

    def contains(self, task_id: str) -> bool:
        with self._cond:
            waiting = any(t == task_id for lane in LANES for _, t in self._lanes[lane])
            return waiting or task_id in self._delayed

    def depth(self) -> dict[str, int]:
        with self._cond:
            waiting = {lane.value: len(self._lanes[lane]) for lane in LANES}
            return {**waiting, "delayed": len(self._delayed), "taken": len(self._taken)}

    def maintain(self) -> None:
        """Nothing to give back: memory is freed as items are acked."""

    def close(self) -> None:
        self._shut()
