"""The queue contract the router and workers rely on, whatever stores the items."""

from dataclasses import dataclass
from typing import Protocol

from pi_render.task.record import Priority


@dataclass(frozen=True)
class QueueItem:
    """One delivery of a task: which task, from which priority lane, and the row to ack."""

    task_id: str
    priority: Priority
    row_id: int


class TaskQueue(Protocol):
    """A durable FIFO per priority lane with ack; `get` blocks until `put` wakes it."""

    def put(self, task_id: str, priority: Priority) -> None: ...

    def get(self, timeout: float | None = None) -> QueueItem | None: ...

    def ack(self, item: QueueItem) -> None: ...

    def nack(self, item: QueueItem) -> None: ...

    def remove(self, task_id: str) -> bool: ...

    def contains(self, task_id: str) -> bool: ...

    def depth(self) -> dict[str, int]: ...

    def wake_all(self) -> None: ...

    def close(self) -> None: ...
