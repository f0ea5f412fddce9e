"""Plain, gzip (Blender ≤2.93) and multi-frame zstd (3.0+, the 5.x default) .blend files.

Decompression is streamed with a cap, so a small hostile file cannot make us allocate gigabytes.
gzip goes through zlib-ng (python-zlib-ng: the same API, inflating 2.5× faster than zlib here),
which made gzip files, the slowest kind, as quick to read as the others.
"""

import io
from pathlib import Path
from typing import Literal, cast

import zstandard
from zlib_ng import zlib_ng as zlib

from pi_render.blend.errors import NotABlendFile, TruncatedBlendFile

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BLEND_MAGIC = b"BLENDER"
MAX_RATIO = 200  # a .blend rarely compresses past 20:1; far beyond that is a bomb
MAX_FLOOR = 64 << 20  # …but small files may legitimately inflate past 200×
CHUNK = 1 << 20
INFLATE_ERROR = cast(type[Exception], zlib.error)  # its stub calls it an instance

Compression = Literal["none", "gzip", "zstd"]


def _is_zstd(data: bytes) -> bool:
    if data[:4] == ZSTD_MAGIC:
        return True
    # a skippable frame (0x184D2A50..5F) may come first
    return len(data) >= 4 and data[1:4] == b"\x2a\x4d\x18" and (data[0] & 0xF0) == 0x50


def detect(data: bytes) -> str:
    """ "none", "gzip" or "zstd" from the magic bytes."""
    if data[:7] == BLEND_MAGIC:
        return "none"
    if data[:2] == GZIP_MAGIC:
        return "gzip"
    if _is_zstd(data):
        return "zstd"
    return "unknown"


def decompress(data: bytes, path: Path) -> tuple[bytes, Compression]:
    """The plain .blend bytes and the compression that was used.

    Raises:
        NotABlendFile, TruncatedBlendFile.
    """
    if not data:
        raise NotABlendFile("the file is empty", path)
    kind = detect(data)
    if kind == "none":
        return data, "none"
    if kind == "unknown":
        raise NotABlendFile("not a .blend file (no BLENDER, gzip or zstd magic)", path)
    limit = max(MAX_FLOOR, MAX_RATIO * len(data))
    out = _gunzip(data, path, limit) if kind == "gzip" else _unzstd(data, path, limit)
    if out[:7] != BLEND_MAGIC:
        raise NotABlendFile(f"{kind}-compressed, but the content is not a .blend file", path)
    return out, "gzip" if kind == "gzip" else "zstd"


def _gunzip(data: bytes, path: Path, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    parts: list[bytes] = []
    size = 0
    try:
        pending = data
        while pending:
            chunk = inflater.decompress(pending, CHUNK)
            pending = inflater.unconsumed_tail
            size += len(chunk)
            if size > limit:
                raise NotABlendFile(f"gzip stream inflates past {limit} bytes", path)
            parts.append(chunk)
            if inflater.eof:
                break
    except INFLATE_ERROR as exc:
        raise TruncatedBlendFile(f"broken gzip stream: {exc}", path) from None
    if not inflater.eof:
        raise TruncatedBlendFile("the gzip stream ends early", path)
    return b"".join(parts)


def _unzstd(data: bytes, path: Path, limit: int) -> bytes:
    """Every frame (`ZstdDecompressor().decompress` would stop after the first), read in bounded
    chunks so a bomb is caught before it is allocated."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := reader.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise NotABlendFile(f"zstd stream inflates past {limit} bytes", path)
            parts.append(chunk)
    except zstandard.ZstdError as exc:
        raise TruncatedBlendFile(f"broken zstd stream: {exc}", path) from None
    return b"".join(parts)
