"""Every submit route knows who asks: single, batch, workflow and upload-then-run each record the
caller and apply every check to each task (readable by them, their per-uid cap), as `nobody`
against a real daemon running as root."""

import shutil
from collections.abc import Callable
from pathlib import Path

from conftest import DaemonProcess
from test_access import NOBODY, as_nobody, open_socket_to_nobody

CONFIG = (
    'max_queued_per_uid = 2\n[roles.submitter]\nusers = ["nobody"]\n'
    "[workers]\ndefault = 1\nrender = 1\n"
    '[[workflows]]\nname = "shot"\nsteps = [{type = "render", args = {source = "{file}"}}]\n'
)


def test_every_submit_route_records_who_asked_and_checks_it(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)
    secret = daemon.socket.parent / "secret.blend"  # a folder nobody can search (0755)
    shutil.copyfile(scenes["tiny"], secret)
    secret.chmod(0o600)

    # upload (written by an admin here), then run: the run is nobody's
    task_id, upload = daemon.client.init_new_task()
    shutil.copyfile(scenes["tiny"], upload)
    code, record = as_nobody(daemon, "POST", "/render-tasks/run_task", {"task_id": task_id})
    assert code == 201, record
    assert record["submitted_by"]["uid"] == NOBODY.pw_uid  # type: ignore[index]
    daemon.client.cancel(task_id)

    render = {"type": "render", "args": {"source": str(secret)}}
    code, refusal = as_nobody(daemon, "POST", "/tasks/batch", {"tasks": [render]})
    assert code == 403 and "may not read" in str(refusal["message"])
    code, refusal = as_nobody(daemon, "POST", "/workflows/shot/runs", {"file": str(secret)})
    assert code == 403 and "may not read" in str(refusal["message"]), refusal

    noop = {"type": "noop", "args": {"sleep_s": 60}}
    code, refusal = as_nobody(daemon, "POST", "/tasks/batch", {"tasks": [noop] * 3})
    assert code == 429 and "max_queued_per_uid" in str(refusal["message"])
    assert daemon.client.health()["records"].get("pending", 0) == 0  # all or nothing
    code, made = as_nobody(daemon, "POST", "/tasks/batch", {"tasks": [noop] * 2})
    assert code == 201, made
    for task in daemon.client.list(limit=10):
        if task.type == "noop":
            assert task.submitted_by is not None and task.submitted_by["uid"] == NOBODY.pw_uid
    audit = (daemon.data_dir / "audit.jsonl").read_text()
    batch_lines = [line for line in audit.splitlines() if "/tasks/batch" in line]
    assert any(task.id in batch_lines[-1] for task in daemon.client.list(limit=10))
