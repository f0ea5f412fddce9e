"""The content-addressed store on a real file system: shared once, collected when unused."""

import os
import tempfile
from pathlib import Path

import pytest

from pi_render.snapshot.access import SubmitterAccess
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


def test_access_tells_nothing_about_folders_the_user_cannot_search() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:  # pytest's folders are root's alone
        top = Path(shared)
        top.chmod(0o755)
        private = top / "private"
        private.mkdir(mode=0o700)
        (private / "there.png").write_bytes(b"x")
        nobody = SubmitterAccess((top,), (65534, frozenset({65534})))
        # a file that is there and one that is not get the same answer
        assert nobody.refuse(str(private / "there.png")) == "not readable by uid 65534"
        assert nobody.refuse(str(private / "absent.png")) == "not readable by uid 65534"
        public = top / "public"
        public.mkdir()
        public.chmod(0o755)
        assert nobody.refuse(str(public / "absent.png")) is None  # then reported as missing
        (public / "mine.png").write_bytes(b"x")
        assert nobody.refuse(str(public / "mine.png")) is None
        assert (nobody.refuse("/etc/hostname") or "").startswith("outside the allowed roots")
