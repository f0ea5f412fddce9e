"""The content-addressed store on a real file system: shared once, collected when unused."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from pi_render.blend import BlendFileError
from pi_render.blend.refs import Reference
from pi_render.blend.trace import _Tracer
from pi_render.snapshot.access import MAX_BLEND_BYTES, SubmitterAccess
from pi_render.snapshot.store import ContentStore

NOBODY = (65534, frozenset({65534}))


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
        nobody = SubmitterAccess((top,), NOBODY, top / "work")
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
        # nor through a symlink of their own: where it leads is checked as them
        (public / "there").symlink_to(private / "there.png")
        (public / "absent").symlink_to(private / "absent.png")
        assert nobody.refuse(str(public / "there")) == "not readable by uid 65534"
        assert nobody.refuse(str(public / "absent")) == "not readable by uid 65534"


def test_open_checks_the_file_it_opens_not_the_one_checked_before() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        top = Path(shared)
        top.chmod(0o755)
        private = top / "private"
        private.mkdir(mode=0o700)
        (private / "secret.png").write_bytes(b"secret")
        (top / "mine.png").write_bytes(b"mine")
        link = top / "img.png"
        link.symlink_to(top / "mine.png")
        nobody = SubmitterAccess((top,), NOBODY, top / "work")
        assert nobody.refuse(str(link)) is None  # checked while it leads to the user's own file
        link.unlink()
        link.symlink_to(private / "secret.png")  # swapped before the copy
        with pytest.raises(PermissionError, match="not readable by uid 65534"):
            nobody.open(str(link))


def test_a_blend_too_large_to_trace_is_refused_before_it_is_read(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.blend"
    with open(sparse, "wb") as handle:
        handle.truncate(MAX_BLEND_BYTES + 1)  # costs nothing on disk, 4 GiB in memory if read
    access = SubmitterAccess((tmp_path,), None, tmp_path / "work")
    with pytest.raises(BlendFileError, match="too large to trace"):
        access.read_blend(str(sparse))
    assert access.blend_bytes == 0


def test_cache_folders_are_walked_only_where_the_user_may_look() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        top = Path(shared)
        top.chmod(0o755)
        cache = top / "cache"
        (cache / "private").mkdir(parents=True)
        cache.chmod(0o755)
        (cache / "private").chmod(0o700)
        (cache / "disp_0001.exr").write_bytes(b"x")
        (cache / "private" / "plan-2027.txt").write_bytes(b"x")
        holder = str(top / "main.blend")
        ref = Reference("ocean_cache", "//cache", "OBOcean", "dir")
        tracer = _Tracer(SubmitterAccess((top,), NOBODY, top / "work"), 100)
        found = [d.resolved for d in tracer._expand(ref, holder)]
        assert found == [str(cache / "disp_0001.exr")]
        pseudo = Reference("ocean_cache", "/proc", "OBOcean", "dir")
        assert [d.problem for d in tracer._expand(pseudo, holder)] == ["not a regular file"]


def test_files_are_opened_as_the_submitter_so_acls_count() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        top = Path(shared)
        top.chmod(0o755)
        denied = top / "denied.png"
        denied.write_bytes(b"x")
        denied.chmod(0o644)  # the mode bits say anyone may read it…
        subprocess.run(["setfacl", "-m", "u:nobody:---", str(denied)], check=True)  # …not nobody
        nobody = SubmitterAccess((top,), NOBODY, top / "work")
        with pytest.raises(PermissionError, match="not readable by uid 65534"):
            nobody.open(str(denied))
        fd = SubmitterAccess((top,), (0, frozenset({0})), top / "work").open(str(denied))
        os.close(fd)  # root may
        again = top / "open.png"
        again.write_bytes(b"y")
        again.chmod(0o600)
        os.close(os.open(again, os.O_RDONLY))  # this thread is the daemon again afterwards
