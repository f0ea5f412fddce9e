"""The queue contract: what the router and the workers rely on, whatever stores the items. The
SQLite backend (`queue/sqlite.py`) and the in-memory one (`queue/memory.py`) both pass the one
contract suite (`tests/test_queue_contract.py`); a PostgreSQL backend will have to as well."""

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Hashable, Protocol

from pi_render.task.record import Priority


@dataclass(frozen=True)
class QueueItem:
    """One delivery of a task: which task, from which priority lane, and a receipt that only the
    queue that made it understands (ack, nack and extend take the delivery back whole)."""

    task_id: str
    priority: Priority
    receipt: Hashable
    redelivered: bool = False  # an earlier delivery's lease ran out (its holder may be gone)


Delivery = QueueItem  # the contract's name for it


class WaitingRoom:
    """What every backend in this process shares: one condition that `get` waits on and that
    puts, pauses and stops wake."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self._wakes = 0  # counts wake-ups: a wait begun after one came does not miss it
        self.paused = False  # accepting, but not handing out

    def wake_one(self) -> None:
        """Something was put (on this host or another): one waiting `get` looks again."""
        with self._cond:
            self._wakes += 1
            self._cond.notify()

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self.paused = paused
            self._cond.notify_all()

    def wake_all(self) -> None:
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def _shut(self) -> None:
        """Every `get` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class TaskQueue(Protocol):
    """A durable queue of task ids, one lane per priority, delivered at least once.

    Guarantees every backend gives:
    - **Durable when the call returns**: a `put` (or `ack`) that returned survives a killed
      process; a delivery that was never acked is delivered again after a restart.
    - **Order**: high before normal; within a lane, the order of `put` (a nacked delivery keeps
      its place).
    - **Delayed puts**: a put with `not_before` is not delivered before that (wall) time; it
      waits durably until then (a retry is a delayed put).
    - **Leases**: with a lease (`lease_s`), a delivery that is neither acked, nacked nor extended
      within it is delivered again (to whichever worker asks): a dead worker on another host
      loses nothing. Without one (None), a delivery is held until ack, nack or restart.
    - **Paused** queues accept puts and deliver nothing until resumed.
    - Errors: only StorageError (DiskFull when the disk is full); a failed call changed nothing.
    """

    def put(self, task_id: str, priority: Priority, not_before: datetime | None = None,
            needs: Sequence[str] = (), avoid: Sequence[str] = ()) -> None:  # fmt: skip
        """Queue `task_id`; with `not_before`, not to be delivered before that time. `needs`
        (tags a host must offer) and `avoid` (hosts that must not take it) matter where several
        hosts share the queue (farm mode); one host's queues accept and ignore them (its pools
        were checked at submit). A put over a waiting row keeps what that row needed and adds
        to whom it avoids."""

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """The next due delivery, waiting up to `timeout` for one (a put wakes the wait); None
        when none came, the queue is paused or closed, or `wake_all` was called."""

    def extend(self, item: QueueItem) -> bool:
        """Renew the delivery's lease (a worker does so with each heartbeat); False when the
        delivery is no longer this worker's (its lease ran out): it must stop."""

    def ack(self, item: QueueItem) -> None:
        """Done with: never delivered again."""

    def nack(self, item: QueueItem) -> None:
        """Given back: delivered again, in its original place."""

    def remove(self, task_id: str) -> bool:
        """Take a waiting (or delayed) task out; False when none waits (taken, or unknown)."""

    def contains(self, task_id: str) -> bool:
        """Whether the task waits here (delayed included; deliveries out do not count)."""

    def depth(self) -> dict[str, int]:
        """Waiting per lane, plus `delayed` and `taken` (delivered, not yet acked)."""

    def set_paused(self, paused: bool) -> None: ...

    @property
    def paused(self) -> bool: ...

    def maintain(self) -> None:
        """Housekeeping (give space back); safe at any time."""

    def wake_all(self) -> None:
        """Wake every `get` that waits (each returns None): workers that are told to stop."""

    def close(self) -> None: ...
