"""The notify processor: the configured command gets this task's record as JSON on stdin."""

import subprocess

from pi_render.errors import PiRenderError
from pi_render.processor.base import Processor
from pi_render.processor.context import TaskContext
from pi_render.task.notify import NotifyArgs, NotifyResult, NotifyTask


class NotifyFailed(PiRenderError):
    """Raised when the notify command is missing or fails."""


class NotifyProcessor(Processor[NotifyArgs, NotifyResult]):
    task = NotifyTask

    def _process(self, args: NotifyArgs, ctx: TaskContext) -> NotifyResult:
        command = self.env.settings.notify_command if self.env is not None else None
        if not command:
            raise NotifyFailed("no notify_command is configured")
        if self.env is None or ctx.record_json is None:
            raise NotifyFailed("notify runs only inside the daemon")
        try:
            done = subprocess.run(command, input=ctx.record_json, capture_output=True, text=True,
                                  timeout=300)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NotifyFailed(f"notify command failed: {exc}") from None
        if done.returncode != 0:
            raise NotifyFailed(f"notify command exited {done.returncode}: {done.stderr[-300:]}")
        return NotifyResult(exit_code=done.returncode, output=done.stdout[-2000:])
