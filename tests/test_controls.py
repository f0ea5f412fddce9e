"""Task controls against a real daemon: runtime limits for any task type, heartbeats and health,
pausing a label."""

import json
import sqlite3
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, wait_until

from pi_render.api.client import ApiError
from pi_render.clock import FakeClock
from pi_render.config import load_settings
from pi_render.errors import DiskFull, TaskNotFound
from pi_render.manifest.records import TaskRecordManifest
from pi_render.manifest.writer import storage_error
from pi_render.queue.router import Router
from pi_render.service import TaskService
from pi_render.task import lifecycle
from pi_render.task.record import Priority
from pi_render.workers.running import RunningTasks


def test_every_task_type_has_a_maximum_runtime(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon("[timeouts]\nnoop = 60\n[retry.noop]\nmax_attempts = 1\n").start()
    record = daemon.client.submit("noop", {"sleep_s": 120}, timeout_s=0.5)
    done = daemon.client.wait(record.id, 30)
    assert done.status == "failed" and done.error is not None
    assert done.error.type == "TaskTimedOut" and "0.5s limit" in done.error.message


def test_heartbeats_are_written_and_health_reports_the_host(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon("heartbeat_s = 0.2\n").start()
    record = daemon.client.submit("noop", {"sleep_s": 60})
    first = wait_until(lambda: daemon.client.get(record.id).heartbeat_at, what="a heartbeat")
    wait_until(lambda: daemon.client.get(record.id).heartbeat_at != first, what="a later beat")
    health = daemon.client.health()
    assert health["stale_heartbeats"] == []
    assert health["disk_free_bytes"]["data_dir"] > 0
    assert "blender" in health and health["workers"]["default"]["alive"] == 2
    daemon.client.cancel(record.id)


def test_a_record_left_running_by_a_dead_daemon_is_resumed(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon("heartbeat_s = 0.2\n").start()
    record = daemon.client.submit("noop", {"sleep_s": 60})
    wait_until(lambda: daemon.client.get(record.id).status == "running", what="running")
    daemon.kill()  # the record says running, and nobody beats for it any more
    with sqlite3.connect(daemon.data_dir / "records.sqlite") as db:
        (value,) = db.execute("SELECT value FROM tasks WHERE key = ?", (record.id,)).fetchone()
    assert '"status":"running"' in value
    daemon.start()
    resumed = wait_until(
        lambda: (r := daemon.client.get(record.id)).attempts == 2 and r, what="a second attempt"
    )
    assert resumed.status == "running"
    assert daemon.client.health()["stale_heartbeats"] == []
    daemon.client.cancel(record.id)


def test_pausing_a_label_keeps_accepting_but_takes_nothing(daemon: DaemonProcess) -> None:
    daemon.client.pause("default", True, label=True)
    record = daemon.client.submit("noop", {"payload": 1})
    assert daemon.client.wait(record.id, 0.5).status == "pending"
    assert daemon.client.queues()["default"]["paused"] is True
    daemon.terminate()
    daemon.start()  # a paused label stays paused across restarts
    assert daemon.client.wait(record.id, 0.5).status == "pending"
    daemon.client.pause("default", False, label=True)
    assert daemon.client.wait(record.id, 30).status == "completed"


def test_stale_heartbeats_are_listed(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = load_settings(env={"PI_RENDER_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)})
    records = TaskRecordManifest(settings.paths.records)
    service = TaskService(records, Router(settings), RunningTasks(), clock, settings.paths,
                          settings.outputs)  # fmt: skip
    record = service.submit("noop", {}).record
    records.change(record.id, lambda r: lifecycle.start(r, clock.now(), "w"))
    assert service.stale(15) == []
    clock.advance(16)
    (stale,) = service.stale(15)
    assert stale["task_id"] == record.id


def test_a_child_runs_after_its_parent_and_gets_its_result(daemon: DaemonProcess) -> None:
    parent = daemon.client.submit("noop", {"payload": {"frames": 3}, "sleep_s": 1})
    child = daemon.client.submit("noop", {"payload": "next"}, parent=parent.id)
    assert daemon.client.get(child.id).status == "pending"
    assert daemon.client.queues()["default"]["normal"] == 0  # not queued while it waits
    done = daemon.client.wait(child.id, 30)
    assert done.status == "completed"
    assert done.parent_result == {"payload": {"frames": 3}}
    assert daemon.client.get(parent.id).finished_at <= done.started_at  # type: ignore[operator]


def test_a_failed_parent_cancels_its_children_with_the_reason(daemon: DaemonProcess) -> None:
    parent = daemon.client.submit("explode", {"message": "no", "sleep_s": 1})
    child = daemon.client.submit("noop", {}, parent=parent.id)
    grandchild = daemon.client.submit("noop", {}, parent=child.id)
    assert daemon.client.wait(parent.id, 30).status == "failed"
    for task, why in ((child, f"parent task {parent.id} failed"),
                      (grandchild, f"parent task {child.id} cancelled")):  # fmt: skip
        done = daemon.client.wait(task.id, 30)
        assert done.status == "cancelled" and done.error is not None
        assert done.error.message == why
    with pytest.raises(ApiError, match="is failed"):
        daemon.client.submit("noop", {}, parent=parent.id)


def test_a_waiting_child_survives_a_restart(daemon: DaemonProcess) -> None:
    parent = daemon.client.submit("noop", {"sleep_s": 60})
    child = daemon.client.submit("noop", {"payload": 2}, parent=parent.id)
    wait_until(lambda: daemon.client.get(parent.id).status == "running", what="parent running")
    daemon.kill()
    daemon.start()
    assert daemon.client.get(child.id).status == "pending"
    daemon.client.cancel(parent.id)
    done = daemon.client.wait(child.id, 30)
    assert done.status == "cancelled"


HOOK = """#!/usr/bin/env python3
import pathlib, sys
folder = pathlib.Path(sys.argv[1])
if (folder / "refuse").exists():
    sys.exit("the receiver is down")
(folder / "received.jsonl").open("a").write(sys.stdin.read() + "\\n")
"""


def test_a_hook_is_delivered_after_a_restart(make_daemon: Callable[..., DaemonProcess],
                                             tmp_path: Path) -> None:  # fmt: skip
    receiver = tmp_path / "receiver.py"
    receiver.write_text(HOOK)
    (tmp_path / "refuse").touch()
    config = (f'[[hooks]]\non = ["completed"]\ncommand = ["{sys.executable}", "{receiver}", '
              f'"{tmp_path}"]\nretry_s = 0.2\n')  # fmt: skip
    daemon = make_daemon(config).start()
    record = daemon.client.submit("noop", {"payload": "hooked"})
    assert daemon.client.wait(record.id, 30).status == "completed"
    wait_until(lambda: "the receiver is down" in daemon.log(), what="a failed delivery")
    assert daemon.client.health()["hooks_owed"] == 1
    daemon.kill()
    (tmp_path / "refuse").unlink()  # the receiver comes back while the daemon is down
    daemon.start()
    received = tmp_path / "received.jsonl"
    wait_until(received.exists, timeout=30, what="the delivery after the restart")
    (line,) = received.read_text().splitlines()
    body = json.loads(line)
    assert body["id"] == record.id and body["result"] == {"payload": "hooked"}
    wait_until(lambda: daemon.client.health()["hooks_owed"] == 0, what="the delivery recorded")


def test_a_limit_refuses_with_the_blocking_task(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon('[limits.noop]\nmax = 1\nkey = "payload"\n').start()
    first = daemon.client.submit("noop", {"payload": "shot-a", "sleep_s": 60})
    with pytest.raises(ApiError) as info:
        daemon.client.submit("noop", {"payload": "shot-a"})
    assert info.value.http_status == 409
    assert f"blocked by task {first.id}" in str(info.value) and "payload='shot-a'" in str(
        info.value
    )
    other = daemon.client.submit("noop", {"payload": "shot-b"})  # another key is free
    assert daemon.client.wait(other.id, 30).status == "completed"
    daemon.client.cancel(first.id)
    daemon.client.wait(first.id, 30)
    again = daemon.client.submit("noop", {"payload": "shot-a"})  # the cap counts live tasks only
    assert daemon.client.wait(again.id, 30).status == "completed"


def test_a_task_no_pool_qualifies_for_is_refused(make_daemon: Callable[..., DaemonProcess]) -> None:
    config = ('[requires.noop]\ntags = ["studio"]\n'
              '[capabilities.render]\ntags = ["studio"]\n')  # fmt: skip
    daemon = make_daemon(config).start()
    with pytest.raises(ApiError) as info:
        daemon.client.submit("noop", {})
    assert info.value.http_status == 422 and "lacks tag 'studio'" in str(info.value)
    with pytest.raises(ApiError, match=r"lacks a GPU \(none Blender sees.*\), Blender >= 99.0"):
        daemon.client.submit("noop", {}, label="render", requires={"gpu": True, "blender": "99.0"})
    for junk in ("²", "9" * 5000, "3.4-rc"):  # not a version: refused, not misread
        with pytest.raises(ApiError) as bad:
            daemon.client.submit("noop", {}, label="render", requires={"blender": junk})
        assert bad.value.http_status == 422 and "blender" in str(bad.value)
    ok = daemon.client.submit("noop", {}, label="render")  # the render pool has the tag
    assert daemon.client.wait(ok.id, 30).status == "completed"
    caps = daemon.client.health()["capabilities"]
    assert caps["render"]["tags"] == ["studio"] and caps["default"]["tags"] == []


def test_workflow_templates_and_aggregate_status() -> None:
    from pi_render.task.record import TaskStatus as S
    from pi_render.workflows import aggregate, fill

    assert fill({"a": "{file}", "b": ["x/{file}", 3]}, "/s.blend") == {
        "a": "/s.blend",
        "b": ["x//s.blend", 3],
    }
    assert aggregate([S.COMPLETED, S.COMPLETED]) == "completed"
    assert aggregate([S.COMPLETED, S.RUNNING, S.PENDING]) == "running"
    assert aggregate([S.PENDING, S.PENDING]) == "pending"
    assert aggregate([S.COMPLETED, S.FAILED, S.CANCELLED]) == "failed"
    assert aggregate([S.CANCELLED, S.CANCELLED]) == "cancelled"


def test_an_unknown_workflow_is_404(daemon: DaemonProcess) -> None:
    with pytest.raises(ApiError) as info:
        daemon.client.run_workflow("nope", "/tmp/x.blend")
    assert info.value.http_status == 404 and "no workflow named 'nope'" in str(info.value)


def test_a_webhook_gets_the_task_json(make_daemon: Callable[..., DaemonProcess]) -> None:
    received: list[dict[str, object]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's name)
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/done"
        daemon = make_daemon(f'[[hooks]]\non = ["failed"]\nurl = "{url}"\n').start()
        ok = daemon.client.submit("noop", {})
        bad = daemon.client.submit("explode", {"message": "nope"})
        assert daemon.client.wait(bad.id, 30).status == "failed"
        assert daemon.client.wait(ok.id, 30).status == "completed"
        wait_until(lambda: received, what="the webhook")
        assert [r["id"] for r in received] == [bad.id]  # only the failure was asked for
        assert received[0]["error"]["message"] == "nope"  # type: ignore[index]
    finally:
        server.shutdown()


def test_retention_forgets_old_workflow_runs_whose_records_are_gone(tmp_path: Path) -> None:
    from pi_render.workflows import WorkflowRun, WorkflowRuns

    runs = WorkflowRuns(tmp_path / "workflows.sqlite")
    made = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for run_id, tasks in (("old-done", ["t1", "t2"]), ("old-live", ["t3", "t4"])):
        runs.put(WorkflowRun(run_id=run_id, name="w", file="f", tasks=tasks, created_at=made))
    runs.put(WorkflowRun(run_id="new", name="w", file="f", tasks=["t5"],
                         created_at=made + timedelta(days=40)))  # fmt: skip
    known = {"t4", "t5"}  # t1-t3 were pruned by retention
    assert runs.prune(made + timedelta(days=30), known.__contains__) == 1
    with pytest.raises(TaskNotFound):
        runs.get("old-done")
    assert runs.get("old-live").tasks == ["t3", "t4"] and runs.get("new").tasks == ["t5"]
    runs.close()


def test_a_batch_whose_queue_row_is_refused_is_withdrawn_whole(tmp_path: Path) -> None:
    """Records written, then the disk refuses the second queue row: nothing of the batch runs,
    each record says why, and the caller hears 507."""
    clock = FakeClock()
    settings = load_settings(env={"PI_RENDER_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)})
    records = TaskRecordManifest(settings.paths.records)
    router = Router(settings)
    service = TaskService(records, router, RunningTasks(), clock, settings.paths,
                          settings.outputs)  # fmt: skip
    queue = router.queue_for("default")
    real_put, puts = queue.put, []

    def put_until_full(task_id: str, priority: Priority, not_before: Any = None,
                       needs: Any = (), avoid: Any = ()) -> None:  # fmt: skip
        puts.append(task_id)
        if len(puts) == 2:  # what the backend raises when SQLite says SQLITE_FULL
            raise storage_error(sqlite3.OperationalError("database or disk is full"))
        real_put(task_id, priority)

    queue.put = put_until_full  # type: ignore[method-assign]
    batch: list[tuple[str, Any, Priority, str | None]] = [
        ("noop", {"payload": i}, Priority.NORMAL, None) for i in range(3)
    ]
    with pytest.raises(DiskFull, match="withdrawn"):
        service.submit_many(batch)
    made = records.query(limit=10)
    assert len(made) == 3 and all(r.status == "cancelled" for r in made)
    assert all("disk refused to store it" in (r.error.message if r.error else "") for r in made)
    assert queue.get(timeout=0) is None  # the row queued before the refusal is gone too
