"""Who may do what on the socket: a client running as `nobody` (curl, as root drops to it) is
refused or allowed by role, each refusal is audited, and a record names who submitted it."""

import grp
import json
import os
import pwd
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DaemonProcess

if os.geteuid() != 0:
    pytest.skip("needs root to act as a second user", allow_module_level=True)

NOBODY = pwd.getpwnam("nobody")


def as_nobody(
    daemon: DaemonProcess, method: str, path: str, body: object = None
) -> tuple[int, dict[str, object]]:
    argv = [
        "curl",
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
        str(daemon.socket),
        "-X",
        method,
        f"http://pi-render{path}",
    ]
    if body is not None:
        argv += ["-H", "content-type: application/json", "-d", json.dumps(body)]

    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)

    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, preexec_fn=drop)
    text, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(text) if text.strip() else {}


def open_socket_to_nobody(daemon: DaemonProcess) -> None:
    """The socket is 0660: give it nobody's group, as an admin would with the service's group."""
    for folder in (daemon.socket.parent.parent, daemon.socket.parent):
        folder.chmod(0o755)
    os.chown(daemon.socket, -1, NOBODY.pw_gid)


def test_a_viewer_may_look_but_not_submit(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon('[roles.viewer]\nusers = ["nobody"]\n').start()
    open_socket_to_nobody(daemon)
    code, health = as_nobody(daemon, "GET", "/health")
    assert code == 200 and health["status"] == "ok"
    code, refusal = as_nobody(daemon, "POST", "/tasks", {"type": "noop"})
    assert code == 403 and "needs the submitter role" in str(refusal["message"])
    assert sum(daemon.client.health()["records"].values()) == 0
    (entry,) = [e for e in daemon.client.audit() if e["uid"] == NOBODY.pw_uid]
    assert entry["action"] == "POST /tasks" and entry["outcome"] == "refused: 403"
    code, _ = as_nobody(daemon, "GET", "/audit")
    assert code == 403


def test_a_submitter_controls_its_own_tasks_only(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon('[roles.submitter]\nusers = ["nobody"]\n').start()
    open_socket_to_nobody(daemon)
    code, mine = as_nobody(daemon, "POST", "/tasks", {"type": "noop", "args": {"sleep_s": 60}})
    assert code == 201
    record = daemon.client.get(str(mine["id"]))
    assert record.submitted_by is not None and record.submitted_by["uid"] == NOBODY.pw_uid
    roots = daemon.client.submit("noop", {"sleep_s": 60})  # root's task
    code, refusal = as_nobody(daemon, "POST", f"/tasks/{roots.id}/cancel")
    assert code == 403 and "needs the admin role" in str(refusal["message"])
    code, _ = as_nobody(daemon, "POST", "/queues/default/pause")
    assert code == 403
    code, cancelled = as_nobody(daemon, "POST", f"/tasks/{record.id}/cancel")
    assert code in (200, 202)
    assert daemon.client.cancel(roots.id).id == roots.id  # root is an admin
    actions = {(e["action"], e["outcome"]) for e in daemon.client.audit()
               if e["uid"] == NOBODY.pw_uid}  # fmt: skip
    assert ("POST /tasks", 201) in actions
    assert (f"POST /tasks/{roots.id}/cancel", "refused: 403") in actions
    submits = [e for e in daemon.client.audit() if e["action"] == "POST /tasks"]
    assert {e["task_id"] for e in submits} >= {record.id, roots.id}


def test_the_audit_log_is_append_only_json_lines(daemon: DaemonProcess) -> None:
    daemon.client.submit("noop", {})
    path = Path(daemon.data_dir) / "audit.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines and {"time", "uid", "pid", "action", "task_id", "outcome"} <= set(lines[-1])


def test_a_uid_may_queue_only_so_many_and_only_what_it_can_read(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    config = 'max_queued_per_uid = 2\n[roles.submitter]\nusers = ["nobody"]\n'
    daemon = make_daemon(config).start()
    open_socket_to_nobody(daemon)
    for _ in range(2):
        code, _ = as_nobody(daemon, "POST", "/tasks", {"type": "noop", "args": {"sleep_s": 60}})
        assert code == 201
    code, refusal = as_nobody(daemon, "POST", "/tasks", {"type": "noop"})
    assert code == 429 and "already has 2 tasks" in str(refusal["message"])
    assert daemon.client.submit("noop", {}).id  # root is exempt

    folder = daemon.socket.parent  # a folder nobody can search (0755)
    secret = folder / "secret.blend"
    secret.write_bytes(b"BLENDER-v304 not for nobody")
    secret.chmod(0o600)
    code, refusal = as_nobody(daemon, "POST", "/render-tasks", {"source": str(secret)})
    assert code == 403 and "may not read" in str(refusal["message"])
    secret.chmod(0o644)  # now it may read it: the refusal is about the file itself
    code, refusal = as_nobody(daemon, "POST", "/render-tasks", {"source": str(secret)})
    assert code == 422 and "cannot render" in str(refusal["message"])


def test_the_socket_group_lets_its_members_in_and_gives_them_nothing_of_the_data_dir(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    group = grp.getgrgid(NOBODY.pw_gid).gr_name  # nobody's group, standing in for pi-render-users
    daemon = make_daemon(f'socket_group = "{group}"\n')
    for folder in (daemon.socket.parent.parent, daemon.socket.parent):
        folder.chmod(0o755)
    daemon.start()
    info = daemon.socket.stat()
    assert info.st_gid == NOBODY.pw_gid and stat.S_IMODE(info.st_mode) == 0o660
    assert Path(daemon.data_dir).stat().st_gid != NOBODY.pw_gid  # the data dir is not theirs
    code, mine = as_nobody(daemon, "POST", "/tasks", {"type": "noop"})  # no chown by hand
    assert code == 201  # the socket's group may submit when no submitter group is named
    assert (daemon.client.get(str(mine["id"])).submitted_by or {}).get("uid") == NOBODY.pw_uid


def test_a_socket_group_that_does_not_exist_stops_the_start_with_its_name(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon('socket_group = "no-such-group-here"\n')
    with pytest.raises(AssertionError, match="daemon exited") as refused:
        daemon.start()
    assert "socket_group 'no-such-group-here': no such group" in str(refused.value)
