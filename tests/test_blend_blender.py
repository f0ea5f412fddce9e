"""Blender is the oracle: every BlendInfo field of files that real Blender wrote must equal what
Blender itself reports about them. Blender 3.4 (Debian's) builds its fixtures here; Blender 5.0's
were built once by tests/blender/make_fixtures.py with the bpy 5.0.1 wheel and are committed."""

import json
from pathlib import Path
from typing import Any

import pytest
from blender_env import blender_or_skip, run_blender_script

from pi_render.blend import read_blend_info

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
