"""How fast pi_render lists every file a .blend needs, through its libraries (`pi-render deps`:
`trace_dependencies`), side by side with Blender Studio's blender-asset-tracer (BAT:
`trace.deps`, which follows linked libraries too). Prints one table; asserts nothing.

    .venv/bin/python bench/deps.py [--repeat 30] [--json] [PROJECT ...]

Projects default to the one tests/blender/make_project.py builds, made in the run twice: by
Debian's Blender (3.4) and, when a Python with the bpy wheel is found (PI_RENDER_BPY_PYTHON or
.venv-bpy/bin/python), by bpy 5.0.1. Given PROJECT folders (made by that script) are used as
they are.
"""

import argparse
import gc
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

from blender_asset_tracer import blendfile, trace
from blender_asset_tracer.trace import progress

from pi_render.blend import trace_dependencies
from pi_render.blend.sdna import clear_cache

ROOT = Path(__file__).resolve().parent.parent
MAKE_PROJECT = ROOT / "tests" / "blender" / "make_project.py"
BPY_PYTHON = ROOT / ".venv-bpy" / "bin" / "python"
FILES = ("main.blend", "lib/lib.blend", "lib/cycle_a.blend", "lib/nested/deep.blend",
         "broken/broken.blend", "extras.blend")  # fmt: skip
MAGIC = {b"BLENDER": "plain", b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip"}


@dataclass
class Row:
    blender: str
    file: str
    compression: str
    size_kb: float
    blends: tuple[int, int]  # .blend files opened: pi_render, BAT
    ours_deps: int  # pi_render's dependency rows (sequences, UDIM tiles, caches expanded)
    bat_usages: int  # what BAT's trace.deps yields (a sequence is one usage)
    bat_files: int  # BAT's usages expanded to files on disk (BlockUsage.files())
    ours_cold: tuple[float, float]  # (median, min) ms
    ours_warm: tuple[float, float]
    bat: tuple[float, float]
    bat_with_files: tuple[float, float]
    only_ours: list[str] = field(default_factory=list)  # files one found and the other did not
    only_bat: list[str] = field(default_factory=list)


def ours_reset_warm() -> None:
    """Only the garbage of the run before is collected: each run pays for its own."""
    gc.collect()


def ours_reset_cold() -> None:
    """As the first file of its Blender build: the parsed-catalogue cache is emptied."""
    clear_cache()
    gc.collect()


def bat_reset() -> None:
    """BAT's in-process cache is its dict of opened BlendFiles; closing them empties it. Its
    blocks hold cycles, which left alone would be collected inside the next timed run."""
    blendfile.close_all_cached()
    gc.collect()


def ours(path: Path) -> int:
    return len(trace_dependencies(path).dependencies)


def bat(path: Path) -> int:
    """trace.deps, every usage materialised with its absolute path."""
    usages = list(trace.deps(path))
    return len([usage.abspath for usage in usages])


def bat_with_files(path: Path) -> int:
    """The same, plus the files each usage stands for (sequences and UDIM tiles listed, as
    pi_render lists them; missing files dropped after a stat)."""
    return len([file for usage in trace.deps(path) for file in usage.files()])


def measure(work: Callable[[Path], object], reset: Callable[[], None], path: Path,
            repeat: int) -> tuple[float, float]:  # fmt: skip
    """(median, min) ms of `repeat` runs, `reset` (untimed) before each; one untimed warm-up."""
    reset()
    work(path)  # warm the page cache, imports and first-call costs
    times = []
    for _ in range(repeat):
        reset()
        start = time.perf_counter()
        work(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, min(times) * 1000


class _Opened(progress.Callback):
    """Counts the .blend files BAT opens."""

    def __init__(self) -> None:
        self.blends: list[Path] = []

    def trace_blendfile(self, filename: Path) -> None:
        self.blends.append(filename)


def compare(project: Path, path: Path) -> tuple[int, int, int, int, int, list[str], list[str]]:
    """What each tool found: counts, and the existing files only one of them lists."""
    clear_cache()
    result = trace_dependencies(path)
    ours_files = {d.resolved for d in result.dependencies if d.exists and not d.packed}
    bat_reset()
    opened = _Opened()
    usages = list(trace.deps(path, progress_cb=opened))
    bat_files = [str(file) for usage in usages for file in usage.files()]
    bat_reset()

    def shown(paths: set[str]) -> list[str]:
        return sorted(os.path.relpath(p, project) for p in paths)

    return (len(result.blends), len(set(opened.blends)), len(result.dependencies), len(usages),
            len(bat_files), shown(ours_files - set(bat_files)),
            shown(set(bat_files) - ours_files))  # fmt: skip


def code_state() -> str:
    """Which tracer and which project recipe are measured: the commit, and what differs from it."""
    try:
        head, changed = (subprocess.run(["git", *command], cwd=ROOT, capture_output=True,
                                        text=True, timeout=30, check=True).stdout.rstrip()
                         for command in (["rev-parse", "--short", "HEAD"],
                                         ["status", "--porcelain", "--", "pi_render/blend",
                                          str(MAKE_PROJECT)]))  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    files = [line[3:] for line in changed.splitlines()]
    return f"git {head}" + (f", uncommitted changes in {', '.join(files)}" if files else "")


def compression(path: Path) -> str:
    head = path.read_bytes()[:8]
    return next((name for magic, name in MAGIC.items() if head.startswith(magic)), "?")


def blender_version(project: Path) -> str:
    """The version make_project.py wrote to oracle.json, else the folder's name."""
    try:
        return str(json.loads((project / "oracle.json").read_text())["_blender"]["version"])
    except (OSError, ValueError, KeyError):
        return project.name


@contextmanager
def projects(extra: list[str]) -> Iterator[list[Path]]:
    """The given project folders, or ones made now by Blender 3.4 and bpy 5.0 (removed after)."""
    if extra:
        yield [Path(folder).resolve() for folder in extra]
        return
    with tempfile.TemporaryDirectory(prefix="bench-deps-") as tmp:
        made = []
        blender = os.environ.get("PI_RENDER_BLENDER") or shutil.which("blender")
        if blender:
            made.append(Path(tmp) / "blender")
            subprocess.run([blender, "-b", "--factory-startup", "-noaudio", "--python-exit-code",
                            "1", "--python", str(MAKE_PROJECT), "--", str(made[-1])],
                           check=True, capture_output=True)  # fmt: skip
        bpy_python = os.environ.get("PI_RENDER_BPY_PYTHON") or str(BPY_PYTHON)
        if Path(bpy_python).exists():
            made.append(Path(tmp) / "bpy")
            subprocess.run([bpy_python, str(MAKE_PROJECT), str(made[-1])], check=True,
                           capture_output=True)  # fmt: skip
        if not made:
            sys.exit("needs Blender (apt-get install blender) or a Python with bpy")
        yield made


def bench(project: Path, name: str, repeat: int) -> Row:
    path = project / name
    blends_ours, blends_bat, deps, usages, files, only_ours, only_bat = compare(project, path)
    return Row(
        blender=blender_version(project), file=name, compression=compression(path),
        size_kb=path.stat().st_size / 1024, blends=(blends_ours, blends_bat), ours_deps=deps,
        bat_usages=usages, bat_files=files,
        ours_cold=measure(ours, ours_reset_cold, path, repeat),
        ours_warm=measure(ours, ours_reset_warm, path, repeat),
        bat=measure(bat, bat_reset, path, repeat),
        bat_with_files=measure(bat_with_files, bat_reset, path, repeat),
        only_ours=only_ours, only_bat=only_bat,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", "--runs", type=int, default=30,
                        help="timed runs per cell (median and min)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("projects", nargs="*", help="folders made by make_project.py")
    args = parser.parse_args()
    logging.getLogger("blender_asset_tracer").setLevel(logging.ERROR)  # its missing-file warnings
    command = " ".join([Path(sys.executable).name, *sys.argv])
    machine = (f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
               f"Python {platform.python_version()}, "
               f"blender-asset-tracer {version('blender-asset-tracer')}")  # fmt: skip
    code = code_state()
    rows = []
    with projects(args.projects) as folders:
        for project in folders:
            for name in FILES:
                if (project / name).exists():
                    rows.append(bench(project, name, args.repeat))
    worst = min(row.bat[0] / row.ours_cold[0] for row in rows)
    if args.json:
        print(json.dumps({"command": command, "machine": machine, "code": code,
                          "repeat": args.repeat,
                          "rows": [asdict(row) for row in rows],
                          "slowest_ratio_cold": worst}, indent=1))  # fmt: skip
        return
    print(f"command: {command}")
    print(f"machine: {machine}")
    print(f"code: {code}")
    header = (f"{'blender':7} {'file':21} {'comp':5} {'KB':>4} {'blends':>6} {'deps':>9} "
              f"{'ours cold':>12} {'ours warm':>12} {'BAT ms':>13} {'BAT+files':>9} "
              f"{'BAT/cold':>8} {'BAT/warm':>8}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.blender:7} {row.file:21} {row.compression:5} {row.size_kb:4.0f} "
            f"{'%d/%d' % row.blends:>6} "
            f"{'%d/%d/%d' % (row.ours_deps, row.bat_usages, row.bat_files):>9} "
            f"{'%.2f (%.2f)' % row.ours_cold:>12} {'%.2f (%.2f)' % row.ours_warm:>12} "
            f"{'%.2f (%.2f)' % row.bat:>13} {row.bat_with_files[0]:9.2f} "
            f"{row.bat[0] / row.ours_cold[0]:7.1f}x {row.bat[0] / row.ours_warm[0]:7.1f}x"
        )
    print(f"\nslowest ratio, cold (goal: >= 10x on every file): {worst:.1f}x")
    print(f"times: median (min) ms of {args.repeat} runs. cold: pi_render's parsed SDNA cache and")
    print("BAT's cache of open files are emptied before each run (the OS page cache stays warm);")
    print("warm: pi_render keeps its catalogue cache. Before every run, untimed, gc.collect().")
    print("BAT ms: list(trace.deps(f)) and each usage's abspath (the ratios use it); BAT+files:")
    print("also BlockUsage.files() (sequences and tiles listed, as pi_render lists them).")
    print("blends: .blend files opened, pi_render/BAT; deps: pi_render's rows / BAT's usages /")
    print("BAT's files. Files on disk that only one of them lists:")
    for row in rows:
        if row.only_ours or row.only_bat:
            print(f"{row.blender} {row.file}: only pi_render: {', '.join(row.only_ours) or '-'}; "
                  f"only BAT: {', '.join(row.only_bat) or '-'}")  # fmt: skip


if __name__ == "__main__":
    main()
