"""Finding Blender, building its command line, and reading what it prints."""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPTS_DIR = Path(__file__).parent / "scripts"  # injected into Blender (read by its sandbox)
HOOKS = SCRIPTS_DIR / "progress_hooks.py"
DEVICE_SETUP = SCRIPTS_DIR / "device_setup.py"
SAMPLE_SCENE = SCRIPTS_DIR / "sample_scene.py"
BPY_RUNNER = SCRIPTS_DIR / "bpy_runner.py"


@dataclass(frozen=True)
class BlenderInstall:
    """How to start Blender: an executable, or Python with the `bpy` module."""

    kind: str  # "executable" | "bpy"
    path: str
    version: str | None


def find_blender(configured: str | None) -> BlenderInstall | None:
    """A configured executable, else `blender` on PATH, else the `bpy` module, else None.

    A configured `python…` is taken as an interpreter that has the bpy module.
    """
    if configured and Path(configured).name.startswith("python"):
        return _bpy(configured)
    for candidate in (configured, shutil.which("blender")):
        if candidate and os.access(candidate, os.X_OK):
            return BlenderInstall("executable", candidate, _version([candidate, "--version"]))
    return _bpy(sys.executable)


def find_blenders(configured: str | None, more: list[str]) -> list[BlenderInstall]:
    """Every Blender this host has: the one `find_blender` finds (the default, first), then each
    of `[[blenders]]` (executables or bpy interpreters), each asked its version once; the same
    file twice counts once."""
    found: list[BlenderInstall] = []
    seen: set[str] = set()
    for path in [None, *more]:
        install = find_blender(configured) if path is None else _probe(path)
        if install is None or install.version is None:
            continue
        real = os.path.realpath(install.path)
        if real not in seen:
            seen.add(real)
            found.append(install)
    return found


def _probe(path: str) -> BlenderInstall | None:
    """One named Blender (an executable, or a `python…` with bpy); None when it does not run."""
    if Path(path).name.startswith("python"):
        return _bpy(path)
    if os.access(path, os.X_OK):
        return BlenderInstall("executable", path, _version([path, "--version"]))
    return None


def describe(installs: list[BlenderInstall]) -> list[dict[str, str | None]]:
    """What health and `pi-render blenders` show of each."""
    return [{"kind": b.kind, "path": b.path, "version": b.version} for b in installs]


def version_key(version: str) -> tuple[int, int]:
    """(major, minor): what decides whether a Blender opens a file ("3.4.1" → (3, 4))."""
    parts = [int(p) for p in re.findall(r"[0-9]{1,9}", version)[:2]]  # ASCII, bounded
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def pick_blender(installs: list[BlenderInstall], saved_by: str | None,
                 at_least: str | None = None) -> BlenderInstall | None:  # fmt: skip
    """The Blender to run a file saved by `saved_by`: the oldest that is at least that version
    (and at least `at_least`, when the task asks for one); a file from before 3.0 gets the
    newest (old files open best in a current Blender). None when none can open it; the first
    (the default) when the file's version is not known."""
    usable = [i for i in installs if i.version is not None]
    if at_least:
        usable = [i for i in usable if version_key(i.version or "") >= version_key(at_least)]
    if saved_by is None:
        return usable[0] if usable else None
    fits = sorted((i for i in usable if version_key(i.version or "") >= version_key(saved_by)),
                  key=lambda i: version_key(i.version or ""))  # fmt: skip
    if not fits:
        return None
    return fits[-1] if version_key(saved_by) < (3, 0) else fits[0]


def _bpy(python: str) -> BlenderInstall | None:
    version = _version([python, "-c", "import bpy; print('Blender', bpy.app.version_string)"])
    return BlenderInstall("bpy", python, version) if version else None


def _version(command: list[str]) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Blender (\S+)", out)
    return match.group(1) if match else None


def make_sample_scene(blender: BlenderInstall, out: Path, frames: int, size: int) -> None:
    """Have Blender write a small animated sample scene (Cycles, 1 sample, CPU) to `out`.

    Raises subprocess.CalledProcessError with Blender's output when it fails.
    """
    args = [str(out), str(frames), "1", str(size)]
    if blender.kind == "bpy":
        argv = [blender.path, str(SAMPLE_SCENE), *args]
    else:
        argv = [blender.path, "-b", "--factory-startup", "-noaudio", "--python-exit-code", "1",
                "--python", str(SAMPLE_SCENE), "--", *args]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300)


@dataclass(frozen=True)
class RenderCommand:
    """Everything one Blender run needs; `argv()` puts it in the order Blender requires."""

    blend: Path
    output_pattern: str  # "…/frame_####"
    frames: list[int]
    scene: str | None = None
    engine: str | None = None
    file_format: str | None = None
    threads: int = 0
    allow_scripts: bool = False
    device: str = ""  # JSON for device_setup.py (CPU, or which GPUs); "" leaves the file's
    cycles_device: str | None = None  # Cycles' own `--cycles-device` (every device of a type)

    def argv(self, blender: BlenderInstall) -> list[str]:
        if blender.kind == "bpy":
            return [blender.path, str(BPY_RUNNER), *self._bpy_args()]
        argv = [blender.path, "-b", "-y" if self.allow_scripts else "-Y", "-noaudio",
                str(self.blend)]  # fmt: skip
        if self.scene:
            argv += ["-S", self.scene]
        if self.engine:
            argv += ["-E", self.engine]
        argv += ["-o", self.output_pattern]
        if self.file_format:
            argv += ["-F", self.file_format]
        argv += ["-x", "1", "-t", str(self.threads)]
        argv += ["--python-exit-code", "3"]
        # the CPU needs no script (Cycles' own `--cycles-device CPU` forces it, ~25 ms sooner)
        script = bool(self.device) and self.cycles_device != "CPU"
        if script:
            argv += ["--python", str(DEVICE_SETUP)]
        argv += ["--python", str(HOOKS)]
        argv += ["-f", frame_list(self.frames)]  # the action comes last: Blender runs in order
        extra = ["--pi-render-device", self.device] if script else []
        if self.cycles_device:
            extra += ["--cycles-device", self.cycles_device]
        return argv + (["--", *extra] if extra else [])

    def _bpy_args(self) -> list[str]:
        return [str(self.blend), self.output_pattern, frame_list(self.frames),
                self.scene or "", self.engine or "", self.file_format or "",
                str(self.threads), "1" if self.allow_scripts else "0", self.device]  # fmt: skip


def frame_list(frames: list[int]) -> str:
    """Blender's `-f` syntax: runs of consecutive frames as `a..b`, the rest comma-separated."""
    parts, i = [], 0
    while i < len(frames):
        j = i
        while j + 1 < len(frames) and frames[j + 1] == frames[j] + 1:
            j += 1
        parts.append(f"{frames[i]}..{frames[j]}" if j > i else str(frames[i]))
        i = j + 1
    return ",".join(parts)


MARKER = re.compile(r"^@@PI_RENDER (\w+)(?: (\S+))?")
SAVED = re.compile(r"Saved: '(.+)'")
FRA = re.compile(r"^Fra:(\d+) ")
ERROR = re.compile(r"^(Error: .*|.*Render error \(.*\) cannot save.*)$")
# what Blender 3.x and 5.x print when a file the scene needs is not there (3.x says nothing of
# a missing texture: the check at submit is what catches those)
MISSING = re.compile(
    r"(Unable to open '.+': .*"
    r"|Cannot find lib '.+'"
    r"|LIB: .* missing from '.+'"
    r"|[1-9]\d* libraries and \d+ linked data-blocks are missing"
    r"|\d+ libraries and [1-9]\d* linked data-blocks are missing"
    r"|Image file '.+' does not exist"
    r"|Font file doesn't exist: .+"
    r"|Could not create cache reader for file .+"
    r"|Unable to open .+\.(?:abc|usd[acz]?|vdb))"
)

# what Cycles and its GPU back ends print when a device fails (Blender 2.9x-5.x); out of memory
# first: it says what to do (a smaller scene, or the CPU)
GPU_OUT_OF_MEMORY = re.compile(
    r"(System is out of GPU(?: and shared host)? memory|CUDA_ERROR_OUT_OF_MEMORY"
    r"|CUDA error: Out of memory|hipErrorOutOfMemory|HIP error: Out of memory"
    r"|OPTIX_ERROR_(?:HOST_)?OUT_OF_MEMORY|UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY)"
)
GPU_ERROR = re.compile(
    r"(CUDA_ERROR_\w+|CUDA error: .*|OPTIX_ERROR_\w+|OptiX error.*|hipError\w+|HIP error: .*"
    r"|Failed to (?:create|initialize) (?:CUDA|HIP|OptiX) .*|oneAPI error.*|Metal error.*"
    r"|GPU device not available.*)"
)


@dataclass(frozen=True)
class BlenderEvent:
    kind: str  # "frame_start" | "frame_written" | "saved" | "error" | "missing" | "ready" | …
    value: str | None


def parse_line(line: str) -> BlenderEvent | None:
    """The one fact a line of Blender's output carries, if any."""
    if match := MARKER.match(line):
        return BlenderEvent(match.group(1), match.group(2))
    if match := SAVED.search(line):
        return BlenderEvent("saved", match.group(1))
    if match := FRA.match(line):
        return BlenderEvent("frame_start", match.group(1))
    if match := MISSING.search(line):
        return BlenderEvent("missing", match.group(1).strip())
    if GPU_OUT_OF_MEMORY.search(line) or GPU_ERROR.search(line):
        return BlenderEvent("gpu_error", line.strip()[:500])
    if match := ERROR.match(line.strip()):
        return BlenderEvent("error", match.group(1))
    return None
