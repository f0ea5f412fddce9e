"""Workflows (the swisscat seed's fixed sequences of steps), built on chaining: each step is a
task whose parent is the step before, so it runs after it and gets its result; a failed step
cancels the rest. `{file}` in a step's arguments is the file the workflow was started with."""

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pi_render.errors import PiRenderError, TaskNotFound
from pi_render.manifest.base import DurableJsonTable, JsonTable
from pi_render.task.record import TaskStatus


class WorkflowStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    args: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None


class Workflow(BaseModel):
    """A `[[workflows]]` entry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    steps: list[WorkflowStep] = Field(min_length=1)


class WorkflowRun(BaseModel):
    run_id: str
    name: str
    file: str
    tasks: list[str]
    created_at: datetime


def fill(value: Any, file: str) -> Any:
    """Put the workflow's file into every `{file}` of a step's arguments."""
    if isinstance(value, str):
        return value.replace("{file}", file)
    if isinstance(value, list):
        return [fill(v, file) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, file) for k, v in value.items()}
    return value


def aggregate(statuses: list[TaskStatus]) -> str:
    """One status for the whole run."""
    if any(s is TaskStatus.FAILED for s in statuses):
        return "failed"
    if any(s is TaskStatus.CANCELLED for s in statuses):
        return "cancelled"
    if all(s is TaskStatus.COMPLETED for s in statuses):
        return "completed"
    if any(s in (TaskStatus.RUNNING, TaskStatus.RETRYING, TaskStatus.COMPLETED) for s in statuses):
        return "running"
    return "pending"


class WorkflowRuns:
    """Which tasks make up each run (the tasks themselves are ordinary records)."""

    def __init__(self, path: Path, table: "JsonTable | None" = None) -> None:
        """`table`: where runs are kept instead of the SQLite file (farm mode: the farm's
        database, so a run started on one host can be looked up on every other)."""
        self._store: JsonTable = (
            table if table is not None else DurableJsonTable(path, "workflow_runs")
        )

    def put(self, run: WorkflowRun) -> None:
        self._store.stage(run.run_id, run.model_dump_json())
        self._store.commit()

    def get(self, run_id: str) -> WorkflowRun:
        text = self._store.text(run_id)
        if text is None:
            raise TaskNotFound(f"no workflow run with id {run_id!r}")
        return WorkflowRun.model_validate_json(text)

    def prune(self, created_before: datetime, known: Callable[[str], bool]) -> int:
        """Forget runs made before `created_before` whose tasks' records retention has removed
        (none is `known` any more): the store must not grow forever, and a run stays readable
        as long as any of its tasks is."""
        old = [WorkflowRun.model_validate_json(value) for _, value in self._store.items()]
        gone = [run.run_id for run in old
                if run.created_at < created_before and not any(map(known, run.tasks))]  # fmt: skip
        for run_id in gone:
            self._store.delete(run_id)
        if gone:
            self._store.commit()
        return len(gone)

    def close(self) -> None:
        self._store.close()


class UnknownWorkflow(PiRenderError):
    """Raised when a request names a workflow that the config does not define."""

    http_status = 404
