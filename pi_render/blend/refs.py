"""Every external path one .blend holds, read from its blocks and SDNA (no disk access here).

Each `Reference` says what kind of file it is, the path as stored, which block refers to it, and
where the path's bytes lie in the file, so a snapshot can rewrite it. Field names are the on-disk
ones (`Image.name` is `filepath` in Blender's Python API); both spellings are tried.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pi_render.blend.blocks import Block
from pi_render.blend.file import BlendFile

MAX_LIST = 100_000  # a cycle in a corrupt linked list must not hang us

IMA_SRC_FILE, IMA_SRC_SEQUENCE, IMA_SRC_MOVIE, IMA_SRC_TILED = 1, 2, 3, 6
MCLIP_SRC_SEQUENCE = 1
_IMAGE_SOURCES = (IMA_SRC_FILE, IMA_SRC_SEQUENCE, IMA_SRC_MOVIE, IMA_SRC_TILED)
PTCACHE_BAKED, PTCACHE_DISK_CACHE, PTCACHE_EXTERNAL = 1 << 0, 1 << 6, 1 << 9
SEQ_TYPE_IMAGE, SEQ_TYPE_MOVIE = 0, 3
MOD_FLUID_TYPE_DOMAIN = 1
NODES_BAKE_CUSTOM_PATH, NODES_BAKE_PACKED = 1 << 1, 1
TXT_ISMEM = 1 << 2


@dataclass(frozen=True)
class Reference:
    """One path a file holds. `expand` says how it becomes files on disk:
    "file", "sequence" (numbered frames), "udim" (`tiles`), "dir" (a cache folder),
    "point_cache" (`names[0]` is the file prefix), "strip" (`names` are files in the folder)."""

    kind: str
    stored: str
    via: str
    expand: str = "file"
    packed: bool = False
    offset: int = -1  # where the path's bytes start in the decompressed file; -1: not rewritable
    size: int = 0  # the field's size in bytes (NUL included)
    tiles: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    index: int = -1
    required: bool = True  # a missing one breaks the render (a text or unbaked cache does not)


class _Reader:
    """Field access shaped for tracing: absent fields read as None, strings with their place."""

    def __init__(self, blend: BlendFile) -> None:
        self.blend = blend

    def has(self, struct_name: str, path: str) -> bool:
        return self.blend.sdna.has_struct(struct_name) and self.blend.has_field(struct_name, path)

    def value(self, block: Block, struct_name: str, path: str) -> object:
        if not self.has(struct_name, path):
            return None
        return self.blend.get(block, path, struct_name)

    def int_of(self, block: Block, struct_name: str, path: str) -> int:
        value = self.value(block, struct_name, path)
        return value if isinstance(value, int) else 0

    def text(self, block: Block, struct_name: str, *paths: str) -> tuple[str, int, int] | None:
        """The first of `paths` that is a char array: (value, absolute offset, field size)."""
        for path in paths:
            if not self.has(struct_name, path):
                continue
            field = self.blend.resolve(struct_name, path)
            if field.is_pointer or field.type_name != "char" or not field.dims:
                continue
            value = self.blend.get(block, path, struct_name)
            return str(value), block.offset + field.offset, field.size
        return None

    def deref(self, block: Block, struct_name: str, path: str) -> Block | None:
        pointer = self.value(block, struct_name, path)
        return self.blend.deref(pointer) if isinstance(pointer, int) else None

    def chain(self, first: Block | None, struct_name: str) -> Iterator[Block]:
        """A ListBase's items from its first block, following `next` (cycles cut)."""
        seen: set[int] = set()
        block = first
        while block is not None and block.old not in seen and len(seen) < MAX_LIST:
            seen.add(block.old)
            yield block
            block = self.deref(block, struct_name, "next")

    def list_of(self, block: Block, struct_name: str, path: str, item: str) -> Iterator[Block]:
        return self.chain(self.deref(block, struct_name, f"{path}.first"), item)

    def items(self, array: Block, struct_name: str, count: int) -> Iterator[Block]:
        """The elements of an array of structs stored in one block (bounded by the block)."""
        size = self.blend.sdna.struct_size(struct_name)
        count = min(count, array.length // size if size else 0, MAX_LIST)
        for i in range(max(0, count)):
            yield Block(array.code, array.sdna_index, 0, size, 1, array.offset + i * size)

    def pointed_string(self, block: Block, struct_name: str, path: str) -> tuple[str, int, int]:
        """A `char *` field's string, where its block lies and how long the block is."""
        target = self.deref(block, struct_name, path) if self.has(struct_name, path) else None
        value = self.c_string(target)
        if target is None or not value:
            return "", -1, 0
        return value, target.offset, target.length

    def data_of(self, struct_name: str) -> Iterator[Block]:
        number = self.blend.sdna.struct_number(struct_name)
        return self.blend.blocks.data_of_struct(number) if number is not None else iter(())

    def id_blocks(self, code: bytes) -> Iterator[Block]:
        """Local IDs of a code: linked ones are only placeholders; their library holds the data."""
        for block in self.blend.blocks.with_code(code):
            if not self.int_of(block, "ID", "lib"):
                yield block

    def id_name(self, block: Block) -> str:
        value = self.value(block, "ID", "name")
        return str(value) if value is not None else block.code.decode("latin-1")

    def c_string(self, block: Block | None) -> str | None:
        if block is None:
            return None
        raw = self.blend.data[block.offset : block.offset + block.length]
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _packed(r: _Reader, block: Block, struct_name: str) -> bool:
    if r.int_of(block, struct_name, "packedfile"):
        return True
    return bool(r.has(struct_name, "packedfiles.first")
                and r.int_of(block, struct_name, "packedfiles.first"))  # fmt: skip


def _id_path(r: _Reader, code: bytes, struct_name: str, kind: str) -> Iterator[Reference]:
    """The simple ID types: a path in `name`/`filepath`, maybe packed."""
    for block in r.id_blocks(code):
        found = r.text(block, struct_name, "name", "filepath")
        if found is None or not found[0] or found[0] == "<builtin>":
            continue
        value, offset, size = found
        packed = _packed(r, block, struct_name)
        yield Reference(kind, value, r.id_name(block), packed=packed, offset=offset, size=size)


def _libraries(r: _Reader) -> Iterator[Reference]:
    yield from _id_path(r, b"LI\0\0", "Library", "library")


def _images(r: _Reader) -> Iterator[Reference]:
    for block in r.id_blocks(b"IM\0\0"):
        found = r.text(block, "Image", "name", "filepath")
        source = r.int_of(block, "Image", "source") if r.has("Image", "source") else IMA_SRC_FILE
        if found is None or not found[0] or source not in _IMAGE_SOURCES:
            continue  # generated, viewer and render-result images have no file
        value, offset, size = found
        via, packed = r.id_name(block), _packed(r, block, "Image")
        if source == IMA_SRC_TILED:
            tiles = tuple(r.int_of(t, "ImageTile", "tile_number")
                          for t in r.list_of(block, "Image", "tiles", "ImageTile"))  # fmt: skip
            yield Reference("udim", value, via, "udim", packed, offset, size, tiles=tiles)
        elif source == IMA_SRC_SEQUENCE:
            yield Reference("image_sequence", value, via, "sequence", packed, offset, size)
        else:
            kind = "movie" if source == IMA_SRC_MOVIE else "image"
            yield Reference(kind, value, via, "file", packed, offset, size)


def _movie_clips(r: _Reader) -> Iterator[Reference]:
    for block in r.id_blocks(b"MC\0\0"):
        found = r.text(block, "MovieClip", "name", "filepath")
        if found is None or not found[0]:
            continue
        sequence = r.int_of(block, "MovieClip", "source") == MCLIP_SRC_SEQUENCE
        yield Reference("movie_clip", found[0], r.id_name(block),
                        "sequence" if sequence else "file", False, found[1], found[2])  # fmt: skip


def _sequence_or_file(r: _Reader, code: bytes, struct_name: str, kind: str) -> Iterator[Reference]:
    for block in r.id_blocks(code):
        found = r.text(block, struct_name, "filepath", "name")
        if found is None or not found[0]:
            continue
        sequence = bool(r.int_of(block, struct_name, "is_sequence"))
        yield Reference(kind, found[0], r.id_name(block), "sequence" if sequence else "file",
                        _packed(r, block, struct_name), found[1], found[2])  # fmt: skip
        if struct_name == "CacheFile" and r.has("CacheFile", "layers"):
            for layer in r.list_of(block, "CacheFile", "layers", "CacheFileLayer"):
                layer_path = r.text(layer, "CacheFileLayer", "filepath")
                if layer_path and layer_path[0]:
                    yield Reference(kind, layer_path[0], r.id_name(block), "file", False,
                                    layer_path[1], layer_path[2])  # fmt: skip


def _texts(r: _Reader) -> Iterator[Reference]:
    """External text files: listed by Blender, never needed to render (the text is in the file)."""
    for block in r.id_blocks(b"TX\0\0"):
        if r.int_of(block, "Text", "flags") & TXT_ISMEM:
            continue
        path, offset, size = r.pointed_string(block, "Text", "name")
        if path:
            yield Reference("text", path, r.id_name(block), "file", False, offset, size,
                            required=False)  # fmt: skip


def _meshes(r: _Reader) -> Iterator[Reference]:
    """Multires displacement saved to an external file (`CustomData.external`)."""
    for block in r.id_blocks(b"ME\0\0"):
        for layer in ("ldata", "fdata"):
            external = r.deref(block, "Mesh", f"{layer}.external")
            found = r.text(external, "CustomDataExternal", "filename") if external else None
            if found and found[0]:
                yield Reference("multires", found[0], r.id_name(block), "file", False, found[1],
                                found[2])  # fmt: skip


def _point_caches(r: _Reader, first: Block | None, owner: str, via: str) -> Iterator[Reference]:
    for cache in r.chain(first, "PointCache"):
        flag = r.int_of(cache, "PointCache", "flag")
        if not flag & PTCACHE_DISK_CACHE:
            continue
        name = str(r.value(cache, "PointCache", "name") or "")
        index = r.int_of(cache, "PointCache", "index")
        baked = bool(flag & PTCACHE_BAKED)
        if flag & PTCACHE_EXTERNAL:
            found = r.text(cache, "PointCache", "path")
            if found and found[0]:
                yield Reference("point_cache", found[0], via, "point_cache", False, found[1],
                                found[2], names=(name,), index=index, required=baked)  # fmt: skip
            continue
        prefix = name or "".join(f"{b:02X}" for b in owner.encode("utf-8"))
        # the folder is derived from the holder's name at render time: `//blendcache_<stem>/`
        yield Reference("point_cache", "", via, "point_cache", False, names=(prefix,),
                        index=index, required=baked)  # fmt: skip


def _node_bakes(r: _Reader, mod: Block, via: str) -> Iterator[Reference]:
    """Geometry-nodes bakes on disk (3.6+): the modifier's folder, or a bake's own."""
    kind = "NodesModifierData"
    bakes = r.deref(mod, kind, "bakes")
    if bakes is None:
        return
    default = r.pointed_string(mod, kind, "simulation_bake_directory")
    inherited = r.int_of(mod, kind, "bake_target")
    for bake in r.items(bakes, "NodesModifierBake", r.int_of(mod, kind, "bakes_num")):
        target = r.int_of(bake, "NodesModifierBake", "bake_target") or inherited
        if target == NODES_BAKE_PACKED:
            continue
        custom = r.int_of(bake, "NodesModifierBake", "flag") & NODES_BAKE_CUSTOM_PATH
        path, offset, size = (r.pointed_string(bake, "NodesModifierBake", "directory")
                              if custom else default)  # fmt: skip
        if path:
            yield Reference("geometry_nodes_bake", path, via, "dir", False, offset, size,
                            required=False)  # fmt: skip


def _object_caches(r: _Reader, block: Block) -> Iterator[Reference]:
    owner = r.id_name(block)[2:]
    via = r.id_name(block)
    for psys in r.list_of(block, "Object", "particlesystem", "ParticleSystem"):
        first = r.deref(psys, "ParticleSystem", "ptcaches.first")
        yield from _point_caches(r, first, owner, f"{via} particles")
    soft = r.deref(block, "Object", "soft")
    if soft is not None:
        shared = r.deref(soft, "SoftBody", "shared") if r.has("SoftBody", "shared") else None
        if shared is not None:
            first = r.deref(shared, "SoftBody_Shared", "ptcaches.first")
        else:
            first = r.deref(soft, "SoftBody", "ptcaches.first")
        yield from _point_caches(r, first, owner, f"{via} soft body")


# modifier → (kind, pointer to its settings or "", settings struct, path field, expand, required)
_MODIFIER_PATHS = {
    "MeshCacheModifierData": ("mesh_cache", "", "MeshCacheModifierData", "filepath", "file", True),
    "OceanModifierData": ("ocean_cache", "", "OceanModifierData", "cachepath", "dir", True),
    "FluidModifierData": ("fluid_cache", "domain", "FluidDomainSettings", "cache_directory",
                          "dir", False),
    "FluidsimModifierData": ("fluid_cache", "fss", "FluidsimSettings", "surfdataPath", "dir",
                             False),  # Blender ≤ 2.79
}  # fmt: skip


def _in_use(r: _Reader, mod: Block, kind: str) -> bool:
    """An ocean's cache is read only once baked; a fluid's folder only for its domain."""
    if kind == "OceanModifierData":
        return bool(r.int_of(mod, kind, "cached"))
    if kind == "FluidModifierData":
        return r.int_of(mod, kind, "type") == MOD_FLUID_TYPE_DOMAIN
    return True


def _modifier(r: _Reader, mod: Block, owner: str, via: str) -> Iterator[Reference]:
    kind = r.blend.sdna.struct_name_of(mod.sdna_index) or ""
    here = f"{via} modifier {r.value(mod, 'ModifierData', 'name') or kind}"
    spec = _MODIFIER_PATHS.get(kind)
    if spec is not None:
        ref_kind, pointer, struct_name, field, expand, required = spec
        holder = r.deref(mod, kind, pointer) if pointer else mod
        found = r.text(holder, struct_name, field) if holder else None
        if found and found[0] and _in_use(r, mod, kind):
            yield Reference(ref_kind, found[0], here, expand, False, found[1], found[2],
                            required=required)  # fmt: skip
    elif kind == "SmokeModifierData":  # Blender ≤ 2.81
        domain = r.deref(mod, kind, "domain")
        if domain is not None and r.has("SmokeDomainSettings", "point_cache"):
            first = r.deref(domain, "SmokeDomainSettings", "point_cache")
            yield from _point_caches(r, first, owner, here)
    elif kind == "NodesModifierData" and r.has(kind, "bakes"):
        yield from _node_bakes(r, mod, here)
    elif kind == "ClothModifierData":
        yield from _point_caches(r, r.deref(mod, kind, "ptcaches.first"), owner, here)
    elif kind == "DynamicPaintModifierData":
        canvas = r.deref(mod, kind, "canvas")
        if canvas is not None:
            for surface in r.list_of(canvas, "DynamicPaintCanvasSettings", "surfaces",
                                     "DynamicPaintSurface"):  # fmt: skip
                first = r.deref(surface, "DynamicPaintSurface", "ptcaches.first")
                yield from _point_caches(r, first, owner, here)


def _objects(r: _Reader) -> Iterator[Reference]:
    for block in r.id_blocks(b"OB\0\0"):
        owner, via = r.id_name(block)[2:], r.id_name(block)
        for mod in r.list_of(block, "Object", "modifiers", "ModifierData"):
            yield from _modifier(r, mod, owner, via)
        yield from _object_caches(r, block)


def _strips(r: _Reader) -> Iterator[Reference]:
    """Image and movie strips of the sequencer: a folder and the file names in it."""
    for block in r.data_of("Sequence"):
        seq_type = r.int_of(block, "Sequence", "type")
        if seq_type not in (SEQ_TYPE_IMAGE, SEQ_TYPE_MOVIE):
            continue
        strip = r.deref(block, "Sequence", "strip")
        found = r.text(strip, "Strip", "dir") if strip else None
        if strip is None or found is None:
            continue
        elements = r.deref(strip, "Strip", "stripdata")
        names: list[str] = []
        if elements is not None and r.blend.sdna.has_struct("StripElem"):
            count = 1 if seq_type == SEQ_TYPE_MOVIE else elements.count
            for item in r.items(elements, "StripElem", count):
                name = str(r.value(item, "StripElem", "name") or "")
                if name:
                    names.append(name)
        via = f"SQ{str(r.value(block, 'Sequence', 'name') or '')[2:]}"
        kind = "sequencer_movie" if seq_type == SEQ_TYPE_MOVIE else "sequencer_images"
        yield Reference(kind, found[0], via, "strip", False, found[1], found[2],
                        names=tuple(names))  # fmt: skip


def _node_files(r: _Reader) -> Iterator[Reference]:
    """IES lights and OSL scripts kept in external files (node storage, mode EXTERNAL)."""
    for struct_name, kind in (("NodeShaderTexIES", "ies"), ("NodeShaderScript", "osl_script")):
        for block in r.data_of(struct_name):
            if r.int_of(block, struct_name, "mode") == 1:
                found = r.text(block, struct_name, "filepath")
                if found and found[0]:
                    yield Reference(kind, found[0], struct_name, "file", False, found[1],
                                    found[2])  # fmt: skip


_SOURCES: list[Callable[[_Reader], Iterator[Reference]]] = [
    _libraries,
    _images,
    lambda r: _id_path(r, b"SO\0\0", "bSound", "sound"),
    lambda r: _id_path(r, b"VF\0\0", "VFont", "font"),
    _movie_clips,
    lambda r: _sequence_or_file(r, b"CF\0\0", "CacheFile", "cache_file"),
    lambda r: _sequence_or_file(r, b"VO\0\0", "Volume", "volume"),
    _texts,
    _meshes,
    _objects,
    _strips,
    _node_files,
]


def references(blend: BlendFile) -> list[Reference]:
    """Every external path `blend` holds, in a stable order (libraries first)."""
    blend.sdna  # noqa: B018  (a file without its catalogue is truncated: say so first)
    reader = _Reader(blend)
    found: list[Reference] = []
    for source in _SOURCES:
        found.extend(source(reader))
    return found
