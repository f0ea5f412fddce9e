"""Real projects through the daemon: the snapshot carries every file the .blend needs, the frames
match a bare Blender render of the original, and nothing missing is ever called complete."""

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from blender_env import blender_or_skip, run_blender_script
from conftest import DaemonProcess
from test_access import NOBODY, as_nobody, open_socket_to_nobody

from pi_render.api.client import ApiError
from pi_render.processor.blender import BPY_RUNNER

SANDBOX = 'sandbox = "bwrap"\n'  # where a test is about the sandbox: it must be there
CONFIG = "[workers]\ndefault = 1\nrender = 1\n[retry.render]\nmax_attempts = 1\n"


def pixels(png: Path) -> bytes:
    """The decoded scanlines of a PNG (its IDAT stream inflated): equal pixels, equal bytes."""
    data, at, idat = png.read_bytes(), 8, b""
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        if data[at + 4 : at + 8] == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    return zlib.decompress(idat)


def bare_render(project: Path, out: Path, bpy_python: str | None = None) -> list[bytes]:
    """Frames 1-3 of main.blend rendered by Blender itself from the original project."""
    blend = str(project / "main.blend")
    if bpy_python:
        argv = [bpy_python, str(BPY_RUNNER), blend, str(out / "f_####"), "1..3", "", "", "PNG",
                "1", "0"]  # fmt: skip
    else:
        argv = [str(blender_or_skip()), "-b", "-Y", "-noaudio", blend, "-o", str(out / "f_####"),
                "-F", "PNG", "-x", "1", "-t", "1", "-f", "1..3"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    return [pixels(p) for p in sorted(out.glob("f_*.png"))]


def store_objects(daemon: DaemonProcess) -> list[Path]:
    store = daemon.data_dir / "store"
    return [p for p in store.glob("??/*") if p.is_file()]


@pytest.mark.parametrize("version", ["34", "50"])
def test_a_project_renders_like_bare_blender_and_ignores_later_edits(
    version: str, request: pytest.FixtureRequest, make_daemon: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:  # fmt: skip
    project = shutil.copytree(request.getfixturevalue(f"project{version}"), tmp_path / "proj",
                              symlinks=True)  # fmt: skip
    bpy_python = request.getfixturevalue("bpy_python") if version == "50" else None
    # the absolute library path points into the fixture's own folder: keep it there
    expected = bare_render(project, tmp_path / "bare", bpy_python)
    assert len(expected) == 3
    blender = f'blender = "{bpy_python}"\n' if bpy_python else ""
    daemon = make_daemon(blender + CONFIG, name=f"d{version}").start()
    daemon.client.pause("render", label=True)
    record = daemon.client.render({"source": str(project / "main.blend"),
                                   "output_dir": str(tmp_path / "out")})  # fmt: skip
    # the source project is edited and deleted before the render starts: nothing changes
    (project / "textures" / "wood.png").write_bytes(b"not a picture any more")
    shutil.rmtree(project / "lib")
    (project / "main.blend").unlink()
    daemon.client.pause("render", paused=False, label=True)
    done = daemon.client.wait(record.id, 300)
    assert done.status == "completed", done.error
    assert done.result is not None and done.result["warnings"] == []
    got = [pixels(p) for p in sorted((tmp_path / "out").glob("frame_*.png"))]
    assert got == expected
    assert done.args["snapshot_files"] >= 20 and done.args["snapshot_bytes"] > 1_000_000
    # another copy of the project shares every file but its main.blend (whose absolute library
    # path was rewritten relative to where it lies)
    before = {p: p.stat().st_nlink for p in store_objects(daemon)}
    assert 0 < len(before) <= done.args["snapshot_files"]
    again = daemon.client.render(
        {
            "source": str(project34_copy_of(request, version)),
            "output_dir": str(tmp_path / "out2"),
            "force": True,
        }
    )
    after = {p: p.stat().st_nlink for p in store_objects(daemon)}
    assert set(before) < set(after) and len(set(after) - set(before)) == 1
    # point caches (which Blender may write into) get copies of their own, not links
    caches = len(list(project34_copy_of(request, version).parent.glob("blendcache_main/*")))
    linked = again.args["snapshot_files"] - caches
    assert sum(after.values()) - sum(before.values()) == linked + 1
    cache_copy = next((daemon.data_dir / "spool" / again.id / "root").rglob("*.bphys"))
    assert cache_copy.stat().st_nlink == 1


def project34_copy_of(request: pytest.FixtureRequest, version: str) -> Path:
    """The untouched fixture project (the test's own copy was edited away)."""
    return Path(request.getfixturevalue(f"project{version}")) / "main.blend"


def test_missing_files_refuse_the_submit_unless_allowed(
    project34: Path, renderer_factory: Callable[[], DaemonProcess], tmp_path: Path
) -> None:
    daemon = renderer_factory()
    broken = project34 / "broken" / "broken.blend"
    with pytest.raises(ApiError) as refused:
        daemon.client.render({"source": str(broken)})
    assert refused.value.http_status == 422
    assert "missing_lib.blend" in str(refused.value) and "missing.png" in str(refused.value)
    assert "IMmissing.png" in str(refused.value)  # who refers to it
    assert sum(daemon.client.health()["records"].values()) == 0
    spool = daemon.data_dir / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []

    record = daemon.client.render({"source": str(broken), "allow_missing": True,
                                   "output_dir": str(tmp_path / "out")})  # fmt: skip
    assert any("missing_lib.blend" in w for w in record.args["warnings"])
    done = daemon.client.wait(record.id, 300)
    assert done.status == "completed", done.error
    warnings = done.result["warnings"] if done.result else []
    assert any("missing.png" in w for w in warnings)
    assert any("Unable to open" in w and "missing_lib.blend" in w for w in warnings)  # the log


def test_a_render_whose_log_reports_a_missing_asset_is_not_completed(
    project34: Path, renderer_factory: Callable[[], DaemonProcess], tmp_path: Path
) -> None:
    project = shutil.copytree(project34, tmp_path / "proj", symlinks=True)
    # lib.blend is a valid .blend, but no longer has the object main.blend links from it
    shutil.copyfile(project / "lib" / "nested" / "deep.blend", project / "lib" / "lib.blend")
    daemon = renderer_factory()
    record = daemon.client.render({"source": str(project / "main.blend"),
                                   "output_dir": str(tmp_path / "out")})  # fmt: skip
    done = daemon.client.wait(record.id, 300)
    assert done.status == "failed"
    assert done.error is not None and done.error.type == "MissingAssets"
    assert "LibCube" in done.error.message


def test_a_zipped_project_is_traced_inside_the_zip(
    project34: Path, renderer_factory: Callable[[], DaemonProcess], tmp_path: Path
) -> None:
    archive = tmp_path / "project.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(project34.rglob("*")):
            if path.is_file() and "render" not in path.parts:
                zipped.write(path, path.relative_to(project34).as_posix())
    daemon = renderer_factory()
    with pytest.raises(ApiError) as refused:  # the absolute library is outside the zip
        daemon.client.render({"source": str(archive), "blend": "main.blend"})
    assert refused.value.http_status == 422 and "abs_lib.blend" in str(refused.value)
    assert "outside the allowed roots" in str(refused.value)


def test_dependencies_outside_the_roots_or_unreadable_are_refused_as_nobody(
    project34: Path, make_daemon: Callable[..., DaemonProcess]
) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:  # pytest's folders are root's alone
        refused_as_nobody(project34, make_daemon, Path(shared))


def refused_as_nobody(project34: Path, make_daemon: Callable[..., DaemonProcess],
                      tmp_path: Path) -> None:  # fmt: skip
    home = tmp_path / "home"
    project = shutil.copytree(project34, home / "proj", symlinks=True)
    outside = tmp_path / "secret.png"
    shutil.copyfile(project / "textures" / "wood.png", outside)
    os.chmod(outside, 0o600)  # root's alone
    (project / "textures" / "wood.png").unlink()
    (project / "textures" / "wood.png").symlink_to(outside)  # a symlink leading out of the roots
    (project / "sounds" / "beep.wav").chmod(0o600)  # inside the roots, but not nobody's to read
    for folder in [tmp_path, home, *[p for p in project.rglob("*") if p.is_dir()], project]:
        folder.chmod(0o755)
    for path in project.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name != "beep.wav":
            path.chmod(0o644)
    config = (f'source_roots = ["{home}", "{project34}"]\n'
              f'[roles.submitter]\nusers = ["nobody"]\n{CONFIG}')  # fmt: skip
    daemon = make_daemon(config).start()
    open_socket_to_nobody(daemon)
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    code, body = as_nobody(
        daemon,
        "POST",
        "/render-tasks",
        {"source": str(project / "main.blend"), "output_dir": str(out)},
    )
    assert code == 422, body
    missing = body["missing"]
    assert isinstance(missing, list)
    problems = {os.path.basename(m["resolved"]): m["problem"] for m in missing}
    assert problems["wood.png"].startswith("outside the allowed roots")
    assert problems["beep.wav"] == f"not readable by uid {NOBODY.pw_uid}"
    assert not (daemon.data_dir / "store").exists() or store_objects(daemon) == []


@pytest.fixture
def renderer_factory(make_daemon: Callable[..., DaemonProcess]) -> Callable[[], DaemonProcess]:
    return lambda: make_daemon(CONFIG).start()


MAKE_HOSTILE = Path(__file__).parent / "blender" / "make_hostile.py"


def hostile_projects(where: Path, secret: Path, escape: Path | None = None) -> Path:
    escape = escape or where / "escape-unused"
    run_blender_script(blender_or_skip(), MAKE_HOSTILE, str(where), str(secret), str(escape))
    return where


def test_a_library_reached_by_two_paths_never_points_blender_outside(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:  # pytest's folders are root's alone
        top = Path(shared)
        top.chmod(0o755)
        secret = top / "root-only.png"
        secret.write_bytes(b"ROOT-ONLY-PICTURE")
        secret.chmod(0o600)
        project = hostile_projects(top / "p", secret) / "alias"
        config = f'source_roots = ["{project}"]\n[roles.submitter]\nusers = ["nobody"]\n{CONFIG}'
        daemon = make_daemon(config).start()
        open_socket_to_nobody(daemon)
        out = top / "out"
        out.mkdir()
        out.chmod(0o777)
        request = {"source": str(project / "main.blend"), "output_dir": str(out)}
        code, refused = as_nobody(daemon, "POST", "/render-tasks", request)
        assert code == 422 and "root-only.png" in str(refused["missing"])
        code, record = as_nobody(
            daemon, "POST", "/render-tasks", {**request, "allow_missing": True}
        )
        assert code == 201, record
        spool = daemon.data_dir / "spool" / str(record["id"]) / "root"
        blends = list(spool.rglob("*.blend"))
        assert len(blends) == 3  # main, lib and the alias: each its own, traced copy
        for blend in blends:
            assert str(secret).encode() not in blend.read_bytes(), blend
        stored = [p.read_bytes() for p in store_objects(daemon)]
        assert b"ROOT-ONLY-PICTURE" not in stored
        assert daemon.client.wait(str(record["id"]), 120).status.is_final  # before the folder goes


def test_blender_cannot_write_into_files_that_snapshots_share(
    renderer_factory: Callable[[], DaemonProcess], tmp_path: Path
) -> None:
    (tmp_path / "unused.png").write_bytes(b"x")
    project = hostile_projects(tmp_path / "p", tmp_path / "unused.png") / "writer"
    original = (project / "Image0001.png").read_bytes()
    daemon = renderer_factory()
    first = daemon.client.render({"source": str(project / "main.blend"),
                                  "output_dir": str(tmp_path / "o1")})  # fmt: skip
    daemon.client.wait(first.id, 300)  # its compositor tries to write over //Image0001.png
    for stored in store_objects(daemon):
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == stored.name
    shared = daemon.data_dir / "spool" / first.id / "root" / str(project / "Image0001.png")[1:]
    assert shared.read_bytes() == original


def test_blender_writes_nowhere_but_its_partial_folder(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    (tmp_path / "unused.png").write_bytes(b"x")
    escape = tmp_path / "escape"  # root's, 0755: the daemon's user could write here
    escape.mkdir()
    project = hostile_projects(tmp_path / "p", tmp_path / "unused.png", escape) / "escape"
    daemon = make_daemon(SANDBOX + CONFIG).start()
    assert daemon.client.health()["sandbox"]["kind"] == "bwrap"
    record = daemon.client.render({"source": str(project / "main.blend"),
                                   "output_dir": str(tmp_path / "out")})  # fmt: skip
    done = daemon.client.wait(record.id, 300)
    assert done.status == "completed", done.error  # its own frame is rendered…
    assert list(escape.iterdir()) == []  # …and its File Output wrote nothing outside


def test_zip_bombs_and_zips_of_too_many_entries_are_refused(
    renderer_factory: Callable[[], DaemonProcess], tmp_path: Path
) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zipped:
        with zipped.open("main.blend", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(300):  # 300 MiB of zeros in ~300 KB
                member.write(zeros)
    crowd = tmp_path / "crowd.zip"
    with zipfile.ZipFile(crowd, "w") as zipped:
        for index in range(10_001):
            zipped.writestr(f"f/{index}.txt", "")
    daemon = renderer_factory()
    for archive, needle in ((bomb, "zip bomb"), (crowd, "more than 10000 entries")):
        with pytest.raises(ApiError) as refused:
            daemon.client.render({"source": str(archive), "blend": "main.blend"})
        assert refused.value.http_status == 422 and needle in str(refused.value)
    spool = daemon.data_dir / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []
