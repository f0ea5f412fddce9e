"""Failures that heal: backoff on a fake clock, the failure worker on real SQLite files (crashing
at each step), and a real daemon retrying a flaky task, killed during the failure path."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DaemonProcess, wait_until

from pi_render.backoff import Backoff
from pi_render.blend.errors import CorruptBlendFile
from pi_render.clock import FakeClock
from pi_render.config import load_settings
from pi_render.daemon.recovery import recover
from pi_render.errors import InvalidTaskArgs
from pi_render.manifest.records import TaskIdGenerator, TaskRecordManifest
from pi_render.processor.base import Processor
from pi_render.processor.context import TaskContext
from pi_render.queue.router import Router
from pi_render.retry import RetryPolicies, RetryPolicy
from pi_render.task.base import TaskBase
from pi_render.task.noop import NoopArgs, NoopResult
from pi_render.task.record import TaskRecord, TaskStatus
from pi_render.workers.queue_worker import QueueWorker
from pi_render.workers.running import RunningTasks

FAILS_LEFT: dict[str, int] = {}


class SometimesTask(TaskBase[NoopArgs, NoopResult]):
    type_name = "test-sometimes"


class SometimesProcessor(Processor[NoopArgs, NoopResult]):
    task = SometimesTask

    def _process(self, args: NoopArgs, ctx: TaskContext) -> NoopResult:
        if FAILS_LEFT.get(ctx.task_id, 0) > 0:
            FAILS_LEFT[ctx.task_id] -= 1
            raise OSError("disk hiccup")
        return NoopResult(payload=args.payload)


def test_backoff_sequence_and_jitter_bounds() -> None:
    policy = RetryPolicy(base_delay_s=10, factor=2, max_delay_s=60, jitter=0.0)
    assert [policy.delay_s(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]
    jittery = RetryPolicy(base_delay_s=10, factor=2, jitter=0.25)
    assert jittery.delay_s(1, lambda: 0.0) == 7.5 and jittery.delay_s(1, lambda: 1.0) == 12.5
    assert all(7.5 <= jittery.delay_s(1) <= 12.5 for _ in range(200))


def test_dead_after_max_attempts_and_bad_input_dead_at_once() -> None:
    clock = FakeClock()
    policies = RetryPolicies({"default": RetryPolicy(max_attempts=3, jitter=0)}, lambda: 0.5)
    error = OSError("io")
    assert policies.next_attempt("x", 1, error, clock.now()) is not None
    assert policies.next_attempt("x", 2, error, clock.now()) is not None
    assert policies.next_attempt("x", 3, error, clock.now()) is None
    assert policies.next_attempt("x", 1, InvalidTaskArgs("bad", []), clock.now()) is None
    assert policies.next_attempt("x", 1, CorruptBlendFile("bad", "f", 3), clock.now()) is None


def test_retry_policy_from_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[retry.default]\nmax_attempts = 5\n[retry.render]\nbase_delay_s = 60\n")
    settings = load_settings(config, env={"HOME": str(tmp_path)})
    assert settings.retry["default"].max_attempts == 5
    assert settings.retry["render"].base_delay_s == 60


class SimulatedCrash(BaseException):
    """Stands for kill -9 at a checkpoint: nothing after it runs."""


class Rig:
    """The failure path's parts on real files; `restart()` reopens them as a new daemon would."""

    def __init__(self, folder: Path, clock: FakeClock) -> None:
        self.folder, self.clock = folder, clock
        self.crashes = 0
        self.open()

    def open(self, crash_at: str | None = None) -> None:
        settings = load_settings(env={"PI_RENDER_DATA_DIR": str(self.folder), "HOME": "/tmp"})
        settings = settings.model_copy(update={"workers": {"default": 1}})
        self.records = TaskRecordManifest(self.folder / "records.sqlite")
        self.router = Router(settings, clock=self.clock)
        policies = RetryPolicies({"default": RetryPolicy(max_attempts=5, base_delay_s=10,
                                                         jitter=0)})  # fmt: skip

        def checkpoint(step: str) -> None:
            if step == crash_at:
                raise SimulatedCrash(step)

        self.worker = QueueWorker("w", self.router.queues["default"], self.records,
                                  RunningTasks(), self.clock, 0.01, retry=policies,
                                  checkpoint=checkpoint)  # fmt: skip

    def restart(self) -> None:
        self.router.close()
        self.records.close()
        self.open()
        recover(self.records, self.router)

    def drive(self, record: TaskRecord, crash_at: str | None) -> None:
        """Work until the task ends, crashing once at `crash_at`."""
        self.open(crash_at)
        for _ in range(20):
            try:
                self.worker.run_once()
                self.clock.advance(11)  # past the next attempt's time (10 s)
            except SimulatedCrash:
                self.crashes += 1
                self.restart()
            if self.records.get(record.id).status.is_final:
                return


@pytest.mark.parametrize("crash_at", [None, "retrying", "queued"])
def test_fails_twice_then_succeeds_even_with_a_crash_at_each_step(
    tmp_path: Path, crash_at: str | None
) -> None:
    """A retry is a delayed put on the task's own queue: a crash after the record says
    retrying (before the put) or after the put (before the ack) still ends in one success."""
    clock = FakeClock()
    rig = Rig(tmp_path, clock)
    record = TaskRecord(id=TaskIdGenerator(clock).new(), type="test-sometimes", label="default",
                        args={"payload": 7}, created_at=clock.now())  # fmt: skip
    FAILS_LEFT[record.id] = 2
    rig.records.create(record)
    rig.router.put(record)
    rig.drive(record, crash_at)
    assert rig.crashes == (0 if crash_at is None else 1)
    done = rig.records.get(record.id)
    assert done.status is TaskStatus.COMPLETED and done.result == {"payload": 7}
    assert done.attempts == 3
    assert [e.message for e in done.errors] == ["disk hiccup", "disk hiccup"]
    assert rig.router.queues["default"].depth() == {
        "high": 0,
        "normal": 0,
        "delayed": 0,
        "taken": 0,
    }


def test_a_retrying_task_shows_its_next_attempt(tmp_path: Path) -> None:
    clock = FakeClock()
    rig = Rig(tmp_path, clock)
    record = TaskRecord(id="t1", type="test-sometimes", label="default", created_at=clock.now())
    FAILS_LEFT["t1"] = 1
    rig.records.create(record)
    rig.router.put(record)
    rig.worker.run_once()
    waiting = rig.records.get("t1")
    assert waiting.status is TaskStatus.RETRYING
    assert waiting.next_attempt_at is not None
    assert (waiting.next_attempt_at - clock.now()).total_seconds() == 10
    queue = rig.router.queues["default"]
    assert queue.depth()["delayed"] == 1  # held by its queue until then
    assert rig.worker.run_once() is False  # not due yet: nothing is delivered
    assert rig.records.get("t1").status is TaskStatus.RETRYING
    clock.advance(10)
    assert rig.worker.run_once() is True
    done = rig.records.get("t1")
    assert done.status is TaskStatus.COMPLETED and done.attempts == 2


FLAKY = "[retry.flaky]\nmax_attempts = 4\nbase_delay_s = 0.3\njitter = 0\n"


def test_a_real_daemon_retries_a_flaky_task(make_daemon: Callable[..., DaemonProcess],
                                            tmp_path: Path) -> None:  # fmt: skip
    daemon = make_daemon(FLAKY).start()
    record = daemon.client.submit("flaky", {"marker_dir": str(tmp_path / "m"), "fail_times": 2})
    done = daemon.client.wait(record.id, 60)
    assert done.status == "completed" and done.attempts == 3
    assert [e.type for e in done.errors] == ["OSError", "OSError"]


def test_kill_9_during_the_failure_path(make_daemon: Callable[..., DaemonProcess],
                                        tmp_path: Path) -> None:  # fmt: skip
    slow = "[retry.flaky]\nmax_attempts = 4\nbase_delay_s = 3\njitter = 0\n"
    daemon = make_daemon(slow).start()
    record = daemon.client.submit("flaky", {"marker_dir": str(tmp_path / "m"), "fail_times": 1})
    wait_until(lambda: daemon.client.get(record.id).status == "retrying", what="retrying")
    daemon.kill()
    daemon.start()
    done = daemon.client.wait(record.id, 60)
    assert done.status == "completed" and done.attempts == 2
    assert len(list((tmp_path / "m").iterdir())) == 2  # exactly one retry ran


def test_dead_tasks_are_listed_and_can_be_retried_by_hand(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = make_daemon("[retry.flaky]\nmax_attempts = 2\nbase_delay_s = 0.1\n").start()
    record = daemon.client.submit("flaky", {"marker_dir": str(tmp_path / "m"), "fail_times": 2})
    dead = daemon.client.wait(record.id, 60)
    assert dead.status == "failed" and len(dead.errors) == 2
    wait_until(lambda: daemon.client.failed(), what="the dead task to be filed")
    argv = [sys.executable, "-m", "pi_render", "failed", "--json", "--socket", str(daemon.socket)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    (entry,) = json.loads(out.stdout)
    assert entry["task_id"] == record.id and entry["state"] == "dead"
    assert [e["message"] for e in entry["errors"]] == ["flaky failure 1 of 2",
                                                       "flaky failure 2 of 2"]  # fmt: skip
    again = daemon.client.retry(record.id)
    assert again.status in ("pending", "running", "completed") and again.attempts >= 3
    assert again.retried_at_attempt == 3  # attempts only grow; the budget starts here
    done = daemon.client.wait(record.id, 60)
    assert done.status == "completed" and done.attempts == 4  # a fresh budget
    assert daemon.client.failed() == []


def test_one_backoff_doubles_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.2, 5.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert backoff.delay(10_000) == 5.0  # no overflow however long the disk stays full
    tries = backoff.counter()
    assert [tries.failed() for _ in range(3)] == [0.2, 0.4, 0.8]
    tries.succeeded()
    assert tries.failed() == 0.2
    jittered = Backoff(10.0, 100.0, jitter=0.1)
    assert jittered.delay(1, rand=lambda: 0.0) == 9.0
    assert jittered.delay(1, rand=lambda: 1.0) == 11.0
