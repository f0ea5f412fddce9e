"""QueueWorker and WorkerPool in-process, on real SQLite queue and record files and a FakeClock."""

import os
import sys
import threading
from pathlib import Path

import pytest
from conftest import run_in_background, wait_until
from pydantic import BaseModel

from pi_render.clock import FakeClock
from pi_render.manifest.records import TaskIdGenerator, TaskRecordManifest
from pi_render.processor.base import Processor
from pi_render.processor.blender_run import BlenderProcess, RenderStalled, RenderTimeout
from pi_render.processor.context import StopReason, TaskContext
from pi_render.queue.sqlite import SqliteTaskQueue
from pi_render.task.base import TaskBase
from pi_render.task.record import Priority, TaskRecord, TaskStatus
from pi_render.workers.base import LoopWorker
from pi_render.workers.pool import WorkerPool
from pi_render.workers.queue_worker import QueueWorker
from pi_render.workers.running import RunningTasks

RUNS: list[str] = []


class StepArgs(BaseModel):
    steps: list[float] = []
    block: bool = False


class StepResult(BaseModel):
    runs: int


class StepTask(TaskBase[StepArgs, StepResult]):
    type_name = "test-steps"


class StepProcessor(Processor[StepArgs, StepResult]):
    """Reports each step as progress, advancing the test's clock by 0.2 s per step."""

    task = StepTask
    clock: FakeClock
    started = threading.Event()

    def _process(self, args: StepArgs, ctx: TaskContext) -> StepResult:
        RUNS.append(ctx.task_id)
        for fraction in args.steps:
            ctx.report_progress(fraction, f"step {fraction}")
            self.clock.advance(0.2)
        if args.block:
            StepProcessor.started.set()
            ctx.sleep(3600)
        return StepResult(runs=RUNS.count(ctx.task_id))


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        StepProcessor.clock = self.clock
        self.ids = TaskIdGenerator(self.clock)
        self.queue = SqliteTaskQueue(tmp_path / "q.db")
        self.records = TaskRecordManifest(tmp_path / "r.sqlite")
        self.running = RunningTasks()
        self.worker = QueueWorker("w-0", self.queue, self.records, self.running, self.clock, 5.0)

    def submit(self, args: dict[str, object], type_name: str = "test-steps") -> TaskRecord:
        record = TaskRecord(
            id=self.ids.new(),
            type=type_name,
            label="default",
            args=args,
            created_at=self.clock.now(),
        )
        self.records.create(record)
        self.queue.put(record.id, Priority.NORMAL)
        return record


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    RUNS.clear()
    StepProcessor.started.clear()
    return Rig(tmp_path)


def test_outcome_is_written_then_acked(rig: Rig) -> None:
    record = rig.submit({"steps": []})
    assert rig.worker.run_once() is True
    done = rig.records.get(record.id)
    assert done.status is TaskStatus.COMPLETED and done.result == {"runs": 1}
    assert done.worker == "w-0" and done.attempts == 1
    assert rig.queue.depth() == {"high": 0, "normal": 0, "delayed": 0, "taken": 0}
    assert not rig.queue.contains(record.id)


def test_a_completed_record_delivered_again_is_not_run_again(rig: Rig) -> None:
    record = rig.submit({})
    rig.worker.run_once()
    rig.queue.put(record.id, Priority.NORMAL)  # as after a crash between record and ack
    rig.worker.run_once()
    assert RUNS == [record.id]
    assert rig.records.get(record.id).attempts == 1
    assert rig.queue.get(timeout=0) is None


def test_unknown_processor_and_bad_stored_args_fail_the_task(rig: Rig) -> None:
    nobody = rig.submit({}, type_name="no-processor")
    rig.worker.run_once()
    failed = rig.records.get(nobody.id)
    assert failed.status is TaskStatus.FAILED and failed.error is not None
    assert failed.error.type == "NoProcessor"
    bad = rig.submit({"steps": "many"})
    rig.worker.run_once()
    assert rig.records.get(bad.id).status is TaskStatus.FAILED


def test_progress_is_recorded_but_throttled(rig: Rig) -> None:
    seen: list[tuple[float, str | None]] = []
    rig.records.add_listener(
        lambda r: (
            seen.append((r.progress, r.progress_message))
            if r.status is TaskStatus.RUNNING
            else None
        )
    )
    rig.submit({"steps": [0.1, 0.2, 0.3, 0.4, 0.5]})
    rig.worker.run_once()
    # clock moves 0.2 s a step, records at most every 0.5 s: 0.1 (t=0), 0.4 (t=0.6); plus start
    assert seen == [(0.0, None), (0.1, "step 0.1"), (0.4, "step 0.4")]


def test_shutdown_stop_puts_the_task_back_for_the_next_start(rig: Rig) -> None:
    record = rig.submit({"block": True})
    thread = threading.Thread(target=rig.worker.run_once)
    thread.start()
    assert StepProcessor.started.wait(10)
    assert rig.running.stop_all(StopReason.SHUTDOWN) == 1
    thread.join(10)
    back = rig.records.get(record.id)
    assert back.status is TaskStatus.PENDING and back.attempts == 1
    assert rig.queue.depth()["normal"] == 1


def test_pool_restarts_a_worker_that_dies(rig: Rig) -> None:
    class Fragile(LoopWorker):
        deaths = 0
        second_life = threading.Event()

        def run_once(self) -> bool:
            if Fragile.deaths == 0:
                Fragile.deaths += 1
                raise RuntimeError("worker bug")
            Fragile.second_life.set()
            self.stop_event.wait()
            return False

    pool = WorkerPool(RunningTasks())
    pool.add("default", lambda: Fragile("fragile-0"))
    pool.start()
    assert Fragile.second_life.wait(10)
    status = pool.status()["default"]
    assert status["restarts"] == 1 and status["alive"] == 1
    assert status["last_death"] == "RuntimeError: worker bug"
    pool.stop(grace_s=5)
    assert pool.status()["default"]["alive"] == 0


def test_time_limits_and_heartbeats_run_on_the_workers_clock(rig: Rig) -> None:
    """No sleeping: the fake clock is moved, and the watch acts on it alone."""
    record = rig.submit({"block": True})
    rig.records.change(record.id, lambda r: r.model_copy(update={"timeout_s": 30.0}))
    thread = threading.Thread(target=rig.worker.run_once)
    thread.start()
    try:
        assert StepProcessor.started.wait(10)
        wait_until(lambda: rig.clock.waiting() > 0, what="the watch to wait on the clock")
        rig.clock.advance(5.0)  # one heartbeat period
        beat = rig.clock.now()
        wait_until(lambda: rig.records.get(record.id).heartbeat_at == beat, what="a heartbeat")
        assert rig.records.get(record.id).status is TaskStatus.RUNNING  # 5 s of its 30
        wait_until(lambda: rig.clock.waiting() > 0, what="the watch to wait again")
        rig.clock.advance(25.0)
        thread.join(10)
        assert not thread.is_alive()
    finally:
        rig.running.stop_all(StopReason.SHUTDOWN)
        thread.join(10)
    ended = rig.records.get(record.id)
    assert [e.type for e in ended.errors] == ["TaskTimedOut"] and "30s limit" in ended.errors[
        0
    ].message


def test_blenders_hang_watchdog_and_time_limit_run_on_the_tasks_clock(tmp_path: Path) -> None:
    """The fake Blender that hangs (prints its banner, then nothing): the fake clock is moved
    past the watchdog and the render is stopped, with no sleep in the test."""
    fake = Path(__file__).parent / "fakes" / "fake_blender.py"
    for timeout_s, stall_s, expected in (
        (None, 600.0, RenderStalled),
        (60.0, 600.0, RenderTimeout),
    ):
        clock = FakeClock()
        ctx = TaskContext("t", 1, lambda f, m, d: None, clock=clock)
        log = open(tmp_path / "log.txt", "w")
        argv = [sys.executable, str(fake), "-b", "-o", str(tmp_path / "f_####"), "-f", "1"]
        process = BlenderProcess(argv, log, ctx, lambda e: None,
                                 timeout_s, stall_s, 5.0, tmp_path / "pid",
                                 env={**os.environ, "FAKE_BLENDER": "hang"})  # fmt: skip
        thread, failure = run_in_background(process)
        banner = "Blender 9.9.9 (fake)"  # read: the wait that follows it is the last
        wait_until(lambda: banner in (tmp_path / "log.txt").read_text(), what="the banner")
        wait_until(lambda: clock.waiting() > 0, what="the watchdog to wait on the clock")
        clock.advance(min(stall_s, timeout_s or stall_s))
        thread.join(30)
        log.close()
        assert not thread.is_alive() and [type(f) for f in failure] == [expected]
