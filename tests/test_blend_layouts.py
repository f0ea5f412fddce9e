"""The reader on synthetic files in every layout (4/8-byte pointers, both endians, v0/v1 headers,
plain/gzip/zstd) and on files that are not .blend files at all."""

import gzip
from pathlib import Path

import pytest
import zstandard
from blendwriter import Layout, SceneSpec, write_blend

from pi_render.blend import (
    BlendFile,
    BlendFileError,
    NotABlendFile,
    TruncatedBlendFile,
    UnsupportedBlendFile,
    open_blend,
    read_blend_info,
)

SHOTS = [
    SceneSpec("Alpha", frame_start=1, frame_end=10, camera=None, engine="BLENDER_EEVEE"),
    SceneSpec(
        "Shot_B", frame_start=5, frame_end=11, frame_step=3, frame_current=7,
        resolution=(640, 360, 50), fps=(30, 1.001), engine="CYCLES", imtype=23, planes=32,
        depth=64, output="//out/shot_####", extension=False, camera="ShotCam",
        cycles_samples=7,
    ),
    SceneSpec("Zed"),
]  # fmt: skip


def write(tmp_path: Path, layout: Layout, name: str = "f.blend") -> Path:
    path = tmp_path / name
    path.write_bytes(write_blend(layout))
    return path


@pytest.mark.parametrize("pointer_size", [4, 8])
@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_every_legacy_layout(
    tmp_path: Path, pointer_size: int, endian: str, compression: str
) -> None:
    layout = Layout(pointer_size=pointer_size, endian=endian, compression=compression,
                    scenes=SHOTS, current="Shot_B", version=279, subversion=2)  # fmt: skip
    info = read_blend_info(write(tmp_path, layout))
    assert (info.pointer_size, info.endian, info.compression) == (pointer_size, endian, compression)
    assert (info.file_version, info.file_subversion, info.blender_version) == (279, 2, "2.79")
    assert info.scenes == ["Alpha", "Shot_B", "Zed"]
    s = info.scene
    assert s.name == "Shot_B"
    assert (s.frame_start, s.frame_end, s.frame_step, s.frame_current) == (5, 11, 3, 7)
    assert (s.resolution_x, s.resolution_y, s.resolution_percentage) == (640, 360, 50)
    assert (s.fps, s.fps_base) == (30, 1.001)
    assert (s.engine, s.file_format, s.color_mode, s.color_depth) == (
        "CYCLES",
        "OPEN_EXR",
        "RGBA",
        "32",
    )
    assert s.output_path == "//out/shot_####" and not s.use_file_extension
    assert s.output_path_resolved == str(tmp_path / "out" / "shot_####")
    assert (s.camera, s.cycles_samples) == ("ShotCam", 7)


def test_v1_header_of_blender_5(tmp_path: Path) -> None:
    info = read_blend_info(write(tmp_path, Layout(v1_header=True, version=500, subversion=119)))
    assert (info.file_version, info.file_subversion, info.blender_version) == (500, 119, "5.0")
    assert info.scene.name == "Scene" and info.scene.camera == "Camera"


def test_null_curscene_falls_back_to_the_first_scene(tmp_path: Path) -> None:
    info = read_blend_info(write(tmp_path, Layout(scenes=SHOTS, current=None)))
    assert info.scene.name == "Alpha" and info.scene.camera is None


def test_get_current_scene_and_open_blend(tmp_path: Path) -> None:
    path = write(tmp_path, Layout(scenes=SHOTS, current="Zed"))
    assert BlendFile.get_current_scene(path).name == "Zed"
    with open_blend(path) as blend:
        scenes = list(blend.blocks.with_code(b"SC\0\0"))
        assert [blend.id_name(b) for b in scenes] == ["Alpha", "Shot_B", "Zed"]
        assert blend.get(scenes[1], "r.efra") == 11
        assert blend.get(scenes[1], "r.im_format.imtype") == 23
        with pytest.raises(KeyError):
            blend.get(scenes[1], "r.no_such_field")


def test_compressed_stream_of_a_non_blend(tmp_path: Path) -> None:
    for name, payload in (("g", gzip.compress(b"hello" * 100)),
                          ("z", zstandard.ZstdCompressor().compress(b"hello" * 100))):  # fmt: skip
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(NotABlendFile, match="content is not a .blend"):
            read_blend_info(path)


def test_a_compression_bomb_is_refused_before_it_is_allocated(tmp_path: Path) -> None:
    compressor = zstandard.ZstdCompressor().compressobj()
    parts = [compressor.compress(b"BLENDER-v304")]
    zeros = bytes(1 << 20)
    parts += [compressor.compress(zeros) for _ in range(100)]  # 100 MiB of nothing
    bomb = b"".join(parts) + compressor.flush()
    path = tmp_path / "bomb.blend"
    path.write_bytes(bomb)
    assert len(bomb) < 1 << 20
    with pytest.raises(NotABlendFile, match="inflates past"):
        read_blend_info(path)


@pytest.mark.parametrize(
    ("content", "error", "needle"),
    [
        (b"", NotABlendFile, "the file is empty"),
        (b"PK\x03\x04 a zip file", NotABlendFile, "not a .blend file"),
        (b"BLENDER", TruncatedBlendFile, "inside its header"),
        (b"BLENDER-x304", NotABlendFile, "endianness"),
        (b"BLENDER-vABC", NotABlendFile, "digits"),
        (b"BLENDER18-01v0500", UnsupportedBlendFile, "header size 18"),
        (b"BLENDER17-02v0500", UnsupportedBlendFile, "format version 2"),
        (b"BLENDER-v304", TruncatedBlendFile, "no DNA1 block"),
        (b"\x1f\x8b\x08\x00garbage", TruncatedBlendFile, "gzip"),
    ],
)
def test_bad_files_raise_one_clear_error(
    tmp_path: Path, content: bytes, error: type[BlendFileError], needle: str
) -> None:
    path = tmp_path / "bad.blend"
    path.write_bytes(content)
    with pytest.raises(error, match=needle) as info:
        read_blend_info(path)
    assert info.value.path == path


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BlendFileError, match="no such file"):
        read_blend_info(tmp_path / "nope.blend")
    with pytest.raises(BlendFileError, match="is a directory"):
        read_blend_info(tmp_path)
