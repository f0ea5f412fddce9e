"""Hypothesis throws random JSON, wrong types, deep nesting and odd headers at the API of a real
daemon: every answer is a 4xx (or a success) with a JSON message, never a 5xx, and the daemon
keeps serving."""

import json
import os
from collections.abc import Callable

import httpx
import pytest
from conftest import DaemonProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASES = int(os.environ.get("PI_RENDER_API_FUZZ_CASES", "300"))
ROUTES = ["/tasks", "/tasks/batch", "/render-tasks", "/render-tasks/run_task",
          "/render-tasks/init_new_task", "/workflows/x/runs", "/tasks/abc/cancel",
          "/tasks/0660f2efe12d3bd2c58f/retry", "/queues/default/pause"]  # fmt: skip

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)


json_values = st.recursive(scalars, _containers, max_leaves=30)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"type": st.sampled_from(["noop", "render", "nope", ""]),
                           "args": json_values}).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)  # fmt: skip


@pytest.fixture
def fuzzed(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    return make_daemon("[workers]\ndefault = 1\n").start()


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert "message" in response.json() or "detail" in response.json()


@settings(max_examples=CASES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])  # fmt: skip
@given(
    route=st.sampled_from(ROUTES),
    body=bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; x"]),
)
def test_random_requests_get_4xx_with_a_message(
    fuzzed: DaemonProcess, route: str, body: bytes, content_type: str
) -> None:
    transport = httpx.HTTPTransport(uds=str(fuzzed.socket))
    with httpx.Client(transport=transport, base_url="http://x", timeout=30) as http:
        check(http.post(route, content=body, headers={"content-type": content_type}))


def test_deep_nesting_and_odd_requests(fuzzed: DaemonProcess) -> None:
    transport = httpx.HTTPTransport(uds=str(fuzzed.socket))
    with httpx.Client(transport=transport, base_url="http://x", timeout=30) as http:
        deep = b"[" * 50_000 + b"]" * 50_000
        check(http.post("/tasks", content=deep, headers={"content-type": "application/json"}))
        nested = json.dumps({"type": "noop", "args": {"payload": [[[[[[[[1]]]]]]]]}})
        check(http.post("/tasks", content=nested))
        check(http.get("/tasks", params={"limit": "many", "status": "x" * 5000}))
        check(http.get("/tasks/" + "z" * 4000))
        check(http.request("DELETE", "/tasks"))
        check(http.post("/tasks", content=b"{}", headers={"x-odd": "v" * 8000, "x-e": ""}))
    assert fuzzed.client.health()["status"] == "ok"
