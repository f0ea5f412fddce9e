"""BlendFile: decompressed bytes, header, block index and lazy SDNA; reads fields by path."""

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from pi_render.blend.blocks import Block, BlockIndex
from pi_render.blend.compression import decompress
from pi_render.blend.errors import BlendFileError, CorruptBlendFile, TruncatedBlendFile
from pi_render.blend.header import BlendHeader, parse_header
from pi_render.blend.sdna import SCALAR_FORMATS, SDNA, Field, cached_sdna


class BlendFile:
    """A parsed .blend file held in memory (the decompressed bytes are the only copy)."""

    def __init__(self, path: Path, raw: bytes) -> None:
        self.path = path
        self.data, self.compression = decompress(raw, path)
        self.header: BlendHeader = parse_header(self.data, path)
        self.blocks = BlockIndex(self.data, self.header, path)
        self._e = self.header.prefix

    @classmethod
    def get_current_scene(cls, path: str | Path) -> Any:
        """The seed's API: the current scene's render settings (a `SceneInfo`)."""
        from pi_render.blend.scene import read_current_scene

        with open_blend(path) as blend:
            return read_current_scene(blend)

    @cached_property
    def sdna(self) -> SDNA:
        dna = next(self.blocks.with_code(b"DNA1"), None)
        if dna is None:
            raise TruncatedBlendFile(
                "no DNA1 block: the file is truncated or incomplete", self.path
            )
        payload = self.data[dna.offset : dna.offset + dna.length]
        return cached_sdna(payload, self.header.endian, self.header.pointer_size, self.path)

    def struct_of(self, block: Block) -> str:
        name = self.sdna.struct_name_of(block.sdna_index)
        if name is None:
            raise CorruptBlendFile(f"block {block.code!r} has an unknown struct index", self.path,
                                   block.offset)  # fmt: skip
        return name

    def resolve(self, struct_name: str, path: str) -> Field:
        """The field at a dotted path ("r.im_format.imtype") with its offset from the struct start.

        Raises KeyError when the path does not exist in this file's SDNA.
        """
        known = self.sdna.paths
        key = (struct_name, path)
        if key in known:
            found = known[key]
            if found is None:
                raise KeyError(path)
            return found
        try:
            found = self._resolve(struct_name, path)
        except KeyError:
            known[key] = None
            raise
        known[key] = found
        return found

    def _resolve(self, struct_name: str, path: str) -> Field:
        offset = 0
        current = struct_name
        parts = path.split(".")
        for depth, part in enumerate(parts):
            try:
                field = self.sdna.field(current, part)
            except ValueError as exc:
                raise CorruptBlendFile(str(exc), self.path, 0) from None
            offset += field.offset
            if depth < len(parts) - 1:
                if field.is_pointer or not self.sdna.has_struct(field.type_name):
                    raise KeyError(path)
                current = field.type_name
        return Field(field.name, field.type_name, offset, field.size, field.is_pointer, field.dims)

    def has_field(self, struct_name: str, path: str) -> bool:
        try:
            self.resolve(struct_name, path)
        except KeyError:
            return False
        return True

    def get(self, block: Block, path: str, struct_name: str | None = None) -> Any:
        """A field's value: int/float, str for char arrays, int for pointers, tuple for arrays.

        Raises:
            KeyError: the field does not exist in this file's SDNA.
            CorruptBlendFile: the field lies beyond the block.
        """
        field = self.resolve(struct_name or self.struct_of(block), path)
        if field.offset + field.size > block.length:
            raise CorruptBlendFile(f"field {path} lies beyond its {block.length}-byte block",
                                   self.path, block.offset)  # fmt: skip
        at = block.offset + field.offset
        if field.is_pointer:
            fmt = "I" if self.header.pointer_size == 4 else "Q"
            return struct.unpack_from(self._e + fmt, self.data, at)[0]
        if field.type_name == "char" and field.dims:
            raw = self.data[at : at + field.size]
            return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        scalar = SCALAR_FORMATS.get(field.type_name.encode())
        if scalar is None:
            return self.data[at : at + field.size]
        count = field.size // struct.calcsize(scalar)
        values = struct.unpack_from(f"{self._e}{count}{scalar}", self.data, at)
        return values[0] if not field.dims else values

    def deref(self, pointer: int) -> Block | None:
        return self.blocks.find(pointer)

    def id_name(self, block: Block) -> str:
        """An ID's name without its 2-letter code ("SCScene" → "Scene")."""
        name: str = self.get(block, "id.name")
        return name[2:]


@contextmanager
def open_blend(path: str | Path, shown_as: str | Path | None = None) -> Iterator[BlendFile]:
    """Open a .blend for lower-level reads of blocks and fields; `shown_as` names a copy as its
    user knows it (in errors and for `//` paths).

    Raises:
        BlendFileError (or a subclass) for anything wrong with the file, and nothing else.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BlendFileError("no such file", path) from None
    except IsADirectoryError:
        raise BlendFileError("is a directory, not a .blend file", path) from None
    except OSError as exc:
        raise BlendFileError(f"cannot read: {exc.strerror or exc}", path) from None
    yield BlendFile(Path(shown_as) if shown_as is not None else path, raw)
