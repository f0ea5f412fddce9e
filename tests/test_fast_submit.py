"""`POST /tasks` has a short path (pi_render/api/fast_submit.py) beside the full FastAPI app. A
chunked body always goes to the full app, so sending each body both ways to a real daemon shows
that the short path answers, and audits, exactly as the full app does."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import DaemonProcess

VARYING = ("id", "created_at", "content_key", "started_at", "finished_at", "worker")

BODIES = [
    b'{"type": "noop", "args": {"payload": [1, 2]}}',
    b'{"type": "noop", "priority": "high", "timeout_s": 30}',
    b'{"type": "noop", "args": ',
    b'{"type": "no-such-type"}',
    b'{"type": "noop", "args": {"sleep_s": -1}}',
    b'{"type": "noop", "surprise": 1}',
    b'{"type": "noop", "label": "nowhere"}',
    b'{"type": "noop", "parent": "00000000000000000000"}',
    b"[1, 2, 3]",
    b"",
]


def post(daemon: DaemonProcess, body: bytes, chunked: bool, **headers: str) -> httpx.Response:
    def chunks() -> Iterator[bytes]:
        yield body

    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)),
                      base_url="http://x") as http:  # fmt: skip
        kind = {"content-type": "application/json", **headers}
        return http.post("/tasks", content=chunks() if chunked else body, headers=kind)


def comparable(response: httpx.Response) -> tuple[int, Any]:
    try:
        body = response.json()
    except ValueError:
        return response.status_code, response.text
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in VARYING}
    return response.status_code, body


def last_audit(daemon: DaemonProcess) -> dict[str, Any]:
    entry = daemon.client.audit()[-1]
    assert entry["action"] == "POST /tasks"
    return {k: v for k, v in entry.items() if k not in ("time", "task_id")} | {
        "made_a_task": entry["task_id"] is not None
    }


@pytest.mark.parametrize("body", BODIES, ids=[b.decode()[:40] or "empty" for b in BODIES])
def test_the_short_path_answers_and_audits_as_the_full_app(
    daemon: DaemonProcess, body: bytes
) -> None:
    full = post(daemon, body, chunked=True)
    full_audit = last_audit(daemon)
    short = post(daemon, body, chunked=False)
    short_audit = last_audit(daemon)
    assert comparable(short) == comparable(full)
    assert short.headers["content-type"] == full.headers["content-type"]
    assert short_audit == full_audit
    if short.status_code == 201:  # a real task, the same as the full app's, and it runs
        record = short.json()
        done = daemon.client.wait(record["id"], timeout=30).model_dump(mode="json")
        assert done["status"] == "completed" and record["status"] == "pending"
        assert {k: done[k] for k in ("id", "type", "args", "priority", "timeout_s")} == {
            k: record[k] for k in ("id", "type", "args", "priority", "timeout_s")
        }


def test_a_body_the_short_path_does_not_take_is_answered_by_the_full_app(
    daemon: DaemonProcess,
) -> None:
    body = b'{"type": "noop"}'
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/json; x=1"}):
        assert comparable(post(daemon, body, False, **headers)) == comparable(
            post(daemon, body, True, **headers)
        )
    twice = [("content-type", "text/plain"), ("content-type", "application/json")]
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)),
                      base_url="http://x") as http:  # fmt: skip
        short = http.post("/tasks", content=body, headers=twice)
        full = http.post("/tasks", content=iter([body]), headers=twice)
    assert comparable(short) == comparable(full) and short.status_code == 422
