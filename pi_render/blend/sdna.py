"""The file's own struct catalogue (DNA1): parsed up to each struct's start, field tables on demand.

Offsets are never hard-coded: `Scene.r` is at 416 in 3.4 and 608 in 5.0. makesdna pads explicitly,
so a field's offset is the sum of the sizes before it.
"""

import re
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from math import prod
from pathlib import Path
from typing import NamedTuple

from pi_render.blend.errors import CorruptBlendFile, TruncatedBlendFile

_DIMS = re.compile(rb"\[(\d+)\]")

# C type name → struct format for scalar reads (unknown types are read as raw bytes)
SCALAR_FORMATS = {
    b"char": "B", b"uchar": "B", b"uint8_t": "B", b"int8_t": "b", b"bool": "B",
    b"short": "h", b"ushort": "H", b"int16_t": "h", b"uint16_t": "H",
    b"int": "i", b"int32_t": "i", b"uint": "I", b"uint32_t": "I",
    b"float": "f", b"double": "d",
    b"int64_t": "q", b"uint64_t": "Q", b"long": "i", b"ulong": "I",
}  # fmt: skip


class Field(NamedTuple):
    """A struct member: `name` is bare (no `*`, `[]`, `()`); `dims` are its array sizes.
    A tuple, not a dataclass: tables of hundreds are built per struct, and tuples are cheap."""

    name: str
    type_name: str
    offset: int
    size: int
    is_pointer: bool
    dims: tuple[int, ...]


class SDNA:
    """Names, types and type sizes of a DNA1 payload; struct field tables built on first use."""

    def __init__(self, data: bytes, start: int, length: int, endian: str, pointer_size: int,
                 path: Path) -> None:  # fmt: skip
        self._data = data
        self._start = start
        self._end = start + length
        self._e = "<" if endian == "little" else ">"
        self._path = path
        self.pointer_size = pointer_size
        self._fields: dict[str, dict[str, Field]] = {}
        self._partial: dict[str, tuple[int, int]] = {}  # walks not finished: next member, offset
        self.paths: dict[tuple[str, str], Field | None] = {}  # resolved dotted paths (file.py)
        self._name_info: dict[int, tuple[str, bool, tuple[int, ...], int]] = {}
        self._type_names: dict[int, str] = {}
        at = self._expect(start, b"SDNA")
        at = self._expect(at, b"NAME")
        self.names, at = self._strings(at)
        at = self._expect(self._pad(at), b"TYPE")
        self.types, at = self._strings(at)
        at = self._expect(self._pad(at), b"TLEN")
        count = len(self.types)
        self._need(at, 2 * count, "type sizes")
        self.sizes = struct.unpack_from(f"{self._e}{count}H", data, at)
        at = self._expect(self._pad(at + 2 * count), b"STRC")
        (n_structs,) = self._ints(at, 1)
        at += 4
        if n_structs > (self._end - at) // 4:
            raise CorruptBlendFile(f"SDNA claims {n_structs} structs", path, at)
        # the struct table as u16s in one go; walking it is then plain list indexing
        words = (self._end - at) // 2
        table: Sequence[int]
        if (self._e == "<") == (sys.byteorder == "little"):  # the machine's order: no copy
            table = memoryview(data)[at : at + 2 * words].cast("H")
        else:
            table = struct.unpack_from(f"{self._e}{words}H", data, at)
        struct_at: dict[bytes, int] = {}  # struct name → its index into `table`
        numbers: dict[bytes, int] = {}  # struct name → its number (a BHead's SDNAnr)
        struct_types: list[int] = []
        types, i = self.types, 0
        try:  # the hot loop of a cold open: plain indexing, bounds found by IndexError
            for number in range(n_structs):
                type_index, n_fields = table[i], table[i + 1]
                name = types[type_index]
                struct_at[name], numbers[name] = i, number
                struct_types.append(type_index)
                i += 2 + 2 * n_fields
        except IndexError:
            if i + 1 < words:
                raise CorruptBlendFile(f"struct type index {table[i]} out of range", path,
                                       at + 2 * i) from None  # fmt: skip
            raise TruncatedBlendFile("SDNA ends inside its struct table", path) from None
        if i > words:
            raise TruncatedBlendFile("SDNA ends inside a struct's fields", path)
        self._struct_at, self._struct_number = struct_at, numbers
        self.struct_types, self._table = struct_types, table

    def _expect(self, at: int, tag: bytes) -> int:
        self._need(at, 4, tag.decode())
        if self._data[at : at + 4] != tag:
            raise CorruptBlendFile(f"SDNA has no {tag.decode()} section", self._path, at)
        return at + 4

    def _need(self, at: int, size: int, what: str) -> None:
        if size < 0 or at + size > self._end:
            raise TruncatedBlendFile(f"SDNA ends inside {what} (at byte {at})", self._path)

    def _pad(self, at: int) -> int:
        """Align to 4 relative to the DNA1 payload (not the file: the v1 header is 17 bytes)."""
        return self._start + ((at - self._start + 3) & ~3)

    def _ints(self, at: int, n: int) -> tuple[int, ...]:
        self._need(at, 4 * n, "a count")
        return struct.unpack_from(f"{self._e}{n}i", self._data, at)

    def _strings(self, at: int) -> tuple[list[bytes], int]:
        (count,) = self._ints(at, 1)
        at += 4
        if count < 0 or count > self._end - at:
            raise CorruptBlendFile(f"SDNA claims {count} strings", self._path, at)
        parts = self._data[at : self._end].split(b"\0", count)
        if len(parts) <= count:
            raise TruncatedBlendFile("SDNA ends inside its string table", self._path)
        rest = parts.pop()  # what follows the last string: where it ends, without a sum
        return parts, self._end - len(rest)

    def struct_number(self, name: str) -> int | None:
        """The number blocks of this struct carry in their BHead (None: no such struct)."""
        return self._struct_number.get(name.encode())

    def has_struct(self, name: str) -> bool:
        return name.encode() in self._struct_at

    def struct_size(self, name: str) -> int:
        at = self._struct_at.get(name.encode())
        if at is None:
            raise KeyError(name)
        return int(self.sizes[self._table[at]])

    def fields(self, struct_name: str) -> dict[str, Field]:
        """The struct's fields by bare name. Raises KeyError for an unknown struct."""
        return self._walk(struct_name, None)

    def field(self, struct_name: str, name: str) -> Field:
        """One field: the struct's members are walked only as far as it (offsets are sums of
        the sizes before), and the walk goes on from there next time. Raises KeyError."""
        table = self._walk(struct_name, name)
        return table[name]

    def _walk(self, struct_name: str, until: str | None) -> dict[str, Field]:
        table = self._fields.get(struct_name)
        if table is not None:
            complete = struct_name not in self._partial
            if complete or (until is not None and until in table):
                return table
        at = self._struct_at.get(struct_name.encode())
        if at is None:
            raise KeyError(struct_name)
        member, offset = self._partial.get(struct_name, (0, 0))
        if table is None:
            table = self._fields[struct_name] = {}
        n_fields = self._table[at + 1]
        raw = self._table
        n_types, n_names, names = len(self.types), len(self.names), self._name_info
        type_names, sizes, pointer_size = self._type_names, self.sizes, self.pointer_size
        while member < n_fields:
            type_index, name_index = raw[at + 2 + 2 * member], raw[at + 3 + 2 * member]
            member += 1
            if type_index >= n_types or name_index >= n_names:
                raise ValueError(f"SDNA struct {struct_name} has a field out of range")
            info = names.get(name_index)
            if info is None:
                info = names[name_index] = self._parse_name(name_index)
            bare, is_pointer, dims, count = info
            size = (pointer_size if is_pointer else sizes[type_index]) * count
            type_name = type_names.get(type_index) or self.type_name(type_index)
            table[bare] = Field(bare, type_name, offset, size, is_pointer, dims)
            offset += size
            if bare == until:
                break
        if member < n_fields:
            self._partial[struct_name] = (member, offset)
        else:
            self._partial.pop(struct_name, None)
        return table

    def _parse_name(self, index: int) -> tuple[str, bool, tuple[int, ...], int]:
        """`*next` → ("next", pointer); `mat[4][4]` → ("mat", dims (4, 4), 16 elements)."""
        full = self.names[index]
        if b"*" not in full and b"[" not in full and b"(" not in full:  # the common, plain case
            return full.decode("ascii", "replace"), False, (), 1
        is_pointer = full[:1] in (b"*", b"(")
        dims = tuple(int(d) for d in _DIMS.findall(full)) if b"[" in full else ()
        bare = full.split(b"[", 1)[0].translate(None, b"*()").decode("ascii", "replace")
        return bare, is_pointer, dims, prod(dims)

    def type_name(self, index: int) -> str:
        name = self._type_names.get(index)
        if name is None:
            name = self._type_names[index] = self.types[index].decode("ascii", "replace")
        return name

    def struct_name_of(self, sdna_index: int) -> str | None:
        if 0 <= sdna_index < len(self.struct_types):
            return self.type_name(self.struct_types[sdna_index])
        return None


_CACHE: "OrderedDict[tuple[bytes, str, int], SDNA]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 8  # catalogues of different Blender builds kept parsed


def cached_sdna(payload: bytes, endian: str, pointer_size: int, path: Path) -> SDNA:
    """Files saved by the same Blender build carry byte-identical catalogues: parse each once.

    The cache holds only the DNA1 payload (tens of KB), never the file it came from.
    """
    key = (payload, endian, pointer_size)
    with _CACHE_LOCK:
        sdna = _CACHE.get(key)
        if sdna is not None:
            _CACHE.move_to_end(key)
            return sdna
    sdna = SDNA(payload, 0, len(payload), endian, pointer_size, path)
    with _CACHE_LOCK:
        _CACHE[key] = sdna
        if len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return sdna


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
