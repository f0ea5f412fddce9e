"""Blender is the oracle: every BlendInfo field of files that real Blender wrote must equal what
Blender itself reports about them. Blender 3.4 (Debian's) builds its fixtures here; Blender 5.0's
were built once by tests/blender/make_fixtures.py with the bpy 5.0.1 wheel and are committed."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from blender_env import blender_or_skip, run_blender_script

from pi_render.blend import read_blend_info
from pi_render.blend.scene import native_path

HERE = Path(__file__).parent
BLEND50 = HERE / "data" / "blend50"
MAKE_FIXTURES = HERE / "blender" / "make_fixtures.py"


@pytest.fixture(scope="session")
def blend34(tmp_path_factory: pytest.TempPathFactory) -> Path:
    blender = blender_or_skip()
    out = tmp_path_factory.mktemp("blend34")
    run_blender_script(blender, MAKE_FIXTURES, str(out))
    return out


def oracle_cases(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    oracle = json.loads((folder / "oracle.json").read_text())
    return [(name, facts) for name, facts in sorted(oracle.items()) if not name.startswith("_")]


def compare(folder: Path, name: str, facts: dict[str, Any]) -> None:
    path = folder / f"{name}.blend"
    info = read_blend_info(path).model_dump(mode="json")
    expected_scene = dict(facts["scene"])
    got_scene = dict(info["scene"])
    resolved = got_scene.pop("output_path_resolved")
    assert {k: got_scene[k] for k in expected_scene} == expected_scene, name
    assert info["scenes"] == facts["scenes"], name
    assert (info["file_version"], info["file_subversion"]) == (
        facts["file_version"], facts["file_subversion"]), name  # fmt: skip
    output = expected_scene["output_path"]
    if output.startswith("//"):
        assert resolved.startswith(str(folder.resolve())), name
    assert info["compression"] == ("gzip" if "gzip" in name else
                                   "zstd" if _compressed(path) else "none")  # fmt: skip


def _compressed(path: Path) -> bool:
    return path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"


def test_blender_34_fixtures_match_blender(blend34: Path) -> None:
    cases = oracle_cases(blend34)
    assert len(cases) >= 18
    for name, facts in cases:
        compare(blend34, name, facts)
    info = read_blend_info(blend34 / "default_plain.blend")
    assert (info.file_version, info.blender_version, info.pointer_size, info.endian) == (
        304, "3.4", 8, "little")  # fmt: skip


@pytest.mark.parametrize("name", [n for n, _ in oracle_cases(BLEND50)] if BLEND50.exists() else [])
def test_blender_50_fixtures_match_blender(name: str) -> None:
    facts = dict(oracle_cases(BLEND50))[name]
    compare(BLEND50, name, facts)


WINDOWS_OUTPUT = """import sys, bpy
s = bpy.context.scene
s.render.resolution_x = s.render.resolution_y = 16
s.render.engine = "BLENDER_WORKBENCH"
s.render.filepath = "//render\\\\frame_####"  # as a file saved on Windows holds it
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"""


def test_a_windows_output_path_is_where_blender_here_writes(tmp_path: Path) -> None:
    blender = blender_or_skip()
    script, blend = tmp_path / "make.py", tmp_path / "windows.blend"
    script.write_text(WINDOWS_OUTPUT)
    run_blender_script(blender, script, str(blend))
    scene = read_blend_info(blend).scene
    assert scene.output_path_stored == "//render\\frame_####"
    assert scene.output_path == "//render/frame_####"
    done = subprocess.run([str(blender), "-b", str(blend), "-f", "1"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    (saved,) = re.findall(r"Saved: '([^']+)'", done.stdout)
    assert saved == scene.output_path_resolved.replace("####", "0001") + ".png"
    assert Path(saved).is_file()


def test_a_windows_drive_becomes_a_folder_as_blender_reads_it() -> None:
    # measured with Blender 3.4: `Q:\\out\\f_` renders to /q/out/f_0001.png
    assert native_path("Q:\\out\\f_") == "/q/out/f_"
    assert native_path("//a\\b/c") == "//a/b/c" and native_path("/srv/x") == "/srv/x"
