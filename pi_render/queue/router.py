"""The router: one queue per routing label, chosen from the task's record."""

from pi_render.config import Settings
from pi_render.errors import NoConsumer
from pi_render.queue.sqlite import SqliteTaskQueue
from pi_render.task.record import TaskRecord


class Router:
    """Owns the label queues; a label without configured workers gets no queue and no tasks."""

    def __init__(self, settings: Settings) -> None:
        self.queues: dict[str, SqliteTaskQueue] = {
            label: SqliteTaskQueue(
                settings.queue_dir / f"{label}.db", prune_every=settings.prune_acked_every
            )
            for label, count in settings.workers.items()
            if count > 0
        }

    def queue_for(self, label: str) -> SqliteTaskQueue:
        """Raises NoConsumer when no worker consumes that label."""
        try:
            return self.queues[label]
        except KeyError:
            served = ", ".join(sorted(self.queues)) or "none"
            raise NoConsumer(
                f"no workers consume routing label {label!r} (labels with workers: {served}); "
                f"add it under [workers] in the config"
            ) from None

    def put(self, record: TaskRecord) -> None:
        self.queue_for(record.label).put(record.id, record.priority)

    def locate(self, task_id: str) -> SqliteTaskQueue | None:
        for queue in self.queues.values():
            if queue.contains(task_id):
                return queue
        return None

    def close(self) -> None:
        for queue in self.queues.values():
            queue.close()
