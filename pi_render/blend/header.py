"""The file header, decided by its bytes: legacy `BLENDER-v304` or v1 `BLENDER17-01v0500`."""

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pi_render.blend.errors import NotABlendFile, TruncatedBlendFile, UnsupportedBlendFile


@dataclass(frozen=True)
class BlendHeader:
    """Layout facts every later read depends on."""

    size: int
    pointer_size: int
    endian: Literal["little", "big"]
    file_version: int
    format_version: int  # 0: legacy BHead4/SmallBHead8; 1: LargeBHead8
    bhead: struct.Struct
    # positions of the fields in an unpacked BHead: code is always 0
    sdna_at: int
    old_at: int
    len_at: int
    count_at: int

    @property
    def prefix(self) -> str:
        return "<" if self.endian == "little" else ">"


def parse_header(data: bytes, path: Path) -> BlendHeader:
    """Raises NotABlendFile, TruncatedBlendFile or UnsupportedBlendFile."""
    if data[:7] != b"BLENDER":
        raise NotABlendFile("not a .blend file (no BLENDER magic)", path)
    if len(data) < 12:
        raise TruncatedBlendFile("the file ends inside its header", path)
    if data[7:8] in (b"_", b"-"):
        pointer_size = 4 if data[7:8] == b"_" else 8
        if data[8:9] not in (b"v", b"V"):
            raise NotABlendFile(f"unknown endianness mark {data[8:9]!r}", path)
        endian: Literal["little", "big"] = "little" if data[8:9] == b"v" else "big"
        version = _digits(data[9:12], path)
        e = "<" if endian == "little" else ">"
        layout = f"{e}4si{'I' if pointer_size == 4 else 'Q'}ii"  # code, len, old, sdna, nr
        return BlendHeader(12, pointer_size, endian, version, 0, struct.Struct(layout), 3, 2, 1, 4)
    if len(data) < 17:
        raise TruncatedBlendFile("the file ends inside its header", path)
    size = _digits(data[7:9], path)
    if size != 17:
        raise UnsupportedBlendFile(f"unknown header size {size}", path)
    if data[9:10] != b"-" or data[12:13] != b"v":
        raise UnsupportedBlendFile("a v1 header must declare 8-byte pointers, little endian", path)
    format_version = _digits(data[10:12], path)
    if format_version != 1:
        raise UnsupportedBlendFile(f"unknown file format version {format_version}", path)
    version = _digits(data[13:17], path)
    # LargeBHead8: code, sdna, old, len (int64), nr (int64)
    return BlendHeader(17, 8, "little", version, 1, struct.Struct("<4siQqq"), 1, 2, 3, 4)


def _digits(raw: bytes, path: Path) -> int:
    if not raw.isdigit():
        raise NotABlendFile(f"header has {raw!r} where digits belong", path)
    return int(raw)


def blender_version(file_version: int) -> str:
    """304 → "3.4", 500 → "5.0", 279 → "2.79" (2.x minors are two digits)."""
    major, minor = divmod(file_version, 100)
    return f"{major}.{minor:02d}" if major < 3 else f"{major}.{minor}"
