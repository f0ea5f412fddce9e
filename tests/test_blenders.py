"""The right Blender for each file: several installed (Debian's 3.4 and the bpy 5.0.1 wheel), each
file renders on the oldest that opens it, and a file newer than all of them is refused at
submit with the versions needed and there."""

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from blender_env import blender_or_skip
from conftest import DaemonProcess

from pi_render.api.client import ApiError
from pi_render.processor.blender import BlenderInstall, find_blenders, pick_blender

CONFIG = "[workers]\ndefault = 1\nrender = 1\n[retry.render]\nmax_attempts = 1\n"


def install(version: str, name: str = "") -> BlenderInstall:
    return BlenderInstall("executable", f"/opt/{name or version}/blender", version)


def test_a_file_gets_the_oldest_blender_that_opens_it_and_an_old_file_the_newest() -> None:
    there = [install("4.2.3"), install("3.4.1"), install("5.0.1")]
    assert pick_blender(there, "3.4") == there[1]
    assert pick_blender(there, "3.6") == there[0]
    assert pick_blender(there, "5.0") == there[2]
    assert pick_blender(there, "5.1") is None
    assert pick_blender(there, "2.79") == there[2]  # before 3.0: the newest opens it best
    assert pick_blender(there, "3.4", at_least="4.0") == there[0]  # the task asks for more
    assert pick_blender(there, None) == there[0]  # version unknown: the default
    assert pick_blender([install("3.4.1")], "3.4") is not None


def test_both_blenders_of_this_machine_are_found_with_their_versions(bpy_python: str) -> None:
    debian = str(blender_or_skip())
    found = find_blenders(debian, [bpy_python, debian])  # the same one twice counts once
    assert [(b.kind, b.version) for b in found] == [("executable", "3.4.1"), ("bpy", "5.0.1")]


def blender_of_run(daemon: DaemonProcess, task_id: str) -> str:
    """The program the task's log says its Blender run started (inside the sandbox's argv)."""
    log = (daemon.data_dir / "logs" / f"{task_id}.log").read_text()
    command = next(line for line in log.splitlines() if line.startswith("$ "))
    return command


def test_a_50_file_renders_on_50_and_a_34_file_on_34(
    make_daemon: Callable[..., DaemonProcess], project50: Path, scenes: dict[str, Path],
    bpy_python: str, tmp_path: Path,
) -> None:  # fmt: skip
    debian = str(blender_or_skip())
    config = f'blender = "{debian}"\n{CONFIG}[[blenders]]\npath = "{bpy_python}"\n'
    daemon = make_daemon(config).start()
    project = shutil.copytree(project50, tmp_path / "p50", symlinks=True)
    new = daemon.client.render({"source": str(project / "main.blend"),
                                "output_dir": str(tmp_path / "out50")})  # fmt: skip
    old = daemon.client.render({"source": str(scenes["tiny"]),
                                "output_dir": str(tmp_path / "out34")})  # fmt: skip
    assert new.args["blend_version"] == "5.0" and old.args["blend_version"] == "3.4"
    for record in (new, old):
        done = daemon.client.wait(record.id, 300)
        assert done.status == "completed", done.error
    assert bpy_python in blender_of_run(daemon, new.id)
    assert debian in blender_of_run(daemon, old.id) and bpy_python not in blender_of_run(
        daemon, old.id
    )
    assert len(list((tmp_path / "out50").glob("frame_*.png"))) == 3
    listed = subprocess.run([sys.executable, "-m", "pi_render", "blenders", "--json",
                             "--socket", str(daemon.socket)], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert [b["version"] for b in json.loads(listed.stdout)] == ["3.4.1", "5.0.1"]


def test_a_file_newer_than_every_blender_is_refused_at_submit_naming_both_versions(
    make_daemon: Callable[..., DaemonProcess], project50: Path, tmp_path: Path
) -> None:
    debian = str(blender_or_skip())
    daemon = make_daemon(f'blender = "{debian}"\n{CONFIG}').start()
    project = shutil.copytree(project50, tmp_path / "p50", symlinks=True)
    with pytest.raises(ApiError) as refused:
        daemon.client.render({"source": str(project / "main.blend")})
    assert refused.value.http_status == 422
    message = str(refused.value)
    assert "saved by Blender 5.0" in message and "installed: 3.4.1" in message
    assert daemon.client.list() == []  # nothing was written
    assert not any((daemon.data_dir / "spool").iterdir())  # no snapshot left behind
