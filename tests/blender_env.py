"""Finding real Blender for tests: required in CI (CI=true), skipped with a reason elsewhere."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def blender_or_skip() -> Path:
    """The `blender` executable; in CI its absence fails the test instead of skipping it."""
    found = os.environ.get("PI_RENDER_BLENDER") or shutil.which("blender")
    if found:
        return Path(found)
    if IN_CI:
        pytest.fail("Blender is required in CI: .ci/run must install Debian's blender package")
    pytest.skip("Blender is not installed (apt-get install blender)")


def run_blender_script(blender: Path, script: Path, *args: str, timeout: float = 600) -> str:
    """Run a Python script inside Blender, headless, with factory settings; returns stdout."""
    result = subprocess.run(
        [str(blender), "-b", "--factory-startup", "-noaudio", "--python-exit-code", "1",
         "--python", str(script), "--", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(
            f"blender failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout
