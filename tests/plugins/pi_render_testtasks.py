"""Task types that only tests need, loaded by the daemon through `task_modules`."""

import os
import time
from pathlib import Path

from pydantic import BaseModel

from pi_render.errors import PiRenderError
from pi_render.processor.base import Processor
from pi_render.processor.context import TaskContext
from pi_render.task.base import SubmitContext, TaskBase


class JournalArgs(BaseModel):
    journal: str
    sleep_s: float = 0.0


class JournalResult(BaseModel):
    attempt: int


class JournalTask(TaskBase[JournalArgs, JournalResult]):
    """Appends `<task id> <attempt>` to a journal on every run: counts real executions."""

    type_name = "journal"


class JournalProcessor(Processor[JournalArgs, JournalResult]):
    task = JournalTask

    def _process(self, args: JournalArgs, ctx: TaskContext) -> JournalResult:
        fd = os.open(args.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ctx.task_id} {ctx.attempt}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if args.sleep_s:
            ctx.sleep(args.sleep_s)
        return JournalResult(attempt=ctx.attempt)


class ExplodeArgs(BaseModel):
    message: str = "boom"
    sleep_s: float = 0.0


class ExplodeTask(TaskBase[ExplodeArgs, JournalResult]):
    type_name = "explode"


class ExplodeProcessor(Processor[ExplodeArgs, JournalResult]):
    task = ExplodeTask

    def _process(self, args: ExplodeArgs, ctx: TaskContext) -> JournalResult:
        ctx.sleep(args.sleep_s)
        raise RuntimeError(args.message)


class ThreadKiller(BaseException):
    """Escapes the worker's `except Exception` boundary, as a bug in the worker itself would."""


class KillThreadArgs(BaseModel):
    marker: str


class KillThreadTask(TaskBase[KillThreadArgs, JournalResult]):
    type_name = "killthread"


class KillThreadProcessor(Processor[KillThreadArgs, JournalResult]):
    """Kills its worker thread the first time it runs (the marker file says so), then succeeds."""

    task = KillThreadTask

    def _process(self, args: KillThreadArgs, ctx: TaskContext) -> JournalResult:
        marker = Path(args.marker)
        if not marker.exists():
            marker.write_text("died once\n")
            raise ThreadKiller("worker thread killed on purpose")
        return JournalResult(attempt=ctx.attempt)


class FlakyArgs(BaseModel):
    marker_dir: str
    fail_times: int = 2


class FlakyTask(TaskBase[FlakyArgs, JournalResult]):
    type_name = "flaky"


class FlakyProcessor(Processor[FlakyArgs, JournalResult]):
    """Fails its first `fail_times` runs (counted in files, so restarts do not reset it)."""

    task = FlakyTask

    def _process(self, args: FlakyArgs, ctx: TaskContext) -> JournalResult:
        folder = Path(args.marker_dir)
        folder.mkdir(parents=True, exist_ok=True)
        runs = len(list(folder.iterdir())) + 1
        (folder / f"run{runs}").write_text(f"{ctx.task_id} attempt {ctx.attempt}\n")
        if runs <= args.fail_times:
            raise OSError(f"flaky failure {runs} of {args.fail_times}")
        return JournalResult(attempt=ctx.attempt)


class GatedArgs(BaseModel):
    started: str  # made when prepare begins
    gate: str  # prepare waits (up to 30 s) until this exists: a slow snapshot, on demand


class GatedTask(TaskBase[GatedArgs, JournalResult]):
    """A task whose submit-time preparation takes as long as the test wants."""

    type_name = "gated"

    @classmethod
    def prepare(cls, args: GatedArgs, ctx: SubmitContext) -> GatedArgs:
        Path(args.started).touch()
        deadline = time.monotonic() + 30
        while not Path(args.gate).exists():
            if time.monotonic() > deadline:
                raise PiRenderError("the gate never opened")
            time.sleep(0.01)
        return args


class GatedProcessor(Processor[GatedArgs, JournalResult]):
    task = GatedTask

    def _process(self, args: GatedArgs, ctx: TaskContext) -> JournalResult:
        return JournalResult(attempt=ctx.attempt)
