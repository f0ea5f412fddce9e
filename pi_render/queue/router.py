"""The router: one queue per routing label, chosen from the task's record."""

import json
import os
import re
import threading
from collections.abc import Callable
from datetime import datetime

from pi_render.clock import Clock
from pi_render.config import Settings
from pi_render.errors import NoConsumer
from pi_render.queue.base import TaskQueue
from pi_render.task.record import TaskRecord

QueueFactory = Callable[[str], TaskQueue]
LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a label → its queue (the backend decides where)


def sqlite_queues(settings: Settings, clock: Clock | None = None) -> QueueFactory:
    """The embedded default: one SQLite file per label under the data dir."""
    from pi_render.queue.sqlite import SqliteTaskQueue

    return lambda label: SqliteTaskQueue(settings.paths.queue(label), clock=clock,
                                         prune_every=settings.prune_acked_every)  # fmt: skip


def needed_tags(record: TaskRecord) -> list[str]:
    """The tags a host must offer to take the task (farm claims filter on them): its own
    `requires.tags`, and `gpu` when it needs one."""
    requires = record.requires or {}
    tags = [str(tag) for tag in requires.get("tags") or []]
    return sorted({*tags, "gpu"} if requires.get("gpu") else set(tags))


class Router:
    """Owns the label queues; a label without configured workers gets no queue and no tasks."""

    def __init__(self, settings: Settings, queue_factory: QueueFactory | None = None,
                 clock: Clock | None = None, open_labels: bool = False) -> None:  # fmt: skip
        """`open_labels` (farm mode): a label this host has no workers for still gets a queue
        when a task names it, since other hosts may consume it."""
        self._paused_file = settings.paths.paused_labels
        make = queue_factory or sqlite_queues(settings, clock)
        self._make = make if open_labels else None
        self._lock = threading.Lock()
        self.queues: dict[str, TaskQueue] = {
            label: make(label) for label, count in settings.workers.items() if count > 0
        }
        for label in self._load_paused():
            if label in self.queues:
                self.queues[label].set_paused(True)

    def set_paused(self, label: str, paused: bool) -> None:
        """Pause or resume a label; it survives restarts. Raises NoConsumer for unknown ones."""
        self.queue_for(label).set_paused(paused)
        labels = sorted(name for name, queue in self.queues.items() if queue.paused)
        temp = self._paused_file.with_suffix(".tmp")
        temp.write_text(json.dumps(labels))
        os.replace(temp, self._paused_file)

    def _load_paused(self) -> list[str]:
        try:
            labels = json.loads(self._paused_file.read_text())
        except (OSError, ValueError):
            return []
        return [str(label) for label in labels] if isinstance(labels, list) else []

    def queue_for(self, label: str) -> TaskQueue:
        """Raises NoConsumer when no worker consumes that label."""
        try:
            return self.queues[label]
        except KeyError:
            if self._make is not None and LABEL.fullmatch(label):
                with self._lock:
                    if label not in self.queues:
                        self.queues[label] = self._make(label)
                    return self.queues[label]
            served = ", ".join(sorted(self.queues)) or "none"
            raise NoConsumer(
                f"no workers consume routing label {label!r} (labels with workers: {served}); "
                f"add it under [workers] in the config"
            ) from None

    def put(self, record: TaskRecord, not_before: datetime | None = None) -> None:
        self.queue_for(record.label).put(record.id, record.priority, not_before,
                                         needs=needed_tags(record))  # fmt: skip

    def remove(self, task_id: str) -> bool:
        """Take a waiting task off whichever queue holds it; False when none does (a worker has
        it, or it was never queued)."""
        queue = self.locate(task_id)
        return queue is not None and queue.remove(task_id)

    def locate(self, task_id: str) -> TaskQueue | None:
        for queue in list(self.queues.values()):
            if queue.contains(task_id):
                return queue
        return None

    def holds(self, task_id: str) -> TaskQueue | None:
        """The queue with a row of the task, waiting or held by a worker (farm recovery: a
        row another host holds is there, and must not be put over)."""
        for queue in list(self.queues.values()):
            knows = getattr(queue, "knows", queue.contains)
            if knows(task_id):
                return queue
        return None

    def close(self) -> None:
        for queue in list(self.queues.values()):
            queue.close()
