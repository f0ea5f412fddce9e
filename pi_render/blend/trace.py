"""Every file a .blend needs, through its linked libraries (recursively, cycles cut), on disk.

Paths resolve as Blender resolves them: `//` against the file that holds the path (a library's
own paths against the library), lexically; Windows separators are read as `/`. Sequences, UDIM
tiles, caches and strips are expanded to the files that are there. Every read and listing is
bounded, and nothing but regular files is read: a FIFO or /dev/zero is reported, never opened.
What a caller may not touch (outside its roots, not readable by its user) is decided by its
`Access`, asked before each path is looked at.
"""

import os
import re
import stat
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from pi_render.blend.errors import BlendFileError, guarded
from pi_render.blend.file import BlendFile
from pi_render.blend.refs import Reference, references

MAX_FILES = 10_000  # dependency files of one project
MAX_LIBRARIES = 1_000
MAX_DIR_ENTRIES = 500_000  # entries of the folders listed to expand sequences and caches
_PSEUDO_FS = ("/proc/", "/sys/", "/dev/")
MAX_BLEND_BYTES = 4 << 30
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:/")
_DIGITS = re.compile(r"(\d+)(?!.*\d)")
_UDIM_TOKENS = ("<UDIM>", "<UVTILE>")


class TooManyDependencies(BlendFileError):
    """Raised when a project needs more files (or lists bigger folders) than the bounds allow."""


@dataclass(frozen=True)
class Dependency:
    """One file a .blend needs; `problem` says why it cannot be used (None when it can)."""

    kind: str
    stored: str
    resolved: str
    exists: bool
    size: int | None
    via: str
    holder: str
    packed: bool = False
    required: bool = True
    problem: str | None = None
    target: str = ""  # the stored path resolved (a sequence's first frame, a UDIM pattern…)
    offset: int = -1  # where `stored` lies in the holder's decompressed bytes (-1: derived)
    field_size: int = 0

    def public(self) -> dict[str, Any]:
        """What `pi-render deps --json` shows."""
        shown = asdict(self)
        for hidden in ("target", "offset", "field_size"):
            shown.pop(hidden)
        return shown


@dataclass
class Trace:
    """A file's dependencies: every file it needs, and the .blend files that were traced."""

    file: str
    blends: list[str] = field(default_factory=list)
    dependencies: list[Dependency] = field(default_factory=list)

    @property
    def missing(self) -> list[Dependency]:
        """What a render would lack: required, not packed, and missing or refused."""
        return [d for d in self.dependencies if d.problem and d.required and not d.packed]

    @property
    def usable(self) -> list[Dependency]:
        return [d for d in self.dependencies if d.exists and not d.problem and not d.packed]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "dependencies": [d.public() for d in self.dependencies],
            "missing": [d.public() for d in self.missing],
        }


class Access(Protocol):
    """How the tracer touches the disk on someone's behalf."""

    def refuse(self, path: str) -> str | None:
        """Why `path` may not be used (outside the roots, not readable by the user), or None."""

    def read_blend(self, path: str) -> bytes:
        """A library's (or the traced file's) bytes. Raises OSError or BlendFileError."""


class LocalAccess:
    """The caller's own view: everything it can read, nothing refused in advance."""

    def refuse(self, path: str) -> str | None:
        return None

    def read_blend(self, path: str) -> bytes:
        return read_regular(path, MAX_BLEND_BYTES)


def read_regular(path: str, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them; a FIFO or device is refused unopened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BlendFileError("not a regular file", path)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BlendFileError(f"larger than {limit} bytes", path)
    return data


def resolve(stored: str, holder: str) -> str:
    """Where Blender looks for `stored` when `holder` (an absolute path) holds it."""
    path = stored.replace("\\", "/")
    if path.startswith("//"):
        return os.path.normpath(os.path.join(os.path.dirname(holder), path[2:]))
    if _WINDOWS_DRIVE.match(path):
        return path  # a Windows drive: never there on this machine
    return os.path.normpath(os.path.join(os.path.dirname(holder), path))


class _Tracer:
    def __init__(self, access: Access, max_files: int) -> None:
        self.access, self.max_files = access, max_files
        self.trace: Trace | None = None
        self.files = 0
        self.entries = 0  # folder entries looked at, all folders together
        self.listings: dict[tuple[str, bool], list[str]] = {}

    def _refuse(self, path: str) -> str | None:
        try:
            if (path + "/").startswith(_PSEUDO_FS) or (os.path.realpath(path) + "/").startswith(
                _PSEUDO_FS
            ):
                return "not a regular file"  # /proc, /sys, /dev: never walked, never read
            return self.access.refuse(path)
        except OSError as exc:
            return f"cannot be read: {exc.strerror or exc}"

    def run(self, path: str) -> Trace:
        root = os.path.abspath(path)
        trace = self.trace = Trace(file=root)
        pending: deque[str] = deque([root])
        # by the path Blender opens, not the file it leads to: a library's relative paths
        # resolve against where it is reached, so each path it is reached by is traced
        seen = {root}
        while pending:
            holder = pending.popleft()
            trace.blends.append(holder)
            for dep in self._dependencies_of(holder, first=holder == root):
                trace.dependencies.append(dep)
                usable = dep.exists and not dep.problem and not dep.packed
                if dep.kind == "library" and usable and dep.resolved not in seen:
                    if len(seen) >= MAX_LIBRARIES:
                        raise TooManyDependencies(f"more than {MAX_LIBRARIES} libraries", root)
                    seen.add(dep.resolved)
                    pending.append(dep.resolved)
        return trace

    def _dependencies_of(self, holder: str, first: bool) -> list[Dependency]:
        try:
            raw = self.access.read_blend(holder)
            blend = BlendFile(Path(holder), raw)
            refs = guarded(Path(holder), lambda: references(blend))
        except (BlendFileError, OSError) as exc:
            if first:
                if isinstance(exc, OSError):
                    raise BlendFileError(f"cannot read: {exc.strerror or exc}", holder) from None
                raise
            # a library that cannot be read: its row (in the holder's list) says so already,
            # unless it is a broken .blend, which only reading it shows
            reason = exc.message if isinstance(exc, BlendFileError) else str(exc.strerror)
            self._mark_broken(holder, reason)
            return []
        found: list[Dependency] = []
        for ref in refs:
            found.extend(self._expand(ref, holder))
        return found

    def _mark_broken(self, library: str, reason: str) -> None:
        assert self.trace is not None
        deps = self.trace.dependencies
        for i, dep in enumerate(deps):
            if dep.kind == "library" and dep.resolved == library and not dep.problem:
                deps[i] = replace(dep, problem=f"not a usable .blend: {reason}")

    def _row(self, ref: Reference, holder: str, path: str, target: str) -> Dependency:
        self.files += 1
        if self.files > self.max_files:
            raise TooManyDependencies(f"needs more than {self.max_files} files", holder)
        exists, size, problem = self._look(path) if not ref.packed else (False, None, None)
        return Dependency(ref.kind, ref.stored, path, exists, size, ref.via, holder, ref.packed,
                          ref.required, problem, target, ref.offset, ref.size)  # fmt: skip

    def _look(self, path: str) -> tuple[bool, int | None, str | None]:
        """Whether a file is there, its size, and why it cannot be used (None: it can)."""
        refused = self._refuse(path)
        if refused:
            return False, None, refused
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return False, None, "missing"
        except OSError as exc:
            return False, None, f"cannot be read: {exc.strerror or exc}"
        if not stat.S_ISREG(info.st_mode):
            return True, None, "not a regular file"
        return True, info.st_size, None

    def _expand(self, ref: Reference, holder: str) -> list[Dependency]:
        if ref.expand == "point_cache":
            stem = os.path.splitext(os.path.basename(holder))[0]
            folder = resolve(ref.stored or f"//blendcache_{stem}", holder)
            pattern = re.compile(re.escape(ref.names[0]) + r"_\d+(_\d+)?\.(bphys|vdb)$")
            return self._listed(ref, holder, folder, lambda name: bool(pattern.match(name)))
        target = resolve(ref.stored, holder)
        if ref.expand == "strip":
            return [self._row(ref, holder, os.path.join(target, name), target)
                    for name in ref.names or ("",)]  # fmt: skip
        if ref.expand == "dir":
            return self._listed(ref, holder, target, lambda name: True)
        if ref.expand == "udim":
            return [self._row(ref, holder, path, target) for path in _udim_tiles(target, ref)]
        if ref.expand == "sequence" and not ref.packed:
            frames = self._sequence(ref, holder, target)
            if frames:
                return frames
        return [self._row(ref, holder, target, target)]

    def _sequence(self, ref: Reference, holder: str, target: str) -> list[Dependency]:
        folder, name = os.path.split(target)
        match = _DIGITS.search(name)
        if match is None:
            return []
        prefix, suffix = name[: match.start()], name[match.end() :]
        pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
        return self._listed(ref, holder, folder, lambda n: bool(pattern.match(n)), target)

    def _listed(self, ref: Reference, holder: str, folder: str, wanted: Any,
                target: str | None = None) -> list[Dependency]:  # fmt: skip
        """The files of `folder` (and, for cache folders, below it) whose names are `wanted`."""
        target = target or folder
        if self._refuse(folder):
            return [self._row(ref, holder, folder, target)]
        rows: list[Dependency] = []
        for path in self._files_in(folder, ref.expand == "dir", holder):
            if wanted(os.path.basename(path)):
                rows.append(self._row(ref, holder, path, target))
        if not rows and ref.expand != "sequence":
            rows.append(self._row(ref, holder, folder, target))  # reported as missing
        return rows

    def _files_in(self, folder: str, recursive: bool, holder: str) -> list[str]:
        """A folder's files, sorted, listed once per trace; subfolders only where the access
        allows (their names are never shown otherwise); every entry counts against one budget."""
        key = (folder, recursive)
        if key not in self.listings:
            found: list[str] = []
            self._walk(folder, recursive, holder, 0, found)
            self.listings[key] = sorted(found)
        return self.listings[key]

    def _walk(self, folder: str, recursive: bool, holder: str, depth: int,
              found: list[str]) -> None:  # fmt: skip
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    self.entries += 1
                    if self.entries > MAX_DIR_ENTRIES:
                        raise TooManyDependencies(
                            f"looks through more than {MAX_DIR_ENTRIES} folder entries", holder
                        )
                    if not entry.is_dir(follow_symlinks=False):
                        found.append(entry.path)
                    elif recursive and depth < 8 and not self._refuse(entry.path):
                        self._walk(entry.path, recursive, holder, depth + 1, found)
        except OSError:
            return  # a missing or unreadable folder: its row says so


def _udim_tiles(target: str, ref: Reference) -> list[str]:
    tiles = ref.tiles or (1001,)
    folder, name = os.path.split(target)
    if not any(token in name for token in _UDIM_TOKENS):
        # older files store one tile's own name: its 4-digit number stands for the set
        match = re.search(r"(?<!\d)(1\d{3})(?!\d)", name)
        if match is None:
            return [target]
        name = name[: match.start()] + "<UDIM>" + name[match.end() :]
    paths = []
    for tile in tiles:
        u, v = (tile - 1001) % 10 + 1, (tile - 1001) // 10 + 1
        tiled = name.replace("<UDIM>", str(tile)).replace("<UVTILE>", f"u{u}_v{v}")
        paths.append(os.path.join(folder, tiled))
    return paths


def trace_dependencies(path: str | Path, access: Access | None = None,
                       max_files: int = MAX_FILES) -> Trace:  # fmt: skip
    """Every file `path` needs, through its libraries; what is missing or refused says why.

    Raises:
        BlendFileError: the file itself cannot be read or parsed, or the bounds were passed.
    """
    return _Tracer(access or LocalAccess(), max_files).run(str(path))
