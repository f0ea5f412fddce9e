"""The content-addressed store on a real file system: shared once, collected when unused."""

import os
from pathlib import Path

import pytest

from pi_render.snapshot.store import ContentStore


def test_identical_files_are_stored_once_and_collected_when_unlinked(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    first, second = tmp_path / "a" / "lib.blend", tmp_path / "b" / "lib.blend"
    digest = store.add_bytes(b"shared library", first)
    with open(first, "rb") as source:
        again, size = store.add_from(source.fileno(), 1 << 20, second)
    assert again == digest and size == len(b"shared library")
    stored = store.object_path(digest)
    assert os.path.samefile(first, stored) and os.path.samefile(second, stored)
    assert stored.stat().st_nlink == 3 and stored.stat().st_mode & 0o777 == 0o444
    later = stored.stat().st_mtime + 7200
    assert store.collect_garbage(now=later) == 0  # still linked by two snapshots
    first.unlink()
    second.unlink()
    assert store.collect_garbage(now=stored.stat().st_mtime + 10) == 0  # too young to tell
    assert store.collect_garbage(now=later) == 1 and not stored.exists()


def test_a_file_larger_than_the_limit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    with open(big, "rb") as source, pytest.raises(OSError, match="larger than 4096"):
        store.add_from(source.fileno(), 4096, tmp_path / "snap" / "big.bin")
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    assert not (tmp_path / "snap" / "big.bin").exists()
