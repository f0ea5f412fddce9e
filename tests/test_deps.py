"""Tracing what a .blend needs, checked against Blender's own `bpy.utils.blend_paths()` on projects
made by Blender 3.4 and bpy 5.0.1, and against hostile layouts."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_blend_robustness import FUZZ_CASES, block_offsets

from pi_render.blend import BlendFileError, TooManyDependencies, Trace, trace_dependencies
from pi_render.blend.trace import resolve


@pytest.fixture(params=["34", "50"])
def project(request: pytest.FixtureRequest) -> Path:
    """The project made by Blender 3.4, then by the bpy 5.0.1 wheel."""
    made: Path = request.getfixturevalue(f"project{request.param}")
    return made


def blender_view(trace: Trace) -> set[str]:
    """Our trace in the shape Blender reports: a sequence by its first frame, UDIM by its
    pattern, a cache folder by its name, a strip by each file; point caches Blender lists as ""
    (their folder is derived)."""
    shown = set()
    for dep in trace.dependencies:
        if dep.kind == "point_cache" or dep.packed:
            continue
        folder = dep.kind in ("fluid_cache", "ocean_cache", "geometry_nodes_bake")
        shown.add(dep.target if folder or dep.kind in ("image_sequence", "udim") else dep.resolved)
    return shown


def oracle_union(project: Path, trace: Trace) -> set[str]:
    """What Blender lists for each .blend of the trace, opened on its own (`local=True`)."""
    oracle = json.loads((project / "oracle.json").read_text())
    paths: set[str] = set()
    for blend in trace.blends:
        paths |= set(oracle[os.path.relpath(blend, project)]["local_paths"])
    return paths - {""}


def test_deps_lists_exactly_what_blender_lists(project: Path) -> None:
    trace = trace_dependencies(project / "main.blend")
    assert blender_view(trace) == oracle_union(project, trace)
    assert not trace.missing
    blends = {os.path.relpath(b, project) for b in trace.blends}
    # relative, absolute, nested two deep, and the cycle (each file traced once)
    assert blends == {"main.blend", "lib/lib.blend", "lib/nested/deep.blend", "abs/abs_lib.blend",
                      "lib/cycle_a.blend", "lib/cycle_b.blend"}  # fmt: skip
    assert len(trace.blends) == len(blends)
    files = {os.path.relpath(d.resolved, project): d for d in trace.usable}
    # sequences, UDIM tiles and the baked point cache expanded to the files on disk
    assert {f"seq/frame_000{i}.png" for i in range(1, 6)} <= set(files)
    assert {"udim/tile.1001.png", "udim/tile.1002.png"} <= set(files)
    caches = sorted(f for f in files if f.startswith("blendcache_main/"))
    assert len(caches) == 3 and all(f.endswith(".bphys") for f in caches)
    assert files["textures/wood.png"].size == (project / "textures/wood.png").stat().st_size
    packed = [d for d in trace.dependencies if d.packed]
    assert [(d.kind, d.stored) for d in packed] == [("image", "//gone/packed.png")]
    windows = [d for d in trace.dependencies if d.stored == "//textures\\wood.png"]
    assert windows and windows[0].resolved == str(project / "textures" / "wood.png")
    kinds = {d.kind for d in trace.dependencies}
    assert {"library", "image", "image_sequence", "udim", "cache_file", "point_cache", "font",
            "sound", "sequencer_images"} <= kinds  # fmt: skip


def test_each_library_is_traced_like_blender_opens_it(project: Path) -> None:
    oracle = json.loads((project / "oracle.json").read_text())
    for name, seen in oracle.items():
        if name.startswith("_") or name == "main.blend":
            continue
        trace = trace_dependencies(project / name)
        # a library's own paths resolve against the library, not against main.blend
        assert blender_view(trace) == oracle_union(project, trace), name


def test_caches_volumes_ies_and_texts_are_found(project: Path) -> None:
    trace = trace_dependencies(project / "extras.blend")
    files = {d.kind: os.path.relpath(d.resolved, project) for d in trace.dependencies}
    assert files == {
        "mesh_cache": "cache/anim.pc2",
        "fluid_cache": "fluid_cache/config/config_0001.uni",
        "volume": "vdb/smoke.vdb",
        "ies": "ies/light.ies",
        "text": "scripts/tool.py",
    }
    assert not trace.missing


def test_missing_files_are_named_with_who_refers_to_them(project34: Path) -> None:
    trace = trace_dependencies(project34 / "broken" / "broken.blend")
    missing = {(d.kind, os.path.basename(d.resolved), d.problem) for d in trace.missing}
    assert ("library", "missing_lib.blend", "missing") in missing
    assert ("image", "missing.png", "missing") in missing
    assert all(d.via and d.holder.endswith("broken.blend") for d in trace.missing)


def test_cli_deps_json_and_exit_code(project34: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "pi_render", "deps", str(project34 / "main.blend"),
                          "--json"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["file"] == str(project34 / "main.blend") and report["missing"] == []
    first = report["dependencies"][0]
    assert {"kind", "stored", "resolved", "exists", "size", "via"} <= set(first)
    broken = subprocess.run([sys.executable, "-m", "pi_render", "deps",
                             str(project34 / "broken" / "broken.blend")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert broken.returncode == 1 and "missing_lib.blend" in broken.stdout


def test_relative_paths_resolve_like_blender() -> None:
    holder = "/proj/shots/a.blend"
    assert resolve("//tex/wood.png", holder) == "/proj/shots/tex/wood.png"
    assert resolve("//..\\tex\\wood.png", holder) == "/proj/tex/wood.png"  # saved on Windows
    assert resolve("/abs/x.png", holder) == "/abs/x.png"
    assert resolve("C:\\tex\\x.png", holder) == "C:/tex/x.png"  # a drive: never found here
    assert resolve("//../../../../etc/x", holder) == "/etc/x"


def copy_project(project: Path, where: Path) -> Path:
    shutil.copytree(project, where, symlinks=True)
    return where


def test_hostile_dependencies_are_reported_not_followed(project34: Path, tmp_path: Path) -> None:
    work = copy_project(project34, tmp_path / "p")
    (work / "textures" / "wood.png").unlink()
    os.mkfifo(work / "textures" / "wood.png")  # reading a FIFO would block forever
    (work / "sounds" / "beep.wav").unlink()
    (work / "sounds" / "beep.wav").symlink_to("/dev/zero")  # and this would never end
    (work / "lib" / "lib.blend").unlink()
    os.mkfifo(work / "lib" / "lib.blend")  # a library that is a FIFO is not opened
    trace = trace_dependencies(work / "main.blend")
    problems = {os.path.relpath(d.resolved, work): d.problem for d in trace.missing}
    assert problems["textures/wood.png"] == "not a regular file"
    assert problems["sounds/beep.wav"] == "not a regular file"
    assert problems["lib/lib.blend"] == "not a regular file"


def test_a_huge_sequence_is_refused_and_missing_udim_tiles_reported(
    project34: Path, tmp_path: Path
) -> None:
    work = copy_project(project34, tmp_path / "p")
    (work / "udim" / "tile.1002.png").unlink()
    trace = trace_dependencies(work / "main.blend")
    assert [os.path.relpath(d.resolved, work) for d in trace.missing] == ["udim/tile.1002.png"]
    for frame in range(6, 100_001):  # a sequence of 100,000 frames
        (work / "seq" / f"frame_{frame:04d}.png").touch()
    with pytest.raises(TooManyDependencies, match="more than 10000 files"):
        trace_dependencies(work / "main.blend")
    bigger = trace_dependencies(work / "main.blend", max_files=200_000)  # a bound, not a ban
    assert len([d for d in bigger.dependencies if d.kind == "image_sequence"]) == 100_000


def test_a_library_that_is_not_a_blend_is_reported(project34: Path, tmp_path: Path) -> None:
    work = copy_project(project34, tmp_path / "p")
    (work / "lib" / "lib.blend").write_bytes(b"BLENDER-v304" + b"\0" * 100)
    trace = trace_dependencies(work / "main.blend")
    broken = [d for d in trace.missing if d.resolved.endswith("lib/lib.blend")]
    assert broken and broken[0].problem and broken[0].problem.startswith("not a usable .blend")


def test_a_main_file_that_is_not_a_blend_raises(tmp_path: Path) -> None:
    bad = tmp_path / "x.blend"
    bad.write_bytes(b"nope")
    with pytest.raises(BlendFileError):
        trace_dependencies(bad)
    with pytest.raises(BlendFileError):
        trace_dependencies(tmp_path / "absent.blend")


def test_a_cut_project_file_is_traced_or_refused(project34: Path, tmp_path: Path) -> None:
    data = (project34 / "main.blend").read_bytes()
    whole = trace_dependencies(project34 / "main.blend")
    offsets = block_offsets(data)
    cut_file = tmp_path / "main.blend"
    for cut in [*offsets[::3], len(data) - 1]:
        cut_file.write_bytes(data[:cut])
        try:
            trace = trace_dependencies(cut_file)
        except BlendFileError as exc:
            assert exc.path == cut_file
            continue
        # what a cut file still holds is a part of what the whole file holds
        assert {d.stored for d in trace.dependencies} <= {d.stored for d in whole.dependencies}


@settings(max_examples=max(100, FUZZ_CASES // 10), deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_mutated_project_files_only_ever_raise_blend_file_error(
    project34: Path, tmp_path: Path, data: st.DataObject
) -> None:
    raw = bytearray((project34 / "main.blend").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        spot = data.draw(st.integers(0, len(raw) - 8))
        raw[spot : spot + 8] = data.draw(st.binary(min_size=8, max_size=8))
    path = tmp_path / "fuzz.blend"
    path.write_bytes(bytes(raw))
    try:
        trace_dependencies(path)
    except BlendFileError:
        pass
