"""Which GPUs each Blender sees, asked through Blender's own Python (the Cycles add-on's device
list), in the background so a daemon starts at once, and cached per Blender build and GPU
hardware outside the data dir (every later start, and every test daemon, reads the cache)."""

import functools
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pi_render.cache_file import read_json, write_json
from pi_render.locations import default_cache_dir
from pi_render.processor.blender import SCRIPTS_DIR, BlenderInstall
from pi_render.processor.blender_run import launch_prefix, scrubbed_env
from pi_render.processor.sandbox import Sandbox, installation

log = logging.getLogger(__name__)
PROBE = SCRIPTS_DIR / "gpu_probe.py"
MARK = "@@PI_RENDER gpus "
BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")  # the first one a host has is used
MAX_CACHE_BYTES = 1 << 20


class GpuDevice(BaseModel):
    """One compute device as Cycles names it (`id` is what its preferences enable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(pattern=r"^(OPTIX|CUDA|HIP|ONEAPI|METAL)$")
    name: str = Field(max_length=200)
    id: str = Field(max_length=200)


def render_devices(devices: list[GpuDevice]) -> list[GpuDevice]:
    """The devices a GPU render uses: those of the first backend in BACKENDS this host has
    (an NVIDIA card shows under OPTIX and CUDA: OptiX is the faster)."""
    for backend in BACKENDS:
        chosen = [d for d in devices if d.backend == backend]
        if chosen:
            return sorted(chosen, key=lambda d: d.id)
    return []


def same_gpu(a: str, b: str) -> bool:
    """Do two Cycles device ids name one card? The same GPU shows under several back ends
    (`CUDA_<name>_<PCI bus>`, `OPTIX_<name>_<PCI bus>`): the part after the back end decides."""
    return a.split("_", 1)[-1] == b.split("_", 1)[-1]


def probe_argv(install: BlenderInstall) -> list[str]:
    if install.kind == "bpy":
        return [install.path, str(PROBE)]
    return [install.path, "-b", "--factory-startup", "-noaudio", "--python-exit-code", "1",
            "--python", str(PROBE)]  # fmt: skip


def probe(install: BlenderInstall, sandbox: Sandbox | None, keep: list[str]) -> list[GpuDevice]:
    """Ask one Blender, inside the sandbox renders get (what it sees there is what they get).

    Raises:
        RuntimeError: it did not say (it failed, hung, or printed something else).
    """
    argv = probe_argv(install)
    if sandbox is not None and sandbox.bwrap is not None:
        installed = installation(install.path, install.kind == "bpy")
        argv = sandbox.wrap(argv, [SCRIPTS_DIR], [], installed, gpu=True)
    sandboxed = sandbox is not None and sandbox.bwrap is not None
    with tempfile.TemporaryDirectory(prefix="pi-render-probe-") as home:
        try:
            done = subprocess.run(
                [*launch_prefix(sandboxed), *argv],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=120,
                cwd=home,
                stdin=subprocess.DEVNULL,
                env=scrubbed_env(keep, Path(home)),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:  # fmt: skip
            raise RuntimeError(f"the device probe did not finish: {exc}") from None
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            try:
                return [GpuDevice.model_validate(d) for d in json.loads(line[len(MARK) :])[:64]]
            except (ValueError, TypeError, ValidationError) as exc:
                raise RuntimeError(f"the device probe printed an unreadable list: {exc}") from None
    tail = (done.stdout + done.stderr).strip()[-300:]
    raise RuntimeError(f"the device probe exited {done.returncode} without a list: {tail}")


def hardware_fingerprint() -> str:
    """What changes when GPUs or their driver do: the device nodes and the driver's version."""
    parts = []
    for folder, prefix in (("/dev", "nvidia"), ("/dev", "kfd"), ("/dev/dri", "")):
        try:
            parts += sorted(f"{folder}/{n}" for n in os.listdir(folder) if n.startswith(prefix))
        except OSError:
            continue
    try:
        with open("/proc/driver/nvidia/version", "rb") as driver:
            parts.append(driver.read(4096).decode(errors="replace"))
    except OSError:
        pass
    return "\n".join(parts)


def cache_key(install: BlenderInstall, salt: str = "") -> str:
    """One Blender build on this hardware: its file (size, mtime), version and the GPUs; `salt`
    holds the environment Blender gets (CUDA_VISIBLE_DEVICES changes what it sees)."""
    try:
        info = os.stat(install.path)
        build = [os.path.realpath(install.path), info.st_size, info.st_mtime_ns]
    except OSError:
        build = [install.path]
    text = json.dumps([*build, install.kind, install.version, hardware_fingerprint(), salt])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class GpuDiscovery:
    """Every Blender's devices, found by a background thread; `wait` for them where they
    decide something (a GPU-only task at submit, a render's device, GPU workers)."""

    def __init__(self, installs: list[BlenderInstall], cache_dir: Path | None,
                 ask: Callable[[BlenderInstall], list[GpuDevice]],
                 salt: str = "") -> None:  # fmt: skip
        self.installs, self.cache_dir, self.ask, self.salt = installs, cache_dir, ask, salt
        self._found: dict[str, list[GpuDevice]] = {}
        self._errors: dict[str, str] = {}
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._round = 0  # a reload's round supersedes one still running

    def start(self) -> None:
        """Probe (again: a reload asks anew, the cache answering for unchanged builds)."""
        with self._lock:
            self._round += 1
            self._done.clear()
            this = self._round
        threading.Thread(target=self._run, args=(this,), name="gpu-discovery", daemon=True).start()

    def wait(self, timeout_s: float = 180.0) -> bool:
        return self._done.wait(timeout_s)

    def _run(self, this: int) -> None:
        found: dict[str, list[GpuDevice]] = {}
        errors: dict[str, str] = {}
        for install in self.installs:
            try:
                found[install.path] = self._devices_of(install)
            except Exception as exc:  # one Blender's failure: it shows no GPU, and says why
                errors[install.path] = str(exc)
                log.warning("GPU discovery failed for %s: %s", install.path, exc)
        with self._lock:
            if this != self._round:  # a newer round answers
                return
            self._found, self._errors = found, errors
            self._done.set()
        count = len(render_devices([d for ds in found.values() for d in ds]))
        log.info("GPU discovery: %d device(s)", count, extra={"gpus": count})

    def _devices_of(self, install: BlenderInstall) -> list[GpuDevice]:
        cached = self._cache_file(install)
        if cached is not None:
            raw = read_json(cached, MAX_CACHE_BYTES)
            try:
                return [GpuDevice.model_validate(d) for d in raw["devices"]]
            except (ValueError, TypeError, KeyError, ValidationError):
                pass  # absent or unreadable: ask Blender
        devices = self.ask(install)
        if cached is not None:
            try:
                write_json(cached, {"blender": install.path, "version": install.version,
                                    "devices": [d.model_dump() for d in devices]})  # fmt: skip
            except OSError as exc:  # the next start asks again
                log.warning("GPU discovery: cannot write its cache %s: %s", cached, exc)
        return devices

    def _cache_file(self, install: BlenderInstall) -> Path | None:
        return (
            None
            if self.cache_dir is None
            else self.cache_dir / f"gpus-{cache_key(install, self.salt)}.json"
        )

    def devices(self, install: BlenderInstall | None = None) -> list[GpuDevice]:
        """What `install` (default: every Blender) sees; empty until discovery is done."""
        with self._lock:
            if install is not None:
                return list(self._found.get(install.path, []))
            return self._every()

    def count_for(self, install: BlenderInstall | None) -> int:
        """`gpu_per_worker`: the GPUs `install` renders on, one render worker each (0: none,
        and the configured count renders on the CPU). Waits for discovery: workers depend on it."""
        self.wait()
        count = len(render_devices(self.devices(install))) if install is not None else 0
        if count == 0:
            log.warning("gpu_per_worker: no GPU found; the render workers use the CPU")
        return count

    def describe(self) -> dict[str, Any]:
        """What health, `pi-render blenders` and host info show."""
        with self._lock:
            return {"state": "done" if self._done.is_set() else "probing",
                    "devices": [d.model_dump() for d in self._every()],
                    "by_blender": {path: [d.model_dump() for d in ds]
                                   for path, ds in self._found.items()},
                    "errors": dict(self._errors)}  # fmt: skip

    def _every(self) -> list[GpuDevice]:
        """Each device once, whichever Blenders see it (the caller holds the lock)."""
        unique = {(d.backend, d.id): d for ds in self._found.values() for d in ds}
        return list(unique.values())


def discover_gpus(installs: list[BlenderInstall], sandbox: Sandbox | None,
                  keep: list[str]) -> GpuDiscovery:  # fmt: skip
    """Start asking each Blender (in the background), as renders run it: in `sandbox`, with
    the environment variables `keep` (which are part of the cache key)."""
    salt = repr(sorted(scrubbed_env(keep, Path("/")).items()))
    ask = functools.partial(probe, sandbox=sandbox, keep=keep)
    discovery = GpuDiscovery(installs, default_cache_dir(os.environ), ask, salt)
    discovery.start()
    return discovery
