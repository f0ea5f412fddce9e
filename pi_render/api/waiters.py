"""Long-poll support: asyncio futures that worker threads resolve when a task ends."""

import asyncio
import threading
from collections import defaultdict

from pi_render.task.record import TaskRecord


class FinalStateWaiters:
    """Register as a records listener; `wait` returns when the task ends or the timeout passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]]
        self._waiting = defaultdict(set)

    def __call__(self, record: TaskRecord) -> None:
        if not record.status.is_final:
            return
        with self._lock:
            waiting = self._waiting.pop(record.id, set())
        for loop, future in waiting:
            loop.call_soon_threadsafe(_resolve, future)

    def register(self, task_id: str) -> asyncio.Future[None]:
        """Register before reading the record, so an end between the read and the wait is seen."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiting[task_id].add((loop, future))
        return future

    def unregister(self, task_id: str, future: asyncio.Future[None]) -> None:
        with self._lock:
            entries = self._waiting.get(task_id)
            if entries is not None:
                entries.discard((future.get_loop(), future))
                if not entries:
                    del self._waiting[task_id]

    async def wait(self, future: asyncio.Future[None], timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
