"""The inspect_blend processor: the .blend reader, run in a worker on the copy taken at submit."""

from pi_render.blend import BlendInfo, read_blend_info
from pi_render.processor.base import Processor
from pi_render.processor.context import TaskContext
from pi_render.task.inspect_blend import InspectBlendArgs, InspectBlendTask


class InspectBlendProcessor(Processor[InspectBlendArgs, BlendInfo]):
    task = InspectBlendTask
    pure = True  # it reads the copy taken at submit; its finding is its result

    def _process(self, args: InspectBlendArgs, ctx: TaskContext) -> BlendInfo:
        # older records have no copy: they read the path itself
        return read_blend_info(args.snapshot or args.path, shown_as=args.path)
