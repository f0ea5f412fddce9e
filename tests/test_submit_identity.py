"""Every submit route knows who asks: single, batch, workflow and upload-then-run each record the
caller and apply every check to each task (readable by them, their per-uid cap), as `nobody`
against a real daemon running as root."""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from blender_env import blender_or_skip
from conftest import DaemonProcess
from test_access import NOBODY, as_nobody, open_socket_to_nobody


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder in /tmp that `nobody` may pass through (pytest's own are root's alone)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        shared = Path(folder)
        shared.chmod(0o755)
        yield shared


def public_copy(source: Path, target: Path) -> Path:
    """A copy anyone may read (0644)."""
    shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


CONFIG = (
    'max_queued_per_uid = 2\n[roles.submitter]\nusers = ["nobody"]\n'
    "[workers]\ndefault = 1\nrender = 1\n[retry.render]\nmax_attempts = 1\n"
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

    # someone else's upload (an admin's here) cannot be run as theirs (their own can: below)
    task_id, upload = daemon.client.init_new_task()
    shutil.copyfile(scenes["tiny"], upload)
    code, refusal = as_nobody(daemon, "POST", "/render-tasks/run_task", {"task_id": task_id})
    assert code == 403 and "is not uid" in str(refusal["message"]), refusal

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


SWAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b, stop = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3]
while not os.path.exists(stop):
    libc.renameat2(-100, a, -100, b, 2)  # RENAME_EXCHANGE: the two names trade places
"""


def test_a_source_swapped_while_it_is_checked_is_never_snapshotted(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], shared: Path
) -> None:
    secret = shared / "root-only.blend"
    shutil.copyfile(scenes["long"], secret)
    secret.chmod(0o600)
    mine = shared / "mine"
    mine.mkdir()
    os.chown(mine, NOBODY.pw_uid, NOBODY.pw_gid)
    source, decoy = mine / "scene.blend", mine / "decoy.blend"
    shutil.copyfile(scenes["tiny"], source)
    decoy.symlink_to(secret)
    for path in (source, decoy):
        os.lchown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    daemon = make_daemon(CONFIG.replace("max_queued_per_uid = 2", "")).start()
    open_socket_to_nobody(daemon)
    daemon.client.pause("render", label=True)
    stop = shared / "stop"

    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)

    swapper = subprocess.Popen(["/usr/bin/python3", "-c", SWAPPER, str(source), str(decoy),
                                str(stop)], preexec_fn=drop)  # fmt: skip
    try:
        outcomes = [as_nobody(daemon, "POST", "/render-tasks",
                              {"source": str(source), "force": True})
                    for _ in range(40)]  # fmt: skip
    finally:
        stop.touch()
        swapper.wait(10)
    secret_bytes = secret.read_bytes()
    accepted = [body for code, body in outcomes if code in (200, 201)]
    assert all(code in (200, 201, 403, 422) for code, _ in outcomes), outcomes
    for body in accepted:
        copy = Path(str(body["args"]["snapshot"]))  # type: ignore[index]
        assert copy.read_bytes() != secret_bytes
    if source.is_symlink():  # the swapper stopped half-way: put the names back
        os.rename(source, shared / "tmp")
        os.rename(decoy, source)
        os.rename(shared / "tmp", decoy)
    code, body = as_nobody(daemon, "POST", "/render-tasks", {"source": str(source), "force": True})
    assert code == 201, body  # and the user's own file is still taken


def test_without_a_sandbox_only_the_daemons_own_user_may_render(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    daemon = make_daemon('sandbox = "none"\n' + CONFIG).start()
    open_socket_to_nobody(daemon)
    assert daemon.client.health()["sandbox"]["kind"] == "none"
    code, refusal = as_nobody(daemon, "POST", "/render-tasks", {"source": str(scenes["tiny"])})
    assert code == 403 and "no sandbox" in str(refusal["message"])
    assert daemon.client.render({"source": str(scenes["tiny"])}).id  # the daemon's own uid may


def test_inspect_reads_only_regular_files_the_submitter_may_read(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], shared: Path
) -> None:
    fifo = shared / "fifo.blend"
    os.mkfifo(fifo)
    fifo.chmod(0o666)
    private = shared / "private"
    private.mkdir(mode=0o700)
    shutil.copyfile(scenes["tiny"], private / "there.blend")
    mine = public_copy(scenes["tiny"], shared / "mine.blend")
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)

    def inspect(path: Path | str) -> tuple[int, dict[str, object]]:
        body = {"type": "inspect_blend", "args": {"path": str(path)}}
        return as_nobody(daemon, "POST", "/tasks", body)

    for hostile in ("/dev/zero", fifo):  # each refused at once: nothing grows or blocks
        code, refusal = inspect(hostile)
        assert code in (403, 422), refusal
    there, absent = inspect(private / "there.blend"), inspect(private / "absent.blend")
    assert there[0] == absent[0] == 422  # the same answer: no oracle
    assert "not readable by uid" in str(there[1]["message"])
    assert "not readable by uid" in str(absent[1]["message"])
    code, record = inspect(mine)
    assert code == 201, record
    done = daemon.client.wait(str(record["id"]), 30)
    assert done.status == "completed" and done.result is not None
    assert done.result["path"] == str(mine) and done.result["scene"]["name"] == "Scene"
    assert daemon.client.health()["status"] == "ok"


def test_malformed_requests_get_422_and_are_audited(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)
    nul = {"type": "inspect_blend", "args": {"path": "/tmp/a\u0000b.blend"}}
    code, refusal = as_nobody(daemon, "POST", "/tasks", nul)
    assert code == 422 and "NUL" in str(refusal), refusal
    code, refusal = as_nobody(
        daemon, "POST", "/render-tasks", {"source": "/x.blend", "timeout_s": float("inf")}
    )
    assert code == 422, refusal
    code, _ = as_nobody(daemon, "GET", "/tasks?offset=" + "9" * 30)
    assert code == 422
    record = daemon.client.submit("noop", {})
    code, _ = as_nobody(daemon, "GET", f"/tasks/{record.id}/log?offset=" + "9" * 30)
    assert code == 422
    big = {"type": "noop", "args": {"payload": {"blob": "x" * (100 << 10)}}}  # kept for weeks
    code, refusal = as_nobody(daemon, "POST", "/tasks", big)
    assert code == 422 and "max_args_bytes" in str(refusal["message"]), refusal
    code, refusal = as_nobody(
        daemon, "POST", "/render-tasks", {"source": "/x.blend", "engine": "../../x"}
    )
    assert code == 422 and "engine" in str(refusal), refusal
    audit = (daemon.data_dir / "audit.jsonl").read_text()
    assert audit.count('"POST /tasks"') >= 1 and "422" in audit
    assert "running as root" in daemon.log()


def test_the_data_dir_keeps_its_files_to_the_daemon_whatever_the_umask(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    old = os.umask(0o022)  # the daemon inherits it: a careless start by hand
    try:
        daemon = make_daemon(CONFIG).start()
    finally:
        os.umask(old)
    daemon.client.submit("noop", {})
    data = daemon.data_dir
    assert data.stat().st_mode & 0o777 == 0o711
    for name in ("queues", "spool", "logs", "store"):
        assert (data / name).stat().st_mode & 0o777 == 0o700, name
    for name in ("records.sqlite", "audit.jsonl", "frames.sqlite"):
        assert (data / name).stat().st_mode & 0o777 == 0o600, name
    reader = subprocess.run(["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
                             "--clear-groups", "cat", str(data / "audit.jsonl")],
                            capture_output=True, text=True)  # fmt: skip
    assert reader.returncode != 0 and "Permission denied" in reader.stderr


def test_an_identical_render_is_shared_only_with_its_own_submitter(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], shared: Path
) -> None:
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)
    daemon.client.pause("render", label=True)  # they wait: identical and live
    scene = public_copy(scenes["tiny"], shared / "tiny.blend")
    request = {"source": str(scene)}
    roots = daemon.client.render(request)
    code, theirs = as_nobody(daemon, "POST", "/render-tasks", request)
    assert code == 201 and theirs["id"] != roots.id  # not root's task: one of their own
    code, again = as_nobody(daemon, "POST", "/render-tasks", request)
    assert code == 200 and again["id"] == theirs["id"]  # their own identical one, shared


def test_outputs_go_only_where_the_submitter_may_write_and_belong_to_them(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], shared: Path
) -> None:
    scene = public_copy(scenes["tiny"], shared / "tiny.blend")
    theirs = shared / "alice"  # another user's folder (root's here), 0700
    theirs.mkdir(mode=0o700)
    (theirs / "frame_0001.png").write_bytes(b"alice's frame")
    mine = shared / "mine"
    mine.mkdir()
    os.chown(mine, NOBODY.pw_uid, NOBODY.pw_gid)
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)

    code, refusal = as_nobody(
        daemon,
        "POST",
        "/render-tasks",
        {"source": str(scene), "output_dir": str(theirs / "out")},
    )
    assert code == 403 and "may not write" in str(refusal["message"]), refusal

    code, record = as_nobody(
        daemon, "POST", "/render-tasks", {"source": str(scene), "output_dir": str(mine / "out")}
    )
    assert code == 201, record
    done = daemon.client.wait(str(record["id"]), 120)
    assert done.status == "completed", done.error
    frames = sorted((mine / "out").glob("frame_*.png"))
    assert len(frames) == 3 and all(f.stat().st_uid == NOBODY.pw_uid for f in frames)
    assert (mine / "out").stat().st_uid == NOBODY.pw_uid  # the folder made for them too
    code, default = as_nobody(
        daemon, "POST", "/render-tasks", {"source": str(scene), "force": True}
    )
    assert code == 201, default
    done = daemon.client.wait(str(default["id"]), 120)
    assert done.status == "completed" and done.result is not None
    assert Path(done.result["output_dir"]).stat().st_uid == NOBODY.pw_uid  # output/<id> too

    # the (still empty) output folder swapped for a link to someone else's after submit
    daemon.client.pause("render", label=True)
    later = mine / "later"
    later.mkdir()
    os.chown(later, NOBODY.pw_uid, NOBODY.pw_gid)
    code, record = as_nobody(daemon, "POST", "/render-tasks", {
        "source": str(scene), "output_dir": str(later), "force": True})  # fmt: skip
    assert code == 201, record
    later.rmdir()
    later.symlink_to(theirs)
    daemon.client.pause("render", paused=False, label=True)
    done = daemon.client.wait(str(record["id"]), 120)
    assert done.status == "failed" and done.error is not None
    assert done.error.type == "UnwritableOutput" and "link" in done.error.message
    assert sorted(p.name for p in theirs.iterdir()) == ["frame_0001.png"]
    assert (theirs / "frame_0001.png").read_bytes() == b"alice's frame"


def test_an_upload_is_its_uploaders_alone_and_only_a_regular_file(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path]
) -> None:
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)

    above = [p for p in daemon.data_dir.parents if p.is_relative_to("/tmp") and p != Path("/tmp")]
    modes = {p: p.stat().st_mode & 0o7777 for p in above}
    for folder in above:  # as an admin would: users may pass, not list
        folder.chmod(0o711)
    try:
        uploaded_and_run(daemon, scenes)
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)


def uploaded_and_run(daemon: DaemonProcess, scenes: dict[str, Path]) -> None:
    def as_nobody_write(path: str, data: bytes) -> None:
        subprocess.run(["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
                        "--clear-groups", "dd", f"of={path}", "status=none"],
                       input=data, check=True)  # fmt: skip

    code, upload = as_nobody(daemon, "POST", "/render-tasks/init_new_task", {})
    assert code == 201, upload
    folder = Path(str(upload["file_path"])).parent
    assert folder.stat().st_uid == NOBODY.pw_uid and folder.stat().st_mode & 0o777 == 0o700
    as_nobody_write(str(upload["file_path"]), scenes["tiny"].read_bytes())
    code, record = as_nobody(daemon, "POST", "/render-tasks/run_task",
                             {"task_id": upload["task_id"]})  # fmt: skip
    assert code == 201 and record["submitted_by"]["uid"] == NOBODY.pw_uid  # type: ignore[index]
    assert daemon.client.wait(str(record["id"]), 120).status == "completed"

    code, upload = as_nobody(daemon, "POST", "/render-tasks/init_new_task", {})
    link = Path(str(upload["file_path"]))
    subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY.pw_uid}",
            f"--regid={NOBODY.pw_gid}",
            "--clear-groups",
            "ln",
            "-s",
            "/etc/hostname",
            str(link),
        ],
        check=True,
    )
    code, refusal = as_nobody(daemon, "POST", "/render-tasks/run_task",
                              {"task_id": upload["task_id"]})  # fmt: skip
    assert code == 403 and "not a regular file" in str(refusal["message"]), refusal


def test_a_refusal_never_tells_where_a_link_leads_in_folders_the_submitter_cannot_read(
    make_daemon: Callable[..., DaemonProcess], shared: Path
) -> None:
    hidden = shared / "hidden"  # root's alone: nobody cannot list or search it
    hidden.mkdir(mode=0o700)
    target = hidden / "project-codename-x" / "shot.blend"
    target.parent.mkdir()
    target.write_bytes(b"BLENDER-v304")
    roots = shared / "roots"
    roots.mkdir(mode=0o755)
    link = roots / "link.blend"
    link.symlink_to(target)
    daemon = make_daemon(f'source_roots = ["{roots}"]\n' + CONFIG).start()
    open_socket_to_nobody(daemon)
    code, refusal = as_nobody(daemon, "POST", "/render-tasks", {"source": str(link)})
    assert code == 403 and "outside the allowed roots" in str(refusal["message"]), refusal
    assert "codename" not in str(refusal)  # the daemon followed it as root; they may not
    code, refusal = as_nobody(daemon, "POST", "/tasks",
                              {"type": "inspect_blend", "args": {"path": str(link)}})  # fmt: skip
    assert code == 403 and "codename" not in str(refusal), refusal
    with pytest.raises(Exception, match="codename"):  # root is told, to debug its own links
        daemon.client.render({"source": str(link)})


RENAME_TO_SAVED_LINE = """import bpy, sys
out, target = sys.argv[sys.argv.index("--") + 1:][:2]
obj = next(o for o in bpy.data.objects if o.type == "MESH")
obj.name = f"Saved: '{target}'"  # Blender prints object names in its log while it renders
bpy.ops.wm.save_as_mainfile(filepath=out)
"""


def test_a_saved_line_in_blenders_log_never_takes_a_file_from_elsewhere(
    make_daemon: Callable[..., DaemonProcess], scenes: dict[str, Path], shared: Path
) -> None:
    victim_dir = shared / "victim"  # root's alone
    victim_dir.mkdir(mode=0o700)
    victim = victim_dir / "frame_0001.png"
    secret = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0" * 13 + b"SECRET-OF-ROOT"
    victim.write_bytes(secret)
    victim.chmod(0o600)
    script, evil = shared / "rename.py", shared / "evil.blend"
    script.write_text(RENAME_TO_SAVED_LINE)
    subprocess.run([str(blender_or_skip()), "-b", str(scenes["tiny"]), "--python", str(script),
                    "--", str(evil), str(victim)], check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    evil.chmod(0o644)
    daemon = make_daemon(CONFIG).start()
    open_socket_to_nobody(daemon)
    code, body = as_nobody(daemon, "POST", "/render-tasks",
                           {"source": str(evil), "start_frame": 1, "end_frame": 1})  # fmt: skip
    assert code == 201, body
    done = daemon.client.wait(str(body["id"]), 300)
    assert victim.read_bytes() == secret and victim.stat().st_uid == 0  # still root's, in place
    assert "Saved: '" in daemon.client.log(done.id)[0]  # the line was there to be believed
    for frame in (done.result or {}).get("frames", []):
        assert b"SECRET-OF-ROOT" not in Path(frame["path"]).read_bytes()
