"""`--check-space`: one frame rendered at submit, as the render itself will run it (the same
Blender, in the same sandbox, on the CPU), only to learn how big a frame is; then thrown away."""

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pi_render.errors import PiRenderError
from pi_render.processor.base import ProcessorEnv
from pi_render.processor.blender import SCRIPTS_DIR, RenderCommand, pick_blender
from pi_render.processor.blender_run import BlenderProcess, RenderFailed, scrubbed_env
from pi_render.processor.context import TaskContext
from pi_render.processor.device import RenderDevice
from pi_render.processor.sandbox import installation
from pi_render.task.output_space import TrialFrame
from pi_render.task.render import InvalidRenderRequest

# a trial holds a submit's request open: at most this long, and this many at once
TRIAL_TIMEOUT_S = 600.0


class TrialsBusy(PiRenderError):
    """Raised when as many trial frames as allowed are rendering already (or one of yours)."""

    http_status = 429


class TrialSlots:
    """At most `most` trials at once, one per uid: a trial holds a request open for minutes."""

    def __init__(self, most: int = 2) -> None:
        self.most = most
        self._running: list[int | None] = []  # the uids whose trials render now
        self._lock = threading.Lock()

    @contextmanager
    def take(self, uid: int | None) -> Iterator[None]:
        """Raises TrialsBusy when every slot, or one of `uid`'s, is taken."""
        with self._lock:
            if len(self._running) >= self.most or uid in self._running:
                raise TrialsBusy("--check-space: as many trial frames as allowed (one of yours, "
                                 f"{self.most} in all) are rendering; submit again in a moment, "
                                 "or without --check-space")  # fmt: skip
            self._running.append(uid)
        try:
            yield
        finally:
            with self._lock:
                self._running.remove(uid)


SLOTS = TrialSlots()


def trial_frame_bytes(env: ProcessorEnv, trial: TrialFrame) -> int:
    """The size of `trial.frame` as Blender writes it.

    Raises:
        InvalidRenderRequest: no Blender opens the file, or the frame could not be rendered.
        TrialsBusy: two trial frames are rendering already, or one of this uid's.
    """
    with SLOTS.take(trial.uid):
        return _render_trial(env, trial)


def _render_trial(env: ProcessorEnv, trial: TrialFrame) -> int:
    blender = pick_blender(env.blenders or ([env.blender] if env.blender else []),
                           trial.blend_version)  # fmt: skip
    if blender is None:
        raise InvalidRenderRequest("--check-space: no Blender here opens this file")
    settings, work = env.settings, env.spool(trial.task_id)
    partial = Path(tempfile.mkdtemp(prefix="trial-", dir=work))
    cpu = RenderDevice(why="a trial frame")
    command = RenderCommand(
        blend=trial.blend, output_pattern=str(partial / "frame_####"), frames=[trial.frame],
        scene=trial.scene, engine=trial.engine, file_format=trial.file_format,
        threads=settings.render_threads or max(1, (os.cpu_count() or 2) // 2),  # renders go on
        allow_scripts=settings.allow_blend_scripts,
        device=cpu.spec(), cycles_device=cpu.cycles_device(),
    )  # fmt: skip
    argv = command.argv(blender)
    sandbox = env.sandbox
    if sandbox is not None and sandbox.bwrap is not None:
        root = work / "root"
        readable = root if root.is_dir() else trial.blend.parent
        if sandbox.run_as is not None:
            shutil.chown(partial, *sandbox.run_as)
        argv = sandbox.wrap(argv, [readable, SCRIPTS_DIR], [partial],
                            installation(blender.path, blender.kind == "bpy"))  # fmt: skip
    try:
        with open(work / "trial.log", "w", encoding="utf-8") as log:
            ctx = TaskContext(trial.task_id, 0, lambda *report: None)
            limit = min(settings.render_timeout_s or TRIAL_TIMEOUT_S, TRIAL_TIMEOUT_S)
            BlenderProcess(argv, log, ctx, lambda event: None, limit,
                           settings.render_stall_timeout_s, settings.render_stop_grace_s,
                           work / "trial.pid", scrubbed_env(settings.blender_env_keep, work),
                           bool(sandbox and sandbox.bwrap)).run()  # fmt: skip
        frames = [p for p in partial.iterdir() if stat.S_ISREG(p.lstat().st_mode)]  # no link
        if len(frames) != 1:
            raise InvalidRenderRequest(f"--check-space: the trial frame {trial.frame} was not "
                                       "written (see trial.log in the task's spool)")  # fmt: skip
        return frames[0].lstat().st_size
    except RenderFailed as exc:
        raise InvalidRenderRequest(f"--check-space: the trial frame failed: {exc}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
