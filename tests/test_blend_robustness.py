"""Bad bytes never crash the reader: truncation at every block boundary and thousands of
hypothesis-driven mutations of real Blender files raise BlendFileError or read cleanly, fast."""

import os
import struct
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pi_render.blend import BlendFileError, BlendInfo, read_blend_info, trace_dependencies
from pi_render.blend.blocks import BlockIndex
from pi_render.blend.compression import decompress
from pi_render.blend.header import parse_header

BLEND50 = Path(__file__).parent / "data" / "blend50"
FUZZ_CASES = int(os.environ.get("PI_RENDER_FUZZ_CASES", "3000"))


def plain_bytes(name: str) -> bytes:
    path = BLEND50 / f"{name}.blend"
    return decompress(path.read_bytes(), path)[0]


def block_offsets(data: bytes) -> list[int]:
    header = parse_header(data, Path("x"))
    index = BlockIndex(data, header, Path("x"))
    return sorted(set(index.by_old.values()) | {o for v in index.by_code.values() for o in v})


def read_or_refuse(path: Path) -> BlendInfo | BlendFileError:
    """What the reader makes of a file; its tracer must not fail in any other way either."""
    try:
        trace_dependencies(path)
    except BlendFileError:
        pass
    try:
        return read_blend_info(path)
    except BlendFileError as exc:
        return exc


@pytest.mark.parametrize("name", ["default_plain", "three_scenes_current_Shot_B"])
def test_truncation_at_every_block_boundary(tmp_path: Path, name: str) -> None:
    data = plain_bytes(name)
    whole = read_blend_info_bytes(tmp_path, data)
    assert isinstance(whole, BlendInfo)
    offsets = block_offsets(data)
    assert len(offsets) > 100
    path = tmp_path / "cut.blend"
    for cut in [*offsets, *(o + 7 for o in offsets), len(data) - 1]:
        path.write_bytes(data[:cut])
        outcome = read_or_refuse(path)
        if isinstance(outcome, BlendInfo):  # cut after DNA1: EOF counts as ENDB, as in Blender
            assert outcome.scene == whole.scene and cut >= offsets[-1]
        else:
            assert outcome.path == path


def read_blend_info_bytes(tmp_path: Path, data: bytes) -> BlendInfo | BlendFileError:
    path = tmp_path / "whole.blend"
    path.write_bytes(data)
    return read_or_refuse(path)


def test_truncated_compressed_files(tmp_path: Path) -> None:
    data = (BLEND50 / "default_zstd.blend").read_bytes()
    path = tmp_path / "cut.blend"
    for cut in range(1, len(data), max(1, len(data) // 200)):
        path.write_bytes(data[:cut])
        assert isinstance(read_or_refuse(path), BlendFileError)


FIXTURES = {name: plain_bytes(name) for name in ("default_plain", "engine_cycles")}
HOT = {name: block_offsets(data) for name, data in FIXTURES.items()}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real file with a few targeted or random edits: bytes, ints at block headers, slices."""
    name = draw(st.sampled_from(sorted(FIXTURES)))
    data = bytearray(FIXTURES[name])
    for _ in range(draw(st.integers(1, 4))):
        hot = draw(st.sampled_from(HOT[name])) + draw(st.integers(0, 40))
        spot = draw(st.one_of(st.just(min(hot, len(data) - 8)),
                              st.integers(0, len(data) - 8)))  # fmt: skip
        kind = draw(st.sampled_from(["byte", "int", "long", "cut", "insert"]))
        if kind == "byte":
            data[spot] = draw(st.integers(0, 255))
        elif kind == "int":
            value = draw(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 0x7FFF, 65535]))
            struct.pack_into("<i", data, spot, value)
        elif kind == "long":
            value = draw(st.sampled_from([0, 2**63 - 1, -(2**63), 2**40]))
            struct.pack_into("<q", data, spot, value)
        elif kind == "cut":
            del data[spot : spot + draw(st.integers(1, 64))]
        else:
            data[spot:spot] = draw(st.binary(min_size=1, max_size=32))
    out = bytes(data)
    if draw(st.booleans()):
        out = zstandard.ZstdCompressor(level=1).compress(out)
    return out


@settings(
    max_examples=FUZZ_CASES,
    deadline=2000,  # each case well under 2 s, or hypothesis fails it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
@given(mutated())
def test_mutations_only_ever_raise_blend_file_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.blend"
    path.write_bytes(data)
    outcome = read_or_refuse(path)
    assert isinstance(outcome, (BlendInfo, BlendFileError))
