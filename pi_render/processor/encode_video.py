"""The encode_video processor: ffmpeg over the parent render's frames, written atomically."""

import os
import shutil
import subprocess
from pathlib import Path

from pi_render.errors import PiRenderError
from pi_render.fsync import fsync_path
from pi_render.processor.base import Processor
from pi_render.processor.context import TaskContext
from pi_render.processor.outputs import sha256_of
from pi_render.task.encode_video import EncodeVideoArgs, EncodeVideoResult, EncodeVideoTask


class NoFrames(PiRenderError):
    """Raised when the parent task left no frames to encode."""

    retryable = False


class EncodeFailed(PiRenderError):
    """Raised when ffmpeg fails; the message has its last lines."""


class EncodeVideoProcessor(Processor[EncodeVideoArgs, EncodeVideoResult]):
    task = EncodeVideoTask

    def _process(self, args: EncodeVideoArgs, ctx: TaskContext) -> EncodeVideoResult:
        result = ctx.parent_result or {}
        frames = sorted(result.get("frames") or [], key=lambda f: f["frame"])
        if not frames:
            raise NoFrames("encode_video needs a parent render with frames (chain it after one)")
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise EncodeFailed("ffmpeg is not installed (apt-get install ffmpeg)")
        fps = args.fps or result.get("fps") or 24.0
        folder = Path(frames[0]["path"]).parent
        target = folder / args.name
        partial = folder / f".{args.name}.partial.mp4"
        listing = folder / f".{ctx.task_id}.frames.txt"
        listing.write_text("".join(f"file '{Path(f['path']).name}'\nduration {1 / fps}\n"
                                   for f in frames))  # fmt: skip
        argv = [ffmpeg, "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i",
                str(listing), "-r", f"{fps}", "-c:v", "libx264", "-crf", str(args.crf),
                "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                "-frames:v", str(len(frames)), str(partial)]  # fmt: skip
        ctx.report_progress(0.0, f"encoding {len(frames)} frames at {fps:g} fps")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        finally:
            listing.unlink(missing_ok=True)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise EncodeFailed(f"ffmpeg exited {done.returncode}: {done.stderr.strip()[-400:]}")
        fsync_path(partial)
        os.replace(partial, target)
        fsync_path(folder)
        return EncodeVideoResult(path=str(target), frames=len(frames), fps=fps,
                                 size=target.stat().st_size, sha256=sha256_of(target))  # fmt: skip
