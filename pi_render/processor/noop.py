"""The noop processor: sleeps (cancellably) and echoes the payload."""

from pi_render.processor.base import Processor
from pi_render.processor.context import TaskContext
from pi_render.task.noop import NoopArgs, NoopResult, NoopTask


class NoopProcessor(Processor[NoopArgs, NoopResult]):
    task = NoopTask
    pure = True

    def _process(self, args: NoopArgs, ctx: TaskContext) -> NoopResult:
        if args.sleep_s > 0:
            ctx.report_progress(0.0, f"sleeping {args.sleep_s:g}s")
            ctx.sleep(args.sleep_s)
        ctx.check_stop()
        return NoopResult(payload=args.payload)
