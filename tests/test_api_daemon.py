"""The socket API of a real daemon subprocess: happy paths, bad input, and that it keeps serving."""

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from conftest import DaemonProcess, wait_until

from pi_render.api.client import ApiError


def raw(daemon: DaemonProcess) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://x")


def test_submit_runs_noop_and_returns_its_payload(daemon: DaemonProcess) -> None:
    record = daemon.client.submit("noop", {"payload": {"hello": 1}})
    assert record.status == "pending"
    done = daemon.client.wait(record.id, timeout=30)
    assert done.status == "completed"
    assert done.result == {"payload": {"hello": 1}}
    assert done.attempts == 1
    assert done.started_at is not None and done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at
    assert done.worker is not None and done.worker.startswith("default-")


def test_socket_is_not_world_accessible(daemon: DaemonProcess) -> None:
    mode = stat.S_IMODE(daemon.socket.stat().st_mode)
    assert mode & 0o007 == 0
    assert mode & 0o660 == 0o660


def test_post_tasks_answers_201_with_the_record(daemon: DaemonProcess) -> None:
    with raw(daemon) as http:
        response = http.post("/tasks", json={"type": "noop", "args": {"payload": [1, 2]}})
    assert response.status_code == 201
    body = response.json()
    assert body["type"] == "noop" and body["args"]["payload"] == [1, 2]
    assert daemon.client.get(body["id"]).id == body["id"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"type": "noop", "args": ', 400, "not valid JSON"),
        (b'{"type": "no-such-type"}', 400, "unknown task type 'no-such-type'"),
        (b'{"type": "noop", "args": {"sleep_s": "soon"}}', 422, "sleep_s"),
        (b'{"type": "noop", "args": {"sleep_s": -1}}', 422, "sleep_s"),
        (b'{"type": "noop", "args": {"surprise": 1}}', 422, "surprise"),
        (b'{"args": {}}', 422, "type"),
        (b'{"type": "noop", "priority": "urgent"}', 422, "priority"),
        (b'{"type": "noop", "label": "nowhere"}', 409, "no workers consume routing label"),
        (b"[1, 2, 3]", 422, "invalid request"),
    ],
)
def test_bad_requests_are_refused_with_a_message_and_change_nothing(
    daemon: DaemonProcess, body: bytes, status: int, needle: str
) -> None:
    before = daemon.client.health()["records"]
    with raw(daemon) as http:
        response = http.post("/tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert needle in response.json()["message"]
    assert daemon.client.health()["records"] == before
    # ...and the daemon keeps serving
    ok = daemon.client.submit("noop", {"payload": "still here"})
    assert daemon.client.wait(ok.id, 30).status == "completed"


def test_unknown_task_id_is_404(daemon: DaemonProcess) -> None:
    with raw(daemon) as http:
        for path in ("/tasks/nope", "/api/tasks/nope/status", "/tasks/nope/wait?timeout=0"):
            response = http.get(path)
            assert response.status_code == 404, path
            assert "no task with id 'nope'" in response.json()["message"]
        assert http.post("/tasks/nope/cancel").status_code == 404


def test_list_is_newest_first_and_filters(daemon: DaemonProcess) -> None:
    ids = [daemon.client.submit("noop", {"payload": i}).id for i in range(5)]
    failed = daemon.client.submit("explode", {"message": "kaput"})
    for task_id in ids:
        daemon.client.wait(task_id, 30)
    assert daemon.client.wait(failed.id, 30).status == "failed"
    listed = [r.id for r in daemon.client.list(type_name="noop", limit=10)]
    assert listed == ids[::-1]
    assert [r.id for r in daemon.client.list(type_name="noop", limit=2, offset=1)] == ids[::-1][1:3]
    assert [r.id for r in daemon.client.list(status="failed")] == [failed.id]
    assert {r.id for r in daemon.client.list(status="completed")} == set(ids)
    with raw(daemon) as http:
        assert http.get("/tasks", params={"status": "bogus"}).status_code == 422
        assert http.get("/tasks", params={"limit": 0}).status_code == 422


def test_failed_task_keeps_its_error(daemon: DaemonProcess) -> None:
    record = daemon.client.wait(daemon.client.submit("explode", {"message": "kaput"}).id, 30)
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.type == "RuntimeError" and record.error.message == "kaput"
    assert record.error.traceback and "kaput" in record.error.traceback


def test_status_route_of_the_orchestration_seed(daemon: DaemonProcess) -> None:
    record = daemon.client.submit("noop", {})
    daemon.client.wait(record.id, 30)
    with raw(daemon) as http:
        body = http.get(f"/api/tasks/{record.id}/status").json()
    assert body == {
        "task_id": record.id,
        "status": "completed",
        "progress": 1.0,
        "progress_message": None,
        "attempts": 1,
        "error": None,
    }


def test_openapi_health_and_queues(daemon: DaemonProcess) -> None:
    with raw(daemon) as http:
        spec = http.get("/openapi.json").json()
    assert "/tasks" in spec["paths"] and "/tasks/{task_id}/wait" in spec["paths"]
    health = daemon.client.health()
    assert health["status"] == "ok"
    assert health["workers"]["default"] == {
        "configured": 2,
        "alive": 2,
        "restarts": 0,
        "last_death": None,
    }
    queues = daemon.client.queues()
    assert queues["default"]["high"] == 0 and queues["default"]["normal"] == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_over_the_unix_socket(daemon: DaemonProcess) -> None:
    record = daemon.client.submit("noop", {"payload": "curl"})
    daemon.client.wait(record.id, 30)
    out = subprocess.run(
        ["curl", "-sf", "--unix-socket", str(daemon.socket), f"http://localhost/tasks/{record.id}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(out)["result"] == {"payload": "curl"}


def test_wait_long_polls_until_the_end(daemon: DaemonProcess) -> None:
    record = daemon.client.submit("noop", {"sleep_s": 0.5})
    with raw(daemon) as http:
        body = http.get(f"/tasks/{record.id}/wait", params={"timeout": 30}, timeout=60).json()
    assert body["status"] == "completed"


def test_wait_returns_the_unfinished_record_at_timeout(daemon: DaemonProcess) -> None:
    record = daemon.client.submit("noop", {"sleep_s": 60})
    wait_until(lambda: daemon.client.get(record.id).status == "running", what="running")
    got = daemon.client.wait(record.id, timeout=0.3)
    assert got.status == "running"
    daemon.client.cancel(record.id)
    assert daemon.client.wait(record.id, 30).status == "cancelled"


def test_cancel_of_a_finished_task_is_a_conflict(daemon: DaemonProcess) -> None:
    record = daemon.client.submit("noop", {})
    daemon.client.wait(record.id, 30)
    with pytest.raises(ApiError) as info:
        daemon.client.cancel(record.id)
    assert info.value.http_status == 409
    assert "already ended" in str(info.value)


def test_batch_submit_is_all_or_nothing(daemon: DaemonProcess) -> None:
    records = daemon.client.submit_many(
        [{"type": "noop", "args": {"payload": i}} for i in range(50)]
        + [{"type": "noop", "args": {"payload": "vip"}, "priority": "high"}]
    )
    assert len(records) == 51 and records[-1].priority == "high"
    assert [daemon.client.wait(r.id, 30).result for r in records[:3]] == [
        {"payload": 0},
        {"payload": 1},
        {"payload": 2},
    ]
    before = sum(daemon.client.health()["records"].values())
    with pytest.raises(ApiError) as info:
        daemon.client.submit_many(
            [{"type": "noop"}, {"type": "noop", "args": {"sleep_s": "x"}}, {"type": "noop"}]
        )
    assert info.value.http_status == 422 and "task 1:" in str(info.value)
    assert sum(daemon.client.health()["records"].values()) == before  # none of it was written
    with raw(daemon) as http:
        assert http.post("/tasks/batch", json={"tasks": []}).status_code == 422


def test_oversized_bodies_are_refused(daemon: DaemonProcess) -> None:
    big = {"type": "noop", "args": {"payload": "x" * (2 << 20)}}
    with raw(daemon) as http:
        declared = http.post("/tasks", json=big)
        assert declared.status_code == 413 and "larger than" in declared.json()["message"]

        def chunks() -> Iterator[bytes]:  # no content-length: streamed
            yield b'{"type": "noop", "args": {"payload": "'
            for _ in range(40):
                yield b"y" * 65536
            yield b'"}}'

        streamed = http.post(
            "/tasks", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
    assert daemon.client.health()["status"] == "ok"
