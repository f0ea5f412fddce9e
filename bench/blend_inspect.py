"""How fast pi_render's .blend reader answers "what will this file render?", side by side with
Blender Studio's blender-asset-tracer (BAT: open + the current scene's frame range) and with
merely reading the file's bytes. Prints one table; asserts nothing.

    .venv/bin/python bench/blend_inspect.py [--runs 30] [FOLDER ...]

Folders default to the committed Blender 5.0 fixtures and, when Debian's Blender is installed,
freshly made Blender 3.4 fixtures.
"""

import argparse
import gzip
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from blender_asset_tracer import blendfile

from pi_render.blend import read_blend_info
from pi_render.blend.sdna import clear_cache

ROOT = Path(__file__).resolve().parent.parent
BLEND50 = ROOT / "tests" / "data" / "blend50"
MAKE_FIXTURES = ROOT / "tests" / "blender" / "make_fixtures.py"
FILES = ("default_plain", "default_zstd", "default_gzip", "three_scenes_current_Shot_B",
         "engine_cycles", "format_ffmpeg", "gzip_objects_300", "gzip_objects_3000")  # fmt: skip
# gzip files of other sizes (Blender ≤2.93 wrote gzip; 3.x+ reads it): N cubes, saved plain by
# Debian's Blender, then gzipped here
MAKE_HEAVY = (
    "import bpy, sys\nn = int(sys.argv[-2])\nfor i in range(n):\n"
    "    bpy.ops.mesh.primitive_cube_add(location=(i % 50, i // 50, 0))\n"
    "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1], compress=False)\n"
)


def bat_frame_range(path: Path) -> tuple[int, int, int]:
    """BAT's way: open (decodes the whole SDNA), follow GLOB.curscene, read r.sfra/efra/step."""
    bf = blendfile.BlendFile(path)
    try:
        glob = bf.find_blocks_from_code(b"GLOB")[0]
        scene = bf.dereference_pointer(glob[b"curscene"])
        assert scene is not None
        return scene[b"r", b"sfra"], scene[b"r", b"efra"], scene[b"r", b"frame_step"]
    finally:
        bf.close()


def read_cold(path: Path) -> object:
    """As the first file of its Blender build: the parsed-catalogue cache is emptied first."""
    clear_cache()
    return read_blend_info(path)


def read_bytes(path: Path) -> int:
    return len(path.read_bytes())


def median_ms(work: Callable[[Path], object], path: Path, runs: int) -> float:
    work(path)  # warm the page cache and imports
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def fixture_folders(extra: list[str]) -> list[tuple[str, Path]]:
    folders = [("5.0", BLEND50)]
    if extra:
        return [(Path(f).name, Path(f)) for f in extra]
    blender = shutil.which("blender")
    if blender:
        out = Path(tempfile.mkdtemp(prefix="bench-blend34-"))
        subprocess.run([blender, "-b", "--factory-startup", "-noaudio", "--python",
                        str(MAKE_FIXTURES), "--", str(out)], check=True,
                       capture_output=True)  # fmt: skip
        for count in (300, 3000):
            plain = out / f"objects_{count}.blend"
            subprocess.run([blender, "-b", "--factory-startup", "-noaudio", "--python-expr",
                            MAKE_HEAVY, "--", str(count), str(plain)], check=True,
                           capture_output=True)  # fmt: skip
            with open(plain, "rb") as src, gzip.open(out / f"gzip_{plain.name}", "wb") as dst:
                shutil.copyfileobj(src, dst)
        folders.insert(0, ("3.4", out))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per cell (median)")
    parser.add_argument("folders", nargs="*", help="folders of .blend files instead of fixtures")
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")  # fmt: skip
    header = (f"{'blender':7} {'file':30} {'size KB':>7} {'bytes ms':>9} {'ours cold':>10} "
              f"{'ours warm':>10} {'BAT ms':>7} {'BAT/cold':>9} {'BAT/warm':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    worst = float("inf")
    for version, folder in fixture_folders(args.folders):
        names = FILES if not args.folders else sorted(p.stem for p in folder.glob("*.blend"))
        for name in names:
            path = folder / f"{name}.blend"
            if not path.exists():
                continue
            cold = median_ms(read_cold, path, args.runs)
            warm = median_ms(read_blend_info, path, args.runs)
            bat = median_ms(bat_frame_range, path, args.runs)
            raw = median_ms(read_bytes, path, args.runs)
            worst = min(worst, bat / cold)
            print(f"{version:7} {name:30} {path.stat().st_size / 1024:7.0f} {raw:9.3f} "
                  f"{cold:10.2f} {warm:10.2f} {bat:7.2f} {bat / cold:8.1f}x "
                  f"{bat / warm:8.1f}x")  # fmt: skip
    print(f"\nslowest ratio, cold (goal: >= 10x on every file): {worst:.1f}x")
    print("cold: the parsed SDNA cache is emptied before each read (the first file of a Blender")
    print("build); warm: files of a build already seen share one parsed catalogue.")


if __name__ == "__main__":
    main()
