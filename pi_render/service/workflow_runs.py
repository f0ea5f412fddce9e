"""Workflows as a service: each step is submitted as the child of the one before, as the
caller; all or nothing."""

import logging
from collections.abc import Callable
from typing import Any

from pi_render.errors import PiRenderError, TaskNotFound
from pi_render.identity import Caller
from pi_render.manifest.contract import RecordStore
from pi_render.manifest.records import TaskIdGenerator
from pi_render.service.submit import Submitter
from pi_render.task.record import Priority, TaskRecord
from pi_render.workflows import Workflow, WorkflowRun, WorkflowRuns, aggregate, fill

log = logging.getLogger(__name__)


class WorkflowService:
    def __init__(self, records: RecordStore, submitter: Submitter,
                 ids: TaskIdGenerator, runs: WorkflowRuns | None,
                 cancel: Callable[[str], TaskRecord]) -> None:  # fmt: skip
        self.records, self.submitter, self.ids = records, submitter, ids
        self.runs, self.cancel = runs, cancel

    def start(self, workflow: Workflow, file: str, caller: Caller | None = None) -> WorkflowRun:
        if self.runs is None:
            raise PiRenderError("workflows are not available in this service")
        run_id = self.ids.new()
        made: list[TaskRecord] = []
        try:
            for index, step in enumerate(workflow.steps):
                extra = {"origin": f"workflow:{run_id}:{index}",
                         "parent": made[-1].id if made else None}  # fmt: skip
                request = (step.type, fill(step.args, file), Priority.NORMAL, step.label)
                answer = self.submitter.submit_many([request], extra=extra, force=True,
                                                    caller=caller)[0]  # fmt: skip
                made.append(answer.record)
        except PiRenderError as exc:
            for record in made:
                self.cancel(record.id)
            exc.args = (f"workflow {workflow.name!r}: {exc}",)  # its own status (403, 422…)
            raise
        run = WorkflowRun(run_id=run_id, name=workflow.name, file=file, tasks=[r.id for r in made],
                          created_at=self.submitter.clock.now())  # fmt: skip
        self.runs.put(run)
        log.info("workflow started", extra={"workflow": workflow.name, "run": run_id})
        return run

    def status(self, run_id: str) -> dict[str, Any]:
        if self.runs is None:
            raise TaskNotFound(f"no workflow run with id {run_id!r}")
        run = self.runs.get(run_id)
        steps = [self.records.get(task_id) for task_id in run.tasks]
        return {
            **run.model_dump(mode="json"),
            "status": aggregate([s.status for s in steps]),
            "steps": [{"task_id": s.id, "type": s.type, "status": s.status.value,
                       "result": s.result, "error": s.error.message if s.error else None}
                      for s in steps],
        }  # fmt: skip
