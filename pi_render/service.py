"""TaskService: what every interface (API, CLI, cron) may do with tasks, checked at the edge."""

import logging
from typing import Any

from pi_render.clock import Clock
from pi_render.errors import PiRenderError, TaskStateConflict
from pi_render.manifest.records import TaskIdGenerator, TaskRecordManifest
from pi_render.processor.context import StopReason
from pi_render.queue.router import Router
from pi_render.task import lifecycle
from pi_render.task.base import task_type
from pi_render.task.record import Priority, TaskRecord, TaskStatus
from pi_render.workers.running import RunningTasks

log = logging.getLogger(__name__)


class TaskService:
    """Submit, look up, list, cancel. The record is durable before the queue sees the task."""

    def __init__(
        self,
        records: TaskRecordManifest,
        router: Router,
        running: RunningTasks,
        clock: Clock,
    ) -> None:
        self.records = records
        self.router = router
        self.running = running
        self.clock = clock
        self.ids = TaskIdGenerator(clock)

    def submit(
        self,
        type_name: str,
        args: Any,
        priority: Priority = Priority.NORMAL,
        label: str | None = None,
    ) -> TaskRecord:
        """Validate, record, enqueue.

        Raises:
            UnknownTaskType, InvalidTaskArgs, NoConsumer: nothing is written then.
        """
        return self.submit_many([(type_name, args, priority, label)])[0]

    def submit_many(
        self, requests: list[tuple[str, Any, Priority, str | None]]
    ) -> list[TaskRecord]:
        """All or nothing: every request is validated before any is written; one commit."""
        records = []
        for index, (type_name, args, priority, label) in enumerate(requests):
            try:
                records.append(self._new_record(type_name, args, priority, label))
            except PiRenderError as exc:
                if len(requests) > 1:
                    exc.args = (f"task {index}: {exc}",)
                raise
        self.records.create_many(records)
        for record in records:
            self.router.put(record)
            log.debug("task submitted", extra={"task_id": record.id, "type": record.type})
        return records

    def _new_record(
        self, type_name: str, args: Any, priority: Priority, label: str | None
    ) -> TaskRecord:
        cls = task_type(type_name)
        parsed = cls.parse_args(args)
        label = label or cls.default_label
        self.router.queue_for(label)  # refuse before writing anything
        return TaskRecord(
            id=self.ids.new(),
            type=type_name,
            label=label,
            priority=priority,
            args=parsed.model_dump(mode="json"),
            created_at=self.clock.now(),
        )

    def get(self, task_id: str) -> TaskRecord:
        return self.records.get(task_id)

    def list(
        self,
        status: TaskStatus | None = None,
        type_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[TaskRecord]:
        return self.records.query(status, type_name, limit, offset)

    def cancel(self, task_id: str) -> TaskRecord:
        """A pending task is cancelled and leaves its queue; a running one is asked to stop.

        Raises:
            TaskNotFound; TaskStateConflict when the task has already ended.
        """
        now = self.clock.now()
        with self.records.lock:
            record = self.records.latest(task_id)
            if record.status.is_final:
                raise TaskStateConflict(
                    f"task {task_id} has already ended ({record.status.value}); nothing to cancel"
                )
            if record.status is TaskStatus.RUNNING:
                self.running.request_stop(task_id, StopReason.CANCEL)
                log.info("cancel requested for running task", extra={"task_id": task_id})
                return record
            cancelled = self.records.change(
                task_id, lambda r: lifecycle.cancel(r, now, "cancelled before it started")
            )
        queue = self.router.locate(task_id)
        if queue is not None:
            queue.remove(task_id)  # if a worker took it meanwhile, it sees the final record
        log.info("pending task cancelled", extra={"task_id": task_id})
        return cancelled or self.records.get(task_id)
