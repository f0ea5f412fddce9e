"""The block index: one pass over the BHeads, remembering where each block is.

Only offsets are kept (old pointer → header offset, and the offsets of each non-DATA code);
`Block`s are made on demand, so a file with 100k DATA blocks stays cheap to open.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pi_render.blend.errors import CorruptBlendFile
from pi_render.blend.header import BlendHeader


@dataclass(frozen=True)
class Block:
    """One block: its 4-byte code, SDNA struct index, old pointer, and where its payload lies."""

    code: bytes
    sdna_index: int
    old: int
    length: int
    count: int
    offset: int  # payload start in the (decompressed) file

    @property
    def id_code(self) -> bytes:
        """The 2-letter ID code (b"SC", b"OB", …) of an ID block."""
        return self.code[:2] if self.code[2:] == b"\0\0" else self.code


class BlockIndex:
    """Every block of a file, scanned once; a missing ENDB counts as the end (as in Blender)."""

    def __init__(self, data: bytes, header: BlendHeader, path: Path) -> None:
        self._data = data
        self._header = header
        self.by_old: dict[int, int] = {}
        self.by_code: dict[bytes, list[int]] = {}
        self.by_struct: dict[int, list[int]] = {}  # SDNA struct index → DATA blocks of it
        self.ended = False  # True when an ENDB block was found
        self._scan(path)

    def _scan(self, path: Path) -> None:
        data, h = self._data, self._header
        unpack, size = h.bhead.unpack_from, h.bhead.size
        len_at, old_at = h.len_at, h.old_at
        by_old, by_code, by_struct = self.by_old, self.by_code, self.by_struct
        sdna_at = h.sdna_at
        offset, end = h.size, len(data)
        while offset + size <= end:
            fields = unpack(data, offset)
            code = fields[0]
            if code == b"ENDB":
                self.ended = True
                return
            length = fields[len_at]
            if length < 0 or fields[h.count_at] < 0:
                raise CorruptBlendFile(
                    f"block {code!r} has a negative length or count", path, offset
                )
            payload_end = offset + size + length
            if payload_end > end:
                return  # truncated inside this block: the index stops before it
            if code != b"DATA":
                by_code.setdefault(code, []).append(offset)
            else:
                found = by_struct.get(fields[sdna_at])
                if found is None:
                    by_struct[fields[sdna_at]] = [offset]
                else:
                    found.append(offset)
            by_old[fields[old_at]] = offset
            offset = payload_end

    def block_at(self, header_offset: int) -> Block:
        fields = self._header.bhead.unpack_from(self._data, header_offset)
        h = self._header
        return Block(
            code=fields[0],
            sdna_index=fields[h.sdna_at],
            old=fields[h.old_at],
            length=fields[h.len_at],
            count=fields[h.count_at],
            offset=header_offset + h.bhead.size,
        )

    def find(self, old: int) -> Block | None:
        """The block a pointer points at; None for NULL or a pointer to nothing in the file."""
        if old == 0:
            return None
        at = self.by_old.get(old)
        return None if at is None else self.block_at(at)

    def data_of_struct(self, sdna_index: int) -> Iterator[Block]:
        """DATA blocks of one SDNA struct (node storage, strips…), in file order."""
        for at in self.by_struct.get(sdna_index, ()):
            yield self.block_at(at)

    def with_code(self, code: bytes) -> Iterator[Block]:
        """Blocks of a code (b"SC\\0\\0", b"GLOB", …) in file order."""
        for at in self.by_code.get(code, ()):
            yield self.block_at(at)
