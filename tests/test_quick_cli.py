"""The quick path of `pi-render` (pi_render/quick.py) answers as the full CLI does: the same
JSON, the same errors on stderr, the same exit codes, without importing typer, httpx or
pydantic. Each pair runs as real subprocesses against a real daemon."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, start_fake_renderer

from pi_render.quick import FINAL, STATUSES
from pi_render.task.record import FINAL_STATUSES, TaskStatus

SCRIPT = Path(sys.executable).parent / "pi-render"  # the installed entry point
FULL = "import sys; from pi_render.cli import main; sys.argv[0] = 'pi-render'; main()"


def both(*argv: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """(the quick path, the full CLI) for the same command line."""
    quick = subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    full = subprocess.run([sys.executable, "-c", FULL, *argv], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    return quick, full


def same(*argv: str) -> subprocess.CompletedProcess[str]:
    quick, full = both(*argv)
    assert (quick.returncode, quick.stdout, quick.stderr) == (
        full.returncode, full.stdout, full.stderr), argv  # fmt: skip
    return quick


def test_status_list_wait_and_version_answer_exactly_as_the_full_cli(
    daemon: DaemonProcess,
) -> None:
    sock = ["--socket", str(daemon.socket)]
    done = daemon.client.submit("noop", {"payload": {"é": [1, 2.5, None]}})
    failed = daemon.client.submit("explode", {})
    pending = daemon.client.submit("noop", {"sleep_s": 30})
    daemon.client.wait(done.id, 30)
    daemon.client.wait(failed.id, 30)
    assert '"payload"' in same("status", done.id, "--json", *sock).stdout
    assert same("wait", done.id, "--json", *sock).returncode == 0
    assert same("wait", failed.id, "--json", f"--socket={daemon.socket}").returncode == 1
    assert same("wait", pending.id, "--json", "--timeout", "0.2", *sock).returncode == 4
    assert same("list", "--json", *sock).stdout.count('"id"') == 3
    assert same("list", "--json", "--status", "completed", "--limit", "1", *sock).stdout
    assert same("list", "--json", "--type", "explode", *sock).stdout.count('"id"') == 1
    assert same("version").stdout.startswith("pi-render ")
    assert '"version"' in same("version", "--json").stdout
    unknown = same("status", "no-such-task", "--json", *sock)
    assert unknown.returncode == 2 and "no-such-task" in unknown.stderr


def test_render_with_json_answers_exactly_as_the_full_cli(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], tmp_path: Path
) -> None:
    daemon = start_fake_renderer(make_daemon, 0.01)
    sock = ["--socket", str(daemon.socket)]
    first = same_but_ids("render", str(scenes["tiny"]), "--json", "--force", "--frames", "2-3",
                         "--output", str(tmp_path / "out"), "--priority", "high",
                         *sock)  # fmt: skip
    assert first["status"] == "pending" and first["args"]["start_frame"] == 2
    done = same_but_ids("render", str(scenes["tiny"]), "--json", "--wait", "--force", *sock)
    assert done["status"] == "completed" and len(done["result"]["frames"]) == 3
    assert same("render", str(scenes["tiny"]), "--json", "--frames", "x-y", *sock).returncode == 2
    assert same("render", str(scenes["tiny"]), "--json", "--step", "0", *sock).returncode == 2


def same_but_ids(*argv: str) -> dict[str, Any]:
    """Both submit a task of their own: the records match but for what names that task."""
    quick, full = both(*argv)
    assert quick.returncode == full.returncode == 0, (quick.stderr, full.stderr)
    ours, theirs = json.loads(quick.stdout), json.loads(full.stdout)
    varying = {"id", "created_at", "updated_at", "started_at", "finished_at", "heartbeat_at",
               "version", "args", "result", "progress_detail", "worker", "queued_at",
               "submitted_by", "content_key"}  # fmt: skip
    assert {k: v for k, v in ours.items() if k not in varying} == {
        k: v for k, v in theirs.items() if k not in varying}  # fmt: skip
    mine = {k: v for k, v in ours["args"].items() if "snapshot" not in k}
    other = {k: v for k, v in theirs["args"].items() if "snapshot" not in k}
    if mine.get("output_dir", "").endswith(ours["id"]):  # the default: a folder of its own
        mine["output_dir"] = other["output_dir"] = "output/<id>"
    assert mine == other
    result: dict[str, Any] = ours
    return result


def test_errors_and_unusual_arguments_still_get_the_full_clis_answer(
    daemon: DaemonProcess,
) -> None:
    sock = ["--socket", str(daemon.socket)]
    assert same("list", "--json", "--status", "bogus", *sock).returncode == 2
    assert same("list", "--json", "--limit", "0", *sock).returncode == 2
    assert same("status", "--help").returncode == 0
    quick, full = both("status", "x", "--json", "--socket", "/nonexistent/api.sock")
    assert quick.returncode == full.returncode == 3
    assert quick.stderr.split("(")[0] == full.stderr.split("(")[0]  # "error: no pi-render..."
    daemon.client.close()


def test_the_quick_path_imports_none_of_the_heavy_libraries(daemon: DaemonProcess) -> None:
    record = daemon.client.submit("noop", {})
    probe = ("import sys; from pi_render.quick import run; run(['status', sys.argv[1], "
             "'--json', '--socket', sys.argv[2]]); print(sorted({'typer', 'httpx', 'pydantic', "
             "'rich', 'fastapi'} & set(sys.modules)))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe, record.id, str(daemon.socket)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")


def test_its_status_names_are_the_records() -> None:
    assert STATUSES == {s.value for s in TaskStatus}
    assert FINAL == {s.value for s in FINAL_STATUSES}
