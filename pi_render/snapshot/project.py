"""A task's snapshot: its .blend and every file it needs, laid out as on the source disk.

Each file is placed at `<spool>/root/<its absolute path>`, so the project's own relative paths
(`//lib/lib.blend`, `//../textures/wood.png`) find their files unchanged. Paths Blender would
follow out of the snapshot (absolute ones, or `..` past the top of the disk) are rewritten in
the snapshot's copy of the .blend to the relative path of the same place, so Blender reads
only the snapshot. Files come from the content-addressed store (hard links).
"""

import errno
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pi_render.blend import BlendFileError, Dependency, Trace, trace_dependencies
from pi_render.blend.compression import decompress
from pi_render.errors import DiskFull, PiRenderError
from pi_render.snapshot.access import MAX_FILE_BYTES, SubmitterAccess
from pi_render.snapshot.store import ContentStore

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:/")
# caches Blender may write into while it renders (an unbaked frame): a copy of their own, never
# a hard link that would let one render change a file other snapshots share
WRITTEN_BY_BLENDER = {"point_cache", "fluid_cache", "ocean_cache", "geometry_nodes_bake"}
MAX_SNAPSHOT_BYTES = 64 << 30


class MissingDependencies(PiRenderError):
    """Raised at submit when files the .blend needs are missing, refused or unreadable."""

    http_status = 422
    retryable = False

    def __init__(self, message: str, missing: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.missing = missing

    def details(self) -> dict[str, object]:
        return {"missing": self.missing}


class SnapshotFailed(PiRenderError):
    """Raised when a dependency cannot be copied or its path cannot be moved into the snapshot."""

    http_status = 422
    retryable = False


@dataclass
class Snapshot:
    """What was taken: the .blend Blender renders, how much, and what is missing (allowed)."""

    blend: Path
    files: int = 0
    bytes: int = 0
    digest: str = ""  # SHA-256 over every file's place and content
    warnings: list[str] = field(default_factory=list)


def describe(dep: Dependency) -> str:
    """One line a person can act on: what, where, who refers to it, why it is not usable."""
    holder = os.path.basename(dep.holder)
    return (f"{dep.kind} {dep.stored or dep.resolved!r} ({dep.resolved}), used by {dep.via} "
            f"in {holder}: {dep.problem}")  # fmt: skip


def take_snapshot(
    source: Path,
    spool: Path,
    store: ContentStore,
    access: SubmitterAccess,
    allow_missing: bool,
    max_bytes: int = MAX_SNAPSHOT_BYTES,
) -> Snapshot:
    """Trace `source`, refuse (or, allowed, warn about) what is missing, and copy the rest.

    Raises:
        MissingDependencies: listing each missing file, unless `allow_missing`.
        SnapshotFailed: more than `max_bytes`, or a file could not be copied.
        DiskFull: the data disk has no room for it.
        BlendFileError: the .blend itself cannot be read.
    """
    trace = trace_dependencies(source, access)
    missing = trace.missing
    if missing and not allow_missing:
        lines = "; ".join(describe(d) for d in missing[:20])
        more = f" (and {len(missing) - 20} more)" if len(missing) > 20 else ""
        raise MissingDependencies(
            f"{source} needs {len(missing)} file(s) that cannot be used: {lines}{more}. "
            "Fix the paths, or submit with allow_missing (--allow-missing) to render anyway",
            [d.public() for d in missing],
        )
    needed = sum(d.size or 0 for d in trace.usable)
    if needed > max_bytes:
        raise SnapshotFailed(f"{source} needs {needed:,} bytes of files, more than the "
                             f"{max_bytes:,} a snapshot may hold (max_snapshot_bytes, or "
                             "what is left of your quota)")  # fmt: skip
    free = shutil.disk_usage(spool.parent).free
    if needed > free:
        raise DiskFull(f"{source} needs {needed:,} bytes of files; the data disk has "
                       f"{free:,} free: free some space; nothing was submitted")  # fmt: skip
    root = spool / "root"
    snapshot = Snapshot(blend=_mirrored(root, trace.file))
    snapshot.warnings = [describe(d) for d in missing]
    placed: dict[str, str] = {}
    for blend in trace.blends:  # every .blend from the very bytes that were traced
        data = _rewritten(access.blends[blend].read_bytes(), blend, trace)
        placed[blend] = store.add_bytes(data, _mirrored(root, blend))
        snapshot.bytes += len(data)
    shutil.rmtree(access.workdir, ignore_errors=True)
    for dep in trace.usable:
        if dep.resolved in placed:
            continue
        if dep.kind == "library":  # a library not traced would be copied unchecked: never
            raise SnapshotFailed(f"library {dep.resolved} was not traced")
        try:
            fd = access.open(dep.resolved)
            try:
                target = _mirrored(root, dep.resolved)
                share = dep.kind not in WRITTEN_BY_BLENDER
                limit = min(MAX_FILE_BYTES, max_bytes - snapshot.bytes)
                placed[dep.resolved], size = store.add_from(fd, limit, target, share)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull(f"the data disk filled while taking the snapshot of {source}: "
                               "free some space; nothing was submitted") from None  # fmt: skip
            raise SnapshotFailed(f"cannot copy {dep.kind} {dep.resolved} (used by {dep.via}): "
                                 f"{exc.strerror or exc}") from None  # fmt: skip
        snapshot.bytes += size
    snapshot.files = len(placed)
    _readable_by_all(root)
    digest = hashlib.sha256()
    for path in sorted(placed):
        digest.update(f"{os.path.relpath(path, os.path.dirname(trace.file))}\0{placed[path]}\n"
                      .encode())  # fmt: skip
    snapshot.digest = digest.hexdigest()
    return snapshot


def _readable_by_all(root: Path) -> None:
    """Folders 0755, files 0444 whatever the umask: the sandbox's unprivileged Blender reads
    them, and nothing may change them (the data dir above keeps other users out)."""
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)


def _mirrored(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _rewritten(raw: bytes, holder: str, trace: Trace) -> bytes:
    """`raw` with every path that would lead out of the snapshot made relative (decompressed
    when anything changes: Blender reads plain files as well)."""
    changes: dict[int, tuple[int, bytes]] = {}
    for dep in trace.dependencies:
        if dep.holder != holder or dep.offset < 0 or dep.offset in changes:
            continue
        if not _escapes(dep.stored, holder):
            continue
        relative = "//" + os.path.relpath(dep.target, os.path.dirname(holder))
        encoded = relative.encode()
        if len(encoded) >= dep.field_size:
            raise SnapshotFailed(f"{dep.kind} path {dep.stored!r} in {holder} cannot be made "
                                 f"relative within {dep.field_size} bytes")  # fmt: skip
        changes[dep.offset] = (dep.field_size, encoded)
    if not changes:
        return raw
    try:
        data, _ = decompress(raw, Path(holder))
    except BlendFileError as exc:  # it was parsed a moment ago: only a swap could do this
        raise SnapshotFailed(f"cannot rewrite {holder}: {exc.message}") from None
    patched = bytearray(data)
    for offset, (size, encoded) in changes.items():
        patched[offset : offset + size] = encoded.ljust(size, b"\0")
    return bytes(patched)


def _escapes(stored: str, holder: str) -> bool:
    """Whether Blender would look outside the snapshot's mirror of the disk for `stored`."""
    path = stored.replace("\\", "/")
    if not path:
        return False
    if _WINDOWS_DRIVE.match(path):
        return False  # never there on this machine, and relative to Blender's folder here
    if not path.startswith("//"):
        return True  # absolute (or relative to Blender's working folder)
    depth = len(Path(os.path.dirname(holder)).parts) - 1
    parts = os.path.normpath(path[2:]).split("/")
    ups = next((i for i, part in enumerate(parts) if part != ".."), len(parts))
    return ups > depth
