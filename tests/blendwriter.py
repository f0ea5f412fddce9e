"""Writes minimal synthetic .blend files in any layout (4/8-byte pointers, either endian, v0/v1
headers, plain/gzip/zstd), for the layouts no Blender at hand writes any more.

It is a tiny makesdna: structs are declared as (type, name) fields, and their SDNA is written last,
as Blender does.
"""

import gzip
import struct
from dataclasses import dataclass, field

import zstandard

BASIC = {"char": 1, "short": 2, "int": 4, "float": 4, "void": 0}
FMT = {"char": "b", "short": "h", "int": "i", "float": "f"}

STRUCTS: dict[str, list[tuple[str, str]]] = {
    "ListBase": [("void", "*first"), ("void", "*last")],
    "IDPropertyData": [
        ("void", "*pointer"), ("ListBase", "group"), ("int", "val"), ("int", "val2"),
    ],
    "IDProperty": [
        ("IDProperty", "*next"), ("IDProperty", "*prev"), ("char", "type"), ("char", "subtype"),
        ("short", "flag"), ("char", "name[64]"), ("int", "pad"), ("IDPropertyData", "data"),
    ],
    "ID": [
        ("void", "*next"), ("void", "*prev"), ("char", "name[66]"), ("short", "flag"),
        ("IDProperty", "*properties"),
    ],
    "ImageFormatData": [("char", "imtype"), ("char", "depth"), ("char", "planes"), ("char", "pad")],
    "RenderData": [
        ("ImageFormatData", "im_format"), ("int", "cfra"), ("int", "sfra"), ("int", "efra"),
        ("int", "frame_step"), ("int", "xsch"), ("int", "ysch"), ("short", "size"),
        ("short", "frs_sec"), ("float", "frs_sec_base"), ("int", "scemode"),
        ("char", "pic[1024]"), ("char", "engine[32]"),
    ],
    "Object": [("ID", "id")],
    "Scene": [("ID", "id"), ("Object", "*camera"), ("RenderData", "r")],
    "FileGlobal": [
        ("char", "subvstr[4]"), ("short", "subversion"), ("short", "minversion"),
        ("short", "minsubversion"), ("short", "pad"), ("Scene", "*curscene"),
    ],
}  # fmt: skip


@dataclass
class SceneSpec:
    name: str
    frame_start: int = 1
    frame_end: int = 250
    frame_step: int = 1
    frame_current: int = 1
    resolution: tuple[int, int, int] = (1920, 1080, 100)
    fps: tuple[int, float] = (24, 1.0)
    engine: str = "CYCLES"
    imtype: int = 17
    planes: int = 24
    depth: int = 2
    output: str = "//render/"
    extension: bool = True
    camera: str | None = "Camera"
    cycles_samples: int | None = None


@dataclass
class Layout:
    pointer_size: int = 8
    endian: str = "little"
    v1_header: bool = False
    version: int = 304
    subversion: int = 6
    compression: str = "none"
    scenes: list[SceneSpec] = field(default_factory=lambda: [SceneSpec("Scene")])
    current: str | None = "Scene"


class _Dna:
    def __init__(self, pointer_size: int) -> None:
        self.ptr = pointer_size
        self.types = list(BASIC) + list(STRUCTS)
        self.names: list[str] = []
        for fields in STRUCTS.values():
            for _, name in fields:
                if name not in self.names:
                    self.names.append(name)

    def field_size(self, type_name: str, name: str) -> int:
        count = 1
        for part in name.split("[")[1:]:
            count *= int(part.rstrip("]"))
        base = self.ptr if name.startswith("*") else self.size(type_name)
        return base * count

    def size(self, type_name: str) -> int:
        if type_name in BASIC:
            return BASIC[type_name]
        return sum(self.field_size(t, n) for t, n in STRUCTS[type_name])

    def offset(self, struct_name: str, path: str) -> tuple[int, str, str]:
        offset, current = 0, struct_name
        parts = path.split(".")
        for i, part in enumerate(parts):
            for type_name, name in STRUCTS[current]:
                bare = name.lstrip("*").split("[")[0]
                if bare == part:
                    if i == len(parts) - 1:
                        return offset, type_name, name
                    current = type_name
                    break
                offset += self.field_size(type_name, name)
            else:
                raise KeyError(path)
        raise KeyError(path)

    def encode(self, e: str) -> bytes:
        def strings(items: list[str]) -> bytes:
            blob = b"".join(s.encode() + b"\0" for s in items)
            return struct.pack(f"{e}i", len(items)) + blob

        def pad(b: bytes) -> bytes:
            return b + b"\0" * (-len(b) % 4)

        out = pad(b"SDNA" + b"NAME" + strings(self.names))
        out = pad(out + b"TYPE" + strings(self.types))
        out = pad(out + b"TLEN" + struct.pack(f"{e}{len(self.types)}H",
                                              *(self.size(t) for t in self.types)))  # fmt: skip
        out += b"STRC" + struct.pack(f"{e}i", len(STRUCTS))
        for name, fields in STRUCTS.items():
            out += struct.pack(f"{e}HH", self.types.index(name), len(fields))
            for type_name, field_name in fields:
                out += struct.pack(f"{e}HH", self.types.index(type_name),
                                   self.names.index(field_name))  # fmt: skip
        return out


class _Payload:
    def __init__(self, dna: _Dna, struct_name: str, e: str) -> None:
        self.dna, self.struct_name, self.e = dna, struct_name, e
        self.buf = bytearray(dna.size(struct_name))

    def set(self, path: str, value: object) -> None:
        offset, type_name, name = self.dna.offset(self.struct_name, path)
        if name.startswith("*"):
            fmt = "I" if self.dna.ptr == 4 else "Q"
            struct.pack_into(self.e + fmt, self.buf, offset, value)
        elif "[" in name:
            raw = str(value).encode()[: self.dna.field_size(type_name, name) - 1]
            self.buf[offset : offset + len(raw)] = raw
        else:
            struct.pack_into(self.e + FMT[type_name], self.buf, offset, value)


def write_blend(layout: Layout) -> bytes:
    e = "<" if layout.endian == "little" else ">"
    dna = _Dna(layout.pointer_size)
    sdna_of = {name: i for i, name in enumerate(STRUCTS)}
    blocks: list[tuple[bytes, int, int, bytes]] = []  # code, sdna, old, payload
    next_old = [0x1000]

    def old() -> int:
        next_old[0] += 0x100
        return next_old[0]

    scene_olds = {spec.name: old() for spec in layout.scenes}
    glob = _Payload(dna, "FileGlobal", e)
    glob.set("subversion", layout.subversion)
    glob.set("curscene", scene_olds.get(layout.current or "", 0))
    blocks.append((b"GLOB", sdna_of["FileGlobal"], old(), bytes(glob.buf)))
    for spec in sorted(layout.scenes, key=lambda s: s.name):
        scene = _Payload(dna, "Scene", e)
        scene.set("id.name", "SC" + spec.name)
        values: dict[str, object] = {
            "r.sfra": spec.frame_start, "r.efra": spec.frame_end, "r.frame_step": spec.frame_step,
            "r.cfra": spec.frame_current, "r.xsch": spec.resolution[0],
            "r.ysch": spec.resolution[1], "r.size": spec.resolution[2], "r.frs_sec": spec.fps[0],
            "r.frs_sec_base": spec.fps[1], "r.engine": spec.engine, "r.pic": spec.output,
            "r.scemode": 16 if spec.extension else 0, "r.im_format.imtype": spec.imtype,
            "r.im_format.planes": spec.planes - 256 if spec.planes > 127 else spec.planes,
            "r.im_format.depth": spec.depth,
        }  # fmt: skip
        for path, value in values.items():
            scene.set(path, value)
        extra: list[tuple[bytes, int, int, bytes]] = []
        if spec.camera:
            cam_old = old()
            camera = _Payload(dna, "Object", e)
            camera.set("id.name", "OB" + spec.camera)
            scene.set("camera", cam_old)
            extra.append((b"OB\0\0", sdna_of["Object"], cam_old, bytes(camera.buf)))
        if spec.cycles_samples is not None:
            root, group, value = old(), old(), old()
            scene.set("id.properties", root)
            for at, kind, name, first, val in (
                (root, 6, "", group, 0), (group, 6, "cycles", value, 0),
                (value, 1, "samples", 0, spec.cycles_samples),
            ):  # fmt: skip
                prop = _Payload(dna, "IDProperty", e)
                prop.set("type", kind)
                prop.set("name", name)
                prop.set("data.group.first", first)
                prop.set("data.val", val)
                extra.append((b"DATA", sdna_of["IDProperty"], at, bytes(prop.buf)))
        blocks.append((b"SC\0\0", sdna_of["Scene"], scene_olds[spec.name], bytes(scene.buf)))
        blocks.extend(extra)
    blocks.append((b"DNA1", 0, old(), dna.encode(e)))
    blocks.append((b"ENDB", 0, 0, b""))

    if layout.v1_header:
        out = bytearray(b"BLENDER17-01v%04d" % layout.version)
        for code, sdna, addr, payload in blocks:
            out += struct.pack("<4siQqq", code, sdna, addr, len(payload), 1) + payload
    else:
        mark = (b"_" if layout.pointer_size == 4 else b"-") + (b"v" if e == "<" else b"V")
        out = bytearray(b"BLENDER" + mark + b"%03d" % layout.version)
        ptr = "I" if layout.pointer_size == 4 else "Q"
        for code, sdna, addr, payload in blocks:
            out += struct.pack(f"{e}4si{ptr}ii", code, len(payload), addr, sdna, 1) + payload
    if layout.compression == "gzip":
        return gzip.compress(bytes(out))
    if layout.compression == "zstd":
        half = len(out) // 2  # two frames, as Blender writes several
        cctx = zstandard.ZstdCompressor()
        return cctx.compress(bytes(out[:half])) + cctx.compress(bytes(out[half:]))
    return bytes(out)
