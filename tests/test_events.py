"""`GET /events`: Server-Sent Events of task changes and landed frames, numbered and
resumable, from a real daemon over its real socket."""

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from conftest import DaemonProcess, start_fake_renderer


def sse(daemon: DaemonProcess, **params: Any) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(id, event, data) from the stream, as a browser's EventSource would read it."""
    transport = httpx.HTTPTransport(uds=str(daemon.socket))
    headers = {"Last-Event-ID": str(params.pop("last_id"))} if "last_id" in params else {}
    with httpx.Client(transport=transport, base_url="http://pi-render", timeout=30) as client:
        with client.stream("GET", "/events", params=params, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line == "" and "data" in fields:
                    yield int(fields["id"]), fields["event"], json.loads(fields["data"])
                    fields = {}
                elif line and not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value


def test_events_follow_a_render_frame_by_frame_and_resume_where_they_left_off(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    daemon = start_fake_renderer(make_daemon, 0.05)
    seen: list[tuple[int, str, dict[str, Any]]] = []
    subscribed = threading.Event()
    render_id: list[str] = []

    def follow() -> None:
        for event in sse(daemon, after=0):
            subscribed.set()
            seen.append(event)
            kind, data = event[1], event[2]
            if kind == "task" and data["id"] in render_id and data["status"] == "completed":
                return

    marker = daemon.client.submit("noop", {"payload": "first"})  # an event to subscribe on
    daemon.client.wait(marker.id, 30)
    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert subscribed.wait(30)
    render_id.append(daemon.client.render({"source": str(scenes["tiny"])}).id)
    reader.join(60)
    assert not reader.is_alive(), "the stream never said the render completed"
    numbers = [number for number, _, _ in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    frames = [data["frame"] for _, kind, data in seen
              if kind == "frame" and data["task_id"] == render_id[0]]  # fmt: skip
    assert frames == [1, 2, 3]  # each landed frame, in order, before the completion
    statuses = [d["status"] for _, k, d in seen if k == "task" and d["id"] == render_id[0]]
    assert statuses[0] == "pending" and statuses[-1] == "completed" and "running" in statuses
    middle = numbers[len(numbers) // 2]
    resumed = []
    for event in sse(daemon, last_id=middle):  # a reconnect with Last-Event-ID
        resumed.append(event)
        if event[0] == numbers[-1]:
            break
    assert [number for number, _, _ in resumed] == [n for n in numbers if n > middle]
