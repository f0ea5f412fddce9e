"""Injected with `--python` after the .blend: prints one marker line per render event.

Blender 3.x prints `Fra:` lines and 5.x prints almost nothing in background mode; these handlers
speak the same way in both. Runs inside Blender, so it imports only bpy and the stdlib.
"""

import sys

import bpy

MARK = "@@PI_RENDER"


def _say(*words: object) -> None:
    sys.stdout.write(" ".join([MARK, *map(str, words)]) + "\n")
    sys.stdout.flush()


def _frame_start(scene: object, *_: object) -> None:
    _say("frame_start", bpy.context.scene.frame_current)


def _frame_written(scene: object, *_: object) -> None:
    _say("frame_written", bpy.context.scene.frame_current)


def _cancel(scene: object, *_: object) -> None:
    _say("cancel")


handlers = bpy.app.handlers
handlers.render_pre.append(_frame_start)
handlers.render_write.append(_frame_written)
handlers.render_cancel.append(_cancel)
_say("ready", bpy.app.version_string)
