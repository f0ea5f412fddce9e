"""The `pi-render` CLI as a user runs it, against a real daemon: output, --json and exit codes."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import DaemonProcess


def cli(
    daemon: DaemonProcess | None, *args: str, socket: Path | None = None
) -> subprocess.CompletedProcess[str]:
    target = socket or (daemon.socket if daemon else Path("/nonexistent/api.sock"))
    env = daemon.env() if daemon else None
    return subprocess.run(
        [sys.executable, "-m", "pi_render", *args, "--socket", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def test_submit_wait_json_status_list(daemon: DaemonProcess) -> None:
    done = cli(daemon, "submit", "noop", "--args", '{"payload": {"hello": 1}}', "--wait", "--json")
    assert done.returncode == 0, done.stderr
    record = as_json(done)
    assert record["status"] == "completed" and record["result"] == {"payload": {"hello": 1}}

    status = as_json(cli(daemon, "status", record["id"], "--json"))
    assert status["id"] == record["id"] and status["attempts"] == 1
    listed = as_json(cli(daemon, "list", "--status", "completed", "--limit", "20", "--json"))
    assert [r["id"] for r in listed] == [record["id"]]
    human = cli(daemon, "list", "--status", "completed")
    assert human.returncode == 0 and "noop" in human.stdout and "completed" in human.stdout
    forgot = as_json(cli(daemon, "forget", record["id"], "--json"))
    assert forgot == {"forgotten": record["id"], "status": "completed"}
    assert cli(daemon, "status", record["id"]).returncode != 0  # gone


def test_wait_exit_codes(daemon: DaemonProcess) -> None:
    failed = cli(daemon, "submit", "explode", "--args", '{"message": "kaput"}', "--wait", "--json")
    assert failed.returncode == 1 and as_json(failed)["error"]["message"] == "kaput"

    slow = as_json(cli(daemon, "submit", "noop", "--args", '{"sleep_s": 60}', "--json"))
    timed_out = cli(daemon, "wait", slow["id"], "--timeout", "0.5", "--json")
    assert timed_out.returncode == 4 and as_json(timed_out)["status"] in ("pending", "running")
    daemon.client.pause("default", label=True)
    waiting = as_json(cli(daemon, "submit", "noop", "--json"))
    moved = cli(daemon, "priority", waiting["id"], "high", "--json")
    assert moved.returncode == 0 and as_json(moved)["priority"] == "high", moved.stderr
    assert daemon.client.get(waiting["id"]).priority == "high"
    daemon.client.pause("default", paused=False, label=True)
    assert daemon.client.wait(waiting["id"], timeout=60).status == "completed"
    late = cli(daemon, "priority", waiting["id"], "normal")  # it has run: no queue holds it
    assert late.returncode != 0 and "only a queued task" in late.stdout + late.stderr
    assert cli(daemon, "cancel", slow["id"], "--json").returncode == 0
    cancelled = cli(daemon, "wait", slow["id"], "--timeout", "30")
    assert cancelled.returncode == 1 and "cancelled" in cancelled.stdout


def test_queues_and_health(daemon: DaemonProcess) -> None:
    queues = as_json(cli(daemon, "queues", "--json"))
    assert queues["default"]["workers"]["alive"] == 2
    health = cli(daemon, "health", "--json")
    assert health.returncode == 0 and as_json(health)["status"] == "ok"
    human = cli(daemon, "health")
    assert "ok" in human.stdout and "workers default: 2/2 alive" in human.stdout


def test_usage_errors_exit_2(daemon: DaemonProcess) -> None:
    bad_json = cli(daemon, "submit", "noop", "--args", "{nope")
    assert bad_json.returncode == 2 and "--args is not valid JSON" in bad_json.stderr
    refused = cli(daemon, "submit", "noop", "--args", '{"sleep_s": "x"}')
    assert refused.returncode == 2 and "sleep_s" in refused.stderr and "HTTP 422" in refused.stderr
    missing = cli(daemon, "status", "does-not-exist")
    assert missing.returncode == 2 and "no task with id" in missing.stderr


def test_unreachable_daemon_exits_3_and_says_how_to_start_it(tmp_path: Path) -> None:
    result = cli(None, "health", socket=tmp_path / "nobody.sock")
    assert result.returncode == 3
    assert "pi-render serve" in result.stderr and "nobody.sock" in result.stderr
