"""Blender shut in: bubblewrap shows it the system read-only, its task's snapshot read-only and
its partial folder read-write, and nothing else of the machine (no home, no data dir, no
network); a daemon running as root starts it as an unprivileged user inside.

Whatever paths a .blend names, Blender can then read only what the snapshot holds (plus its own
installation and system files) and write only where its frames go.
"""

import glob
import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pi_render.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEM = ("/usr", "/etc", "/opt")  # read-only, where they exist
MERGED = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # symlinks into /usr, or dirs
# GPUs, shown only to a GPU attempt (and the device probe): NVIDIA's nodes (CUDA, OptiX),
# /dev/dri (Intel oneAPI, AMD), /dev/kfd (AMD HIP); and the driver facts their runtimes read
# (read-only). Nothing else of /sys is shown.
DEVICES = ("/dev/dri", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-modeset", "/dev/kfd")
DRIVER_FACTS = ("/sys/module/nvidia", "/sys/class/kfd", "/sys/devices/virtual/kfd")


@dataclass(frozen=True)
class Sandbox:
    """How Blender is started: through bubblewrap (`bwrap`), or, where none can be had, bare
    (`reason` says why); `run_as` is the uid and gid Blender gets when the daemon is root."""

    bwrap: str | None
    run_as: tuple[int, int] | None
    reason: str

    def describe(self) -> dict[str, object]:
        return {"kind": "bwrap" if self.bwrap else "none", "run_as_uid": (
            self.run_as[0] if self.run_as else None), "reason": self.reason}  # fmt: skip

    def wrap(self, argv: list[str], readable: list[Path], writable: list[Path],
             installed: list[str], gpu: bool = False) -> list[str]:  # fmt: skip
        """`argv` run inside the sandbox, which shows `readable`, `writable`, the folders
        `installed` (Blender's own folders: see `installation`) and, for `gpu`, the GPUs."""
        if self.bwrap is None:
            return argv
        args = [self.bwrap, "--die-with-parent", "--proc", "/proc", "--dev", "/dev",
                "--perms", "1777", "--tmpfs", "/tmp", "--setenv", "HOME", "/tmp"]  # fmt: skip
        # its own IPC, process and network namespaces (no network at all); a user namespace
        # too when the daemon is no root (the systemd unit allows just these)
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net"]
        if self.run_as is None:
            args += ["--unshare-user"]
        for path in SYSTEM:
            if os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in MERGED:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for device in [*DEVICES, *sorted(glob.glob("/dev/nvidia[0-9]*"))] if gpu else []:
            if os.path.exists(device):
                args += ["--dev-bind", device, device]
        for facts in DRIVER_FACTS if gpu else ():
            if os.path.isdir(facts):
                args += ["--ro-bind", facts, facts]
        shown = [*installed, *map(str, readable), *map(str, writable)]
        for folder in _ancestors(shown):  # made here 0755: the host's may be 0700 (a data dir)
            args += ["--perms", "0755", "--dir", folder]
        for folder in [*installed, *map(str, readable)]:
            if not folder.startswith(SYSTEM):
                args += ["--ro-bind", folder, folder]
        for folder in map(str, writable):
            args += ["--bind", folder, folder]
        if writable:
            args += ["--chdir", str(writable[0])]
        inner = argv
        if self.run_as is not None:
            uid, gid = self.run_as
            inner = [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                *argv,
            ]
        return [*args, "--", *inner]


def _ancestors(paths: list[str]) -> list[str]:
    """The folders above `paths` that the sandbox must make itself (outside the system binds),
    parents first."""
    found: set[str] = set()
    for path in paths:
        if path.startswith(SYSTEM):
            continue
        parent = os.path.dirname(path)
        while parent not in ("/", "") and parent not in found:
            found.add(parent)
            parent = os.path.dirname(parent)
    return sorted(found, key=lambda folder: folder.count("/"))


def installation(program: str, is_python: bool) -> list[str]:
    """The folders a program outside the system folders needs: Blender's own folder (a tarball
    in /opt or a home), or for Python with bpy its prefix (the venv) and that of the Python the
    venv was made from. Never more than that: a home holding Blender is not shown whole."""
    found: set[str] = set()
    for candidate in (os.path.abspath(program), os.path.realpath(program)):
        folder = os.path.dirname(candidate)
        if is_python:  # <prefix>/bin/python: the prefix holds its library and site-packages
            folder = os.path.dirname(folder)
        if folder not in ("/", "") and not folder.startswith(SYSTEM):
            found.add(folder)
    return sorted(found)


def find_sandbox(setting: str, render_user: str) -> Sandbox:
    """`setting`: "auto" (bubblewrap if it works here, else none), "bwrap" (required) or
    "none". Probed once at start with a real run.

    Raises:
        ConfigError: "bwrap" was asked for and cannot be used, or `render_user` is unknown.
    """
    if setting == "none":
        return Sandbox(None, None, 'sandbox = "none" in the config')
    run_as = _render_ids(render_user) if os.geteuid() == 0 else None
    bwrap = shutil.which("bwrap")
    sandbox = Sandbox(bwrap, run_as, "bubblewrap")
    problem = "bubblewrap (bwrap) is not installed" if bwrap is None else _probe(sandbox)
    if problem is None:
        return sandbox
    if setting == "bwrap":
        raise ConfigError(f'sandbox = "bwrap", but {problem}')
    log.warning("no sandbox for Blender (%s): renders are refused from every uid but the "
                "daemon's own", problem)  # fmt: skip
    return Sandbox(None, None, problem)


def _render_ids(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"render_user {name!r} does not exist") from None
    return entry.pw_uid, entry.pw_gid


def _probe(sandbox: Sandbox) -> str | None:
    """Why this sandbox cannot start a program here (None: it can)."""
    argv = sandbox.wrap(["/usr/bin/true"], [], [], [])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not start ({exc})"
    if done.returncode != 0:
        return f"bubblewrap cannot make a sandbox here: {done.stderr.strip()[:200]}"
    return None
