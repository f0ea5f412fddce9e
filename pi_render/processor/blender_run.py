"""One Blender run, supervised: its whole process group, its log, a timeout, a hang watchdog, and
a stop (cancel or shutdown) that reaches it within seconds. Failures get names."""

import functools
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pi_render.clock import Clock
from pi_render.errors import PiRenderError
from pi_render.processor.blender import GPU_OUT_OF_MEMORY, BlenderEvent, parse_line
from pi_render.processor.context import StopReason, TaskContext, TaskStopped

log = logging.getLogger(__name__)


class RenderFailed(PiRenderError):
    """Raised when Blender exits without doing what was asked; the message has its error line."""


class BlendUnreadable(RenderFailed):
    """Raised when Blender cannot read the .blend (missing, truncated, corrupt, too new)."""

    retryable = False


class UnknownEngine(RenderFailed):
    """Raised when Blender does not know the requested render engine."""

    retryable = False


class BlenderCannotSave(RenderFailed):
    """Raised when Blender cannot write its output files."""


class BlenderPythonError(RenderFailed):
    """Raised when a Python script failed inside Blender."""

    retryable = False


class BlenderKilled(RenderFailed):
    """Raised when Blender was killed by SIGKILL: most often the kernel's out-of-memory killer."""


class BlenderCrashed(RenderFailed):
    """Raised when Blender died of a signal (segfault, abort…) or failed without saying why."""


class GpuOutOfMemory(RenderFailed):
    """Raised when the GPU ran out of memory for the scene (`gpu_fallback = "cpu"`: the next
    attempt renders on the CPU)."""


class GpuError(RenderFailed):
    """Raised when a GPU or its driver failed the render (`gpu_fallback = "cpu"` applies)."""


class RenderTimeout(RenderFailed):
    """Raised when the render ran past its time limit."""


class PausedTooLong(RenderFailed):
    """Raised when a paused render was not resumed within max_pause_s."""

    retryable = False


class RenderStalled(RenderFailed):
    """Raised when Blender printed nothing for longer than the hang watchdog allows."""


_CLASSES = [
    ("Cannot read file", BlendUnreadable), ("Failed to read blend file", BlendUnreadable),
    ("File format is not supported", BlendUnreadable), ("engine not found", UnknownEngine),
    ("cannot save", BlenderCannotSave), ("script failed", BlenderPythonError),
    ("Python", BlenderPythonError),
]  # fmt: skip
_STOP, _PAUSE, _RESUME, _WOKE = object(), object(), object(), object()


def _next(lines: "queue.Queue[object]", clock: Clock, timeout: float) -> object:
    """The next line, waiting up to `timeout` of `clock`'s time (a fake clock drives the stall
    and time-limit watchdogs); _WOKE when none came."""
    with lines.not_empty:
        # the caller holds the queue's own (non-reentrant) mutex here: look at its deque directly
        clock.wait_for(lines.not_empty, lambda: len(lines.queue) > 0, timeout)
    try:
        return lines.get_nowait()
    except queue.Empty:
        return _WOKE


class BlenderProcess:
    """Runs `argv` in its own process group, feeding each output line to `on_event`."""

    def __init__(
        self,
        argv: list[str],
        log: IO[str],
        ctx: TaskContext,
        on_event: Callable[[BlenderEvent], None],
        timeout_s: float | None,
        stall_s: float,
        grace_s: float,
        pid_file: Path,
        env: dict[str, str] | None = None,
        sandboxed: bool = False,
        max_pause_s: float = 86400.0,
        gpu: bool = False,
    ) -> None:
        self.gpu = gpu  # a GPU attempt: only then do GPU error lines mean a GPU failure
        self.env, self.sandboxed, self.max_pause_s = env, sandboxed, max_pause_s
        self.argv, self.log, self.ctx, self.on_event = argv, log, ctx, on_event
        self.pid_file = pid_file
        self.timeout_s, self.stall_s, self.grace_s = timeout_s, stall_s, grace_s
        self.errors: list[str] = []
        self.gpu_errors: list[str] = []

    def run(self) -> None:
        """Raises a RenderFailed subclass, or TaskStopped when asked to stop."""
        proc = subprocess.Popen(
            [*launch_prefix(self.sandboxed), *self.argv], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            text=True, errors="replace", bufsize=1, env=self.env,
        )  # fmt: skip
        self.pid_file.write_text(f"{proc.pid}\n")  # so a daemon killed now can reap it later
        lines: queue.Queue[object] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
        reader.start()
        self.ctx.on_stop(lambda: lines.put(_STOP))

        def pause(paused: bool) -> None:  # signal at once; the marker wakes the loop
            try:
                os.killpg(proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)
            except ProcessLookupError:  # it has exited (its last lines are still being read)
                pass
            lines.put(_PAUSE if paused else _RESUME)

        ctx, clock = self.ctx, self.ctx.clock
        ctx.on_pause(pause)
        started = last_output = clock.monotonic()
        try:
            while True:
                item = _next(lines, clock, max(0.0, self._deadline(started, last_output)
                                               - clock.monotonic()))  # fmt: skip
                if item is _WOKE:  # a deadline: it has passed, or the pauses moved it on
                    self._check_deadlines(proc, started, last_output)
                    continue
                if item is _STOP:
                    self._kill(proc)
                    raise TaskStopped(ctx.stop_reason or StopReason.CANCEL)
                if item is _PAUSE or item is _RESUME:
                    self.log.write("=== pi-render: paused (SIGSTOP)\n" if item is _PAUSE
                                   else "=== pi-render: resumed (SIGCONT)\n")  # fmt: skip
                    continue
                if item is None:
                    break
                last_output = clock.monotonic()
                self._handle(str(item))
        finally:
            ctx.on_pause(None)
            if proc.poll() is None:
                self._kill(proc)
            reader.join(5)
            self.pid_file.unlink(missing_ok=True)
        self._check_exit(proc.wait())

    def _deadline(self, started: float, last_output: float) -> float:
        """When the loop must look again: stopped, when a person's pause passes max_pause_s (a
        hold of the processor's own has its limit); running, when the hang watchdog (counted
        from the last line or the last resume) or the time limit (paused time not counted)
        would fire."""
        ctx = self.ctx
        if ctx.paused:
            since = ctx.user_paused_since()
            return (since + self.max_pause_s) if since is not None else ctx.clock.monotonic() + 60
        limits = [max(last_output, ctx.resumed_at() or 0.0) + self.stall_s]
        if self.timeout_s is not None:
            limits.append(started + ctx.paused_s() + self.timeout_s)
        return min(limits)

    def _check_deadlines(self, proc: "subprocess.Popen[str]", started: float,
                         last_output: float) -> None:  # fmt: skip
        """Raises the limit that has passed (after killing Blender); nothing when none has."""
        ctx, now = self.ctx, self.ctx.clock.monotonic()
        if now < self._deadline(started, last_output):
            return
        if ctx.paused:
            self._kill(proc)
            raise PausedTooLong(
                f"the render stayed paused past max_pause_s ({self.max_pause_s:g}s): "
                "it held its worker; resume sooner, or raise max_pause_s"
            )
        self._kill(proc)
        if self.timeout_s is not None and now >= started + ctx.paused_s() + self.timeout_s:
            raise RenderTimeout(f"the render ran past its {self.timeout_s:g}s limit")
        raise RenderStalled(f"Blender printed nothing for {self.stall_s:g}s (hang watchdog)")

    def _handle(self, line: str) -> None:
        self.log.write(line)
        self.log.flush()  # `pi-render logs -f` follows the file: it must not lag a buffer behind
        event = parse_line(line)
        if event is None:
            return
        if event.kind == "error" and event.value:
            self.errors.append(event.value)
        if event.kind == "gpu_error" and event.value and self.gpu:
            self.gpu_errors.append(event.value)
        self.on_event(event)

    def gpu_failure(self) -> RenderFailed | None:
        """The GPU's failure, if this GPU attempt printed one (Cycles may end a frame and Blender
        still exit 0: the caller asks when frames are missing)."""
        for line in self.gpu_errors:
            if GPU_OUT_OF_MEMORY.search(line):
                return GpuOutOfMemory(f"the GPU ran out of memory: {line}")
        return GpuError(f"the GPU failed: {self.gpu_errors[-1]}") if self.gpu_errors else None

    def _check_exit(self, code: int) -> None:
        """Raises what went wrong: a GPU's failure first, then by signal or error line."""
        failure = self.gpu_failure() if code != 0 else None
        if failure is not None:
            raise failure
        last_error = self.errors[-1] if self.errors else None
        if self.sandboxed and code > 128:
            code = 128 - code  # bubblewrap passes on a signal death as 128 + the signal
        if code < 0:
            name = signal.Signals(-code).name
            if -code == signal.SIGKILL:
                raise BlenderKilled(f"Blender was killed by {name} (out of memory?)")
            raise BlenderCrashed(
                f"Blender died of {name}" + (f": {last_error}" if last_error else "")
            )
        if code == 0:
            return
        for needle, error in _CLASSES:
            for line in self.errors:
                if needle in line:
                    raise error(line)
        raise BlenderCrashed(f"Blender exited with code {code}" + (
            f": {last_error}" if last_error else " without an error line"))  # fmt: skip

    def _kill(self, proc: "subprocess.Popen[str]") -> None:
        """SIGTERM to the whole group (Blender stops at once), SIGKILL after the grace; then
        SIGKILL to whatever of the group outlived its leader (a sandbox's own init ignores
        SIGTERM)."""
        for sig, wait in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
                os.killpg(proc.pid, signal.SIGCONT)  # a stopped (paused) one must see SIGTERM
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@functools.cache
def launch_prefix(sandboxed: bool = False) -> tuple[str, ...]:
    """What Blender is started through (util-linux's setpriv, which execs it: the same pid):
    - the kernel SIGKILLs it when its worker thread dies (a daemon killed with -9 included), so
      an orphan never renders frames that the next attempt renders again;
    - started by root and bare (no sandbox), it keeps uid 0 but no capability at all: file
      permissions bind it like any owner, so it cannot write the read-only files a snapshot
      shares with other snapshots through the content store (a File Output aimed at one, say).
      A sandbox needs root's capabilities to build itself, and drops them inside.
    Looked up once (and warned about once), not on every render."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        log.warning(
            "setpriv (util-linux) not found: a Blender may outlive a killed daemon "
            "until its task runs again, and one started by root keeps its capabilities"
        )
        return ()
    prefix: tuple[str, ...] = (setpriv, "--pdeathsig", "KILL")
    if os.geteuid() == 0 and not sandboxed:
        prefix += ("--bounding-set", "-all", "--inh-caps", "-all", "--no-new-privs")
    return (*prefix, "--")


def scrubbed_env(keep: list[str], home: Path) -> dict[str, str]:
    """Only the listed variables (no inherited secrets), and a HOME of the task's own."""
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env["HOME"] = str(home)
    return env


def reap_orphan(pid_file: Path, marker: str) -> bool:
    """Kill the process group of a Blender that outlived a killed daemon (its pid file says which,
    and its command line must still name `marker`, the task's snapshot). True if one was found."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return False
    pid_file.unlink(missing_ok=True)
    if marker not in cmdline:
        return False  # the pid was reused by something else
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _pump(proc: "subprocess.Popen[str]", lines: "queue.Queue[object]") -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)
