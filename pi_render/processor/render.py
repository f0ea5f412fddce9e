"""The render processor: renders the frames the ledger does not have yet, validating and placing
each one as Blender saves it, with live progress and a log kept per task."""

import json
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from pi_render.errors import PiRenderError, StorageError
from pi_render.manifest.frames import FrameOutput, FrameStore, Holder
from pi_render.processor.base import Processor
from pi_render.processor.blender import (
    HOOKS,
    BlenderEvent,
    BlenderInstall,
    RenderCommand,
    frame_list,
    pick_blender,
)
from pi_render.processor.blender_run import BlenderProcess, reap_orphan, scrubbed_env
from pi_render.processor.context import TaskContext
from pi_render.processor.device import RenderDevice, choose_device
from pi_render.processor.disk_space import FrameSizes, SpaceGuard
from pi_render.processor.gpu import render_devices
from pi_render.processor.outputs import (
    OutputFolder,
    check_image,
    frame_number,
    place,
    still_there,
)
from pi_render.processor.sandbox import installation
from pi_render.task.render import RenderArgs, RenderOutputType, RenderResult, RenderTask

log = logging.getLogger(__name__)
SCRIPTS = HOOKS.parent  # the scripts injected into Blender (progress hooks, the bpy runner)


class NoBlender(PiRenderError):
    """Raised when no Blender executable or bpy module can be found."""

    retryable = False


class MissingFrames(PiRenderError):
    """Raised when Blender finished but expected frames are not there."""


class MissingAssets(PiRenderError):
    """Raised when Blender's log says files the scene needs were missing: the frames would be
    wrong (a black or magenta object), so the render is not called complete."""

    retryable = False


class FrameProgress:
    """Frames done of total, the current frame, the last frame's time and an ETA."""

    def __init__(self, ctx: TaskContext, total: int, done: int) -> None:
        self.ctx, self.total, self.done = ctx, total, done
        self.current: int | None = None
        self.clock = ctx.clock
        self.started = self.clock.monotonic()
        self.rendered = 0
        self.last_frame_s: float | None = None
        self._frame_started: float | None = None

    def frame_started(self, frame: int) -> None:
        if frame != self.current:
            self.current, self._frame_started = frame, self.clock.monotonic()
            self.report()

    def frame_done(self) -> None:
        now = self.clock.monotonic()
        self.done += 1
        self.rendered += 1
        if self._frame_started is not None:
            self.last_frame_s = round(now - self._frame_started, 3)
        self.report()

    def report(self) -> None:
        spent = self.clock.monotonic() - self.started
        per_frame = spent / self.rendered if self.rendered else None
        left = self.total - self.done
        detail: dict[str, Any] = {
            "frames_done": self.done, "frames_total": self.total, "current_frame": self.current,
            "percent": round(100 * self.done / self.total, 1) if self.total else 100.0,
            "last_frame_s": self.last_frame_s,
            "eta_s": round(per_frame * left, 1) if per_frame is not None else None,
        }  # fmt: skip
        message = f"frame {self.current}: {self.done}/{self.total} done"
        self.ctx.report_progress(self.done / self.total if self.total else 1.0, message, detail)


class SnapshotUnreachable(PiRenderError):
    """Raised when this host cannot read a render's snapshot (farm mode: the shared folder is
    missing here); the chunk is tried on another host."""


class NoBlenderOpensIt(PiRenderError):
    """Raised when none of this host's Blenders opens the file (refused at submit, unless the
    Blenders changed since)."""

    retryable = False


class RenderProcessor(Processor[RenderArgs, RenderResult]):
    task = RenderTask
    _blender: BlenderInstall
    _device: RenderDevice
    _gpu_failure: Exception | None = None

    def _process(self, args: RenderArgs, ctx: TaskContext) -> RenderResult:
        try:
            return self._frames(args, ctx)
        finally:
            env = self.env
            if env is not None and env.work(ctx.task_id) != env.spool(ctx.task_id):
                shutil.rmtree(env.work(ctx.task_id), ignore_errors=True)  # farm: host scratch

    def _frames(self, args: RenderArgs, ctx: TaskContext) -> RenderResult:
        """Render what the ledger lacks; returns every frame of the task's range."""
        env = self.env
        if env is None or env.blender is None:
            raise NoBlender("no Blender found: install Debian's `blender` package, "
                            "set `blender` in the config, or install the bpy module")  # fmt: skip
        record = json.loads(ctx.record_json) if ctx.record_json else {}
        self._blender = self._pick(args, record)
        self._device = self._device_of(args, ctx, record)
        ledger: FrameStore = env.frames
        key = ctx.job or ctx.task_id
        assert args.snapshot is not None and args.output_dir is not None
        snapshot, output_dir = Path(env.local(args.snapshot)), Path(env.local(args.output_dir))
        args = args.model_copy(update={"snapshot": str(snapshot), "output_dir": str(output_dir)})
        if not snapshot.is_file():  # farm: the shared folder is not mounted here
            raise SnapshotUnreachable(
                f"this host cannot read the snapshot {snapshot}: is the shared folder "
                "mounted here (farm.shared_dir, farm.path_map)?")  # fmt: skip
        expected = args.frames()
        video = args.output_type is RenderOutputType.FFMPEG
        done: dict[int, FrameOutput] = {}
        if not video:  # a video cannot be resumed frame by frame: it is rendered whole
            done = {
                f.frame: f
                for f in ledger.get(key)
                if f.frame in expected
                and still_there(f.model_copy(update={"path": env.local(f.path)}))
            }
        missing = [f for f in expected if f not in done]
        progress = FrameProgress(ctx, len(expected), len(done))
        logged: list[str] = []  # what Blender said was missing
        if missing:
            with OutputFolder(output_dir, args.owner_uid) as folder:
                self._render(args, ctx, missing, folder, done, progress, video, logged)
        self._report_kept_frames(ctx)
        absent = [f for f in expected if f not in done]
        if absent and self._gpu_failure is not None:  # Cycles ended a frame, Blender exited 0
            raise self._gpu_failure
        if absent:
            raise MissingFrames(f"Blender finished but frames {absent[:10]} are missing")
        lines = list(dict.fromkeys(logged))  # each once, in the order Blender said them
        if lines and not args.allow_missing:
            raise MissingAssets(f"Blender could not find files the scene needs: "
                                f"{'; '.join(lines[:10])}")  # fmt: skip
        return RenderResult(output_dir=str(output_dir), frames=[done[f] for f in sorted(done)],
                            fps=args.fps, warnings=[*args.warnings, *lines])  # fmt: skip

    def _report_kept_frames(self, ctx: TaskContext) -> None:
        """Farm mode: frames kept while the database was away are reported before the outcome
        (the job's frames come from the ledger). Until it answers the worker holds its chunk
        and claims nothing new."""
        assert self.env is not None
        while True:
            try:
                self.env.frames.flush()
                return
            except StorageError as exc:
                log.warning("waiting to report kept frames: %s", exc,
                            extra={"task_id": ctx.task_id})  # fmt: skip
                ctx.sleep(2.0)

    def _pick(self, args: RenderArgs, record: dict[str, Any]) -> BlenderInstall:
        """The oldest Blender here that opens the file (and is at least what the task requires);
        the task log names the one chosen."""
        env = self.env
        assert env is not None and env.blender is not None
        at_least = (record.get("requires") or {}).get("blender")
        chosen = pick_blender(env.blenders or [env.blender], args.blend_version, at_least)
        if chosen is None:
            there = ", ".join(b.version or "?" for b in env.blenders or [env.blender])
            raise NoBlenderOpensIt(
                f"this file was saved by Blender {args.blend_version}"
                f"{f' and the task requires Blender >= {at_least}' if at_least else ''}; "
                f"this host has {there}: add one to [[blenders]] in the config"
            )
        return chosen

    def _device_of(self, args: RenderArgs, ctx: TaskContext,
                   record: dict[str, Any]) -> RenderDevice:  # fmt: skip
        """CPU or GPUs, as the config, the task, this worker's GPU and the chosen Blender's
        devices decide (discovery is waited for: it ends soon after the daemon starts)."""
        env = self.env
        assert env is not None
        settings, sees = env.settings, []
        if (args.device or settings.device) != "cpu" and env.gpus is not None:
            env.gpus.wait()
            sees = env.gpus.devices(self._blender)
        own = None  # gpu_per_worker: the GPU of this worker's index, by its id in every Blender
        if ctx.gpu_slot is not None and env.gpus is not None:
            mine = render_devices(env.gpus.devices(env.blender))
            own = mine[ctx.gpu_slot].id if ctx.gpu_slot < len(mine) else ""
        return choose_device(settings.device, args.device, sees, own, record,
                             settings.gpu_fallback)  # fmt: skip

    def _sandboxed(self, argv: list[str], args: RenderArgs, ctx: TaskContext,
                   partial: Path) -> list[str]:  # fmt: skip
        """Blender's command line inside the sandbox: it sees the snapshot (read-only), its
        partial folder (read-write), our scripts and its own installation; nothing else."""
        env = self.env
        assert env is not None and env.blender is not None and args.snapshot is not None
        sandbox = env.sandbox
        if sandbox is None or sandbox.bwrap is None:
            return argv
        root = env.spool(ctx.job or ctx.task_id) / "root"  # a chunk renders its job's snapshot
        snapshot = root if root.is_dir() else Path(args.snapshot).parent
        if sandbox.run_as is not None:
            os.chown(partial, *sandbox.run_as)  # the only place it may write
        installed = installation(self._blender.path, self._blender.kind == "bpy")
        return sandbox.wrap(argv, [snapshot, SCRIPTS], [partial], installed, self._device.is_gpu)

    def _render(
        self,
        args: RenderArgs,
        ctx: TaskContext,
        frames: list[int],
        folder: OutputFolder,
        done: dict[int, FrameOutput],
        progress: FrameProgress,
        video: bool,
        logged: list[str],
    ) -> None:
        env = self.env
        assert env is not None and env.blender is not None and args.snapshot is not None
        work = env.work(ctx.task_id)  # this host's own (farm: never on the shared folder)
        pid_file = work / "blender.pid"
        if reap_orphan(pid_file, args.snapshot):
            log.warning(
                "killed a Blender left running by a dead daemon", extra={"task_id": ctx.task_id}
            )
        partial = work / "partial"
        shutil.rmtree(partial, ignore_errors=True)  # leftovers of a killed run are not trusted
        partial.mkdir(parents=True)
        command = RenderCommand(
            blend=Path(args.snapshot), output_pattern=str(partial / "frame_####"), frames=frames,
            scene=args.scene, engine=args.engine,
            file_format=args.output_type.value if args.output_type else None,
            threads=env.settings.render_threads,
            allow_scripts=env.settings.allow_blend_scripts, device=self._device.spec(),
            cycles_device=self._device.cycles_device(),
        )  # fmt: skip

        holder = Holder(ctx.task_id, ctx.attempt)
        key = ctx.job or ctx.task_id
        since = [ctx.clock.monotonic()]  # when the frame now landing began (the last landed)
        space = SpaceGuard(ctx, folder.fd, folder.path, env.settings.min_free_bytes,
                           env.settings.max_pause_s)  # fmt: skip
        sizes = FrameSizes(env.settings.paths.frame_sizes)
        left = [len(frames)]  # of this run's frames, not placed yet

        def land(path: Path) -> None:
            frame = frame_number(path)
            if video or frame is None or frame in done or not _own_frame(path, partial):
                return
            space.before(os.lstat(path).st_size)  # held while the output disk cannot take it
            env.frames.fence(holder)  # farm: a host whose lease ran out places nothing
            output = place(path, folder, frame)
            output = output.model_copy(
                update={"host": env.host, "path": env.farm_form(output.path)}
            )
            env.frames.put(key, output, holder)  # durable before anyone is told
            done[frame] = output
            progress.frame_done()
            now = ctx.clock.monotonic()
            env.on_frame(key, frame, now - since[0])
            since[0] = now
            left[0] -= 1
            if len(space.sizes) == 0 and args.frame_key:  # the first: a submit may project
                sizes.put(args.frame_key, output.size)
            space.after(output.size, left[0])  # held while the rest would not fit

        def on_event(event: BlenderEvent) -> None:
            if event.kind == "frame_start" and event.value and event.value.lstrip("-").isdigit():
                progress.frame_started(int(event.value))
            elif event.kind == "saved" and event.value:
                land(Path(event.value))
            elif event.kind == "missing" and event.value:
                logged.append(event.value)

        if not video and args.frame_key:  # an earlier render of the file says what to expect
            space.expect(sizes.get(args.frame_key), len(frames))
        env.logs.mkdir(parents=True, exist_ok=True)
        with open(env.log_of(ctx.task_id), "a", encoding="utf-8") as task_log:
            argv = self._sandboxed(command.argv(self._blender), args, ctx, partial)
            task_log.write(f"=== pi-render attempt {ctx.attempt}: {len(frames)} frame(s) "
                           f"{frame_list(frames)} on {self._device.describe()}\n"
                           f"$ {' '.join(argv)}\n")  # fmt: skip
            task_log.flush()
            timeout = args.timeout_s or env.settings.render_timeout_s
            settings = env.settings
            clean = scrubbed_env(settings.blender_env_keep, work)
            sandboxed = bool(env.sandbox and env.sandbox.bwrap)
            process = BlenderProcess(argv, task_log, ctx, on_event, timeout,
                                     settings.render_stall_timeout_s,
                                     settings.render_stop_grace_s, pid_file, clean, sandboxed,
                                     settings.max_pause_s, gpu=self._device.is_gpu)  # fmt: skip
            process.run()
            self._gpu_failure = process.gpu_failure()
        for path in sorted(partial.iterdir()):  # anything saved without a `Saved:` line
            if video:
                check_image(path)
                output = place(path, folder, args.start_frame or 0)
                for frame in frames:
                    done[frame] = output
                env.frames.put(key, output, holder)
            else:
                land(path)
        average = space.average()
        if average and args.frame_key:
            sizes.put(args.frame_key, average)


def _own_frame(path: Path, partial: Path) -> bool:
    """Is `path` a regular file Blender wrote right in `partial`? A `Saved:` line is only text in
    Blender's log, which a .blend can put there too (an object named "Saved: '/etc/…'"): a path
    anywhere else, a link or a folder is never taken."""
    if path.parent != partial or path.name in ("", ".", ".."):
        if path.parent != partial:
            log.warning("ignored a Saved: line outside the partial folder: %s", path)
        return False
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
