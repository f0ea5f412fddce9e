"""A pure-Python .blend reader: version, scenes and the current scene's render settings.

Imports nothing else of pi_render. Every problem with a file is a `BlendFileError`.
"""

from pi_render.blend.errors import (
    BlendFileError,
    CorruptBlendFile,
    NotABlendFile,
    TruncatedBlendFile,
    UnsupportedBlendFile,
)
from pi_render.blend.file import BlendFile, open_blend
from pi_render.blend.scene import BlendInfo, SceneInfo, read_blend_info
from pi_render.blend.trace import (
    Access,
    Dependency,
    TooManyDependencies,
    Trace,
    trace_dependencies,
)

__all__ = [
    "Access", "BlendFile", "BlendFileError", "Dependency", "BlendInfo", "CorruptBlendFile",
    "NotABlendFile",
    "SceneInfo", "TooManyDependencies", "Trace", "TruncatedBlendFile", "UnsupportedBlendFile",
    "open_blend", "read_blend_info", "trace_dependencies",
]  # fmt: skip
