"""A real daemon's life: one per data dir, cancel, priority, worker deaths, stop, resume."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import DaemonProcess, started, wait_until

ONE_WORKER = "[workers]\ndefault = 1\n"


def test_second_daemon_on_the_same_data_dir_is_refused(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    second = subprocess.run(
        [sys.executable, "-m", "pi_render", "serve", "--config", str(daemon.config_path)],
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"pid {daemon.proc.pid}" in second.stderr
    assert "already running" in second.stderr
    assert daemon.client.health()["status"] == "ok"  # the first one is untouched


def test_cancel_pending_and_running(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(ONE_WORKER).start()
    blocker = daemon.client.submit("noop", {"sleep_s": 120})
    wait_until(lambda: daemon.client.get(blocker.id).status == "running", what="blocker running")
    waiting = daemon.client.submit("noop", {"payload": "never"})
    assert daemon.client.queues()["default"]["normal"] == 1

    cancelled = daemon.client.cancel(waiting.id)
    assert cancelled.status == "cancelled"
    assert daemon.client.queues()["default"]["normal"] == 0  # left its queue

    assert daemon.client.cancel(blocker.id).status == "running"  # asked to stop
    stopped = daemon.client.wait(blocker.id, 30)
    assert stopped.status == "cancelled"
    assert stopped.error is not None and "cancelled while running" in stopped.error.message

    after = daemon.client.submit("noop", {"payload": "next"})
    assert daemon.client.wait(after.id, 30).status == "completed"
    never = daemon.client.get(waiting.id)
    assert never.status == "cancelled" and never.attempts == 0 and never.started_at is None


def test_high_priority_overtakes_normal(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(ONE_WORKER).start()
    blocker = daemon.client.submit("noop", {"sleep_s": 120})
    wait_until(lambda: daemon.client.get(blocker.id).status == "running", what="blocker running")
    normals = [daemon.client.submit("noop", {"payload": i}).id for i in range(3)]
    high = daemon.client.submit("noop", {"payload": "vip"}, priority="high").id
    daemon.client.cancel(blocker.id)
    done = {i: daemon.client.wait(i, 30) for i in [*normals, high]}
    order = sorted(done, key=lambda i: started(done[i]))
    assert order == [high, *normals]


def test_dead_worker_thread_is_restarted_and_shown(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = make_daemon(ONE_WORKER).start()
    record = daemon.client.submit("killthread", {"marker": str(tmp_path / "marker")})
    done = daemon.client.wait(record.id, 30)
    assert done.status == "completed" and done.attempts == 2
    workers = daemon.client.health()["workers"]["default"]
    assert workers["restarts"] == 1 and workers["alive"] == 1
    assert "ThreadKiller" in workers["last_death"]
    assert "worker thread died" in daemon.log()


def test_sigterm_lets_short_tasks_finish_and_exits_zero(daemon: DaemonProcess) -> None:
    record = daemon.client.submit("noop", {"sleep_s": 0.5})
    wait_until(lambda: daemon.client.get(record.id).status == "running", what="running")
    assert daemon.terminate() == 0
    assert not daemon.socket.exists()
    daemon.start()
    assert daemon.client.get(record.id).status == "completed"


def test_sigterm_past_the_grace_resumes_the_task_on_next_start(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = make_daemon("shutdown_grace_s = 0.2\n").start()
    journal = tmp_path / "journal"
    record = daemon.client.submit("journal", {"journal": str(journal), "sleep_s": 120})
    wait_until(lambda: journal.exists(), what="the task to start")
    assert daemon.terminate(timeout=30) == 0
    assert "resumes on the next start" in daemon.log()
    daemon.start()
    wait_until(lambda: len(journal.read_text().splitlines()) == 2, what="the task to resume")
    assert journal.read_text().splitlines() == [f"{record.id} 1", f"{record.id} 2"]
    daemon.client.cancel(record.id)
    assert daemon.client.wait(record.id, 30).status == "cancelled"


def test_restart_keeps_pending_tasks_in_order(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(ONE_WORKER).start()
    blocker = daemon.client.submit("noop", {"sleep_s": 120})
    wait_until(lambda: daemon.client.get(blocker.id).status == "running", what="blocker running")
    ids = [daemon.client.submit("noop", {"payload": i}).id for i in range(10)]
    daemon.kill()
    daemon.start()
    daemon.client.cancel(blocker.id)
    done = {i: daemon.client.wait(i, 30) for i in ids}
    assert all(r.status == "completed" for r in done.values())
    assert sorted(ids, key=lambda i: started(done[i])) == ids


def test_an_idle_daemon_uses_almost_no_cpu(daemon: DaemonProcess) -> None:
    """Workers sleep on a condition that `put` signals: no polling while idle."""
    assert daemon.proc is not None
    pid, ticks = daemon.proc.pid, os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    before, t0 = cpu_seconds(), time.monotonic()
    window = threading.Event()
    window.wait(3.0)  # the measurement window itself, not a wait for something to happen
    used = (cpu_seconds() - before) / (time.monotonic() - t0)
    assert used < 0.03, f"idle daemon used {used:.1%} of a core"
