"""`pi-render inspect` and the `inspect_blend` task: the reader from the CLI and in the daemon."""

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

from conftest import DaemonProcess

from pi_render.blend import read_blend_info

BLEND50 = Path(__file__).parent / "data" / "blend50"
SHOT_B = BLEND50 / "three_scenes_current_Shot_B.blend"


def inspect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pi_render", "inspect", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_inspect_json_is_the_blend_info() -> None:
    result = inspect(str(SHOT_B), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == read_blend_info(SHOT_B).model_dump(mode="json")


def test_inspect_prints_a_readable_summary() -> None:
    result = inspect(str(BLEND50 / "frames_resolution_fps.blend"))
    assert result.returncode == 0
    assert "Blender 5.0" in result.stdout and "zstd" in result.stdout
    assert "5–11 step 3" in result.stdout and "29.97 fps" in result.stdout
    assert "640×360 at 50% → 320×180" in result.stdout


def test_inspect_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    broken = tmp_path / "broken.blend"
    broken.write_bytes(SHOT_B.read_bytes()[:5000])
    for target, needle in ((tmp_path / "missing.blend", "no such file"),
                           (broken, "truncated"),
                           (Path(__file__), "not a .blend file")):  # fmt: skip
        result = inspect(str(target))
        assert result.returncode == 1
        assert needle in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_memory_stays_a_small_multiple_of_the_file() -> None:
    path = BLEND50 / "default_plain.blend"
    tracemalloc.start()
    read_blend_info(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * path.stat().st_size


def test_inspect_blend_task_in_the_daemon(daemon: DaemonProcess, tmp_path: Path) -> None:
    done = daemon.client.wait(daemon.client.submit("inspect_blend", {"path": str(SHOT_B)}).id, 30)
    assert done.status == "completed"
    assert done.result == read_blend_info(SHOT_B).model_dump(mode="json")
    assert done.result is not None and done.result["scene"]["name"] == "Shot_B"

    garbage = tmp_path / "garbage.blend"
    garbage.write_bytes(b"not a blend at all")
    failed = daemon.client.wait(
        daemon.client.submit("inspect_blend", {"path": str(garbage)}).id, 30
    )
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.type == "NotABlendFile" and str(garbage) in failed.error.message
