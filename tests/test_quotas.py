"""Per-uid quotas and the submit lock, as `nobody` against a real daemon running as root: what a
user's tasks keep (finished ones too, and uploads) is bounded until they forget tasks, and one
user's slow snapshot never holds back another's submit."""

import threading
from collections.abc import Callable
from pathlib import Path

from conftest import DaemonProcess, wait_until
from test_access import as_nobody, open_socket_to_nobody

QUOTA = 250_000
CONFIG = f'quota_bytes_per_uid = {QUOTA}\n[roles.submitter]\nusers = ["nobody"]\n'
PAYLOAD = {"type": "noop", "args": {"payload": "x" * 60_000}}  # ~120 kB kept once it has run


def finished(daemon: DaemonProcess, task_id: str) -> None:
    wait_until(lambda: daemon.client.get(task_id).status.is_final, what=f"task {task_id} to end")


def test_what_a_user_keeps_is_bounded_until_they_forget_it(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)
    kept = []
    for _ in range(2):
        code, body = as_nobody(daemon, "POST", "/tasks", PAYLOAD)
        assert code == 201, body
        kept.append(str(body["id"]))
        finished(daemon, kept[-1])
    code, refusal = as_nobody(daemon, "POST", "/tasks", PAYLOAD)  # finished tasks count
    assert code == 429 and refusal["error"] == "QuotaExceeded", refusal
    assert "quota_bytes_per_uid" in str(refusal["message"])
    assert "pi-render forget" in str(refusal["message"])
    assert daemon.client.submit("noop", {"payload": "x" * 60_000}).id  # root is exempt

    others = daemon.client.submit("noop", {"sleep_s": 60})
    code, _ = as_nobody(daemon, "DELETE", f"/tasks/{others.id}")
    assert code == 403  # not theirs
    code, busy = as_nobody(daemon, "POST", "/tasks", {"type": "noop", "args": {"sleep_s": 60}})
    assert code == 201, busy
    code, conflict = as_nobody(daemon, "DELETE", f"/tasks/{busy['id']}")
    assert code == 409 and "cancel it first" in str(conflict["message"])
    as_nobody(daemon, "POST", f"/tasks/{busy['id']}/cancel")
    finished(daemon, str(busy["id"]))

    code, gone = as_nobody(daemon, "DELETE", f"/tasks/{kept[0]}")
    assert code == 200 and gone["id"] == kept[0]
    code, _ = as_nobody(daemon, "GET", f"/tasks/{kept[0]}")
    assert code == 404
    assert not (daemon.data_dir / "logs" / f"{kept[0]}.log").exists()
    assert not (daemon.data_dir / "spool" / kept[0]).exists()
    code, body = as_nobody(daemon, "POST", "/tasks", PAYLOAD)  # room again
    assert code == 201, body
    audit = [e for e in daemon.client.audit() if e["action"] == f"DELETE /tasks/{kept[0]}"]
    assert [e["outcome"] for e in audit] == [200]


def test_uploads_never_run_count_too(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)
    code, upload = as_nobody(daemon, "POST", "/render-tasks/init_new_task")
    assert code == 201, upload
    Path(str(upload["file_path"])).write_bytes(b"\0" * (QUOTA + 1))  # written there by its owner
    code, refusal = as_nobody(daemon, "POST", "/render-tasks/init_new_task")
    assert code == 429 and refusal["error"] == "QuotaExceeded", refusal
    code, refusal = as_nobody(daemon, "POST", "/tasks", {"type": "noop"})
    assert code == 429, refusal


def test_a_slow_snapshot_never_holds_back_anyone_elses_submit(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = make_daemon(CONFIG).start()  # nobody's submits are counted: they take the lock
    open_socket_to_nobody(daemon)
    started, gate = tmp_path / "started", tmp_path / "gate"
    answers: list[object] = []
    slow = threading.Thread(
        target=lambda: answers.append(
            daemon.client.submit("gated", {"started": str(started), "gate": str(gate)})
        )
    )
    slow.start()
    try:
        wait_until(started.exists, what="the slow snapshot to begin")
        code, body = as_nobody(daemon, "POST", "/tasks", {"type": "noop"})
        assert code == 201, body
        assert slow.is_alive()  # answered while the other submit was still preparing
    finally:
        gate.touch()
        slow.join(60)
    assert len(answers) == 1  # and that one went through too


def test_tasks_the_daemon_made_itself_are_controlled_by_admins_only(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    cron = '[[cron]]\nname = "tick"\nschedule = "* * * * * *"\ntask = "noop"\n'
    daemon = make_daemon(CONFIG + cron).start()
    open_socket_to_nobody(daemon)

    def cron_task() -> str | None:
        made = [r for r in daemon.client.list(limit=50) if (r.origin or "").startswith("cron:")]
        return made[0].id if made and made[0].status.is_final else None

    wait_until(lambda: cron_task() is not None, what="a cron task to run")
    task_id = cron_task()
    assert daemon.client.get(str(task_id)).submitted_by is None  # nobody's: the daemon's own
    code, refusal = as_nobody(daemon, "DELETE", f"/tasks/{task_id}")
    assert code == 403 and "admin" in str(refusal["message"]), refusal
    code, _ = as_nobody(daemon, "POST", f"/tasks/{task_id}/retry")
    assert code == 403
    assert daemon.client.forget(str(task_id)).id == task_id  # an admin may
