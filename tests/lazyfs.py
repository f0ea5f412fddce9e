"""A file system that forgets, on command, everything not yet fsynced: a power cut, for tests.

The idea is LazyFS's (the file system Jepsen uses to find durability bugs): every write is
held in memory until its file is fsynced, and a new, renamed or removed directory entry until
its directory is fsynced. A cut drops the rest, exactly as a power cut drops the page cache,
then refuses every operation (EIO) until the mount is unmounted; the next mount shows only what
was synced. Nothing is ever lost that a correct program made durable, and nothing unsynced
survives, so a program that forgets an fsync (of a file or of a directory) is caught.

Run as a process (FUSE through mfusepy over Debian's libfuse3):

    python tests/lazyfs.py MOUNTPOINT CONTROL_SOCKET

It mounts again each time it is unmounted (`fusermount3 -u`), until told to `quit`. The
control socket takes one line per connection and answers one line:
    arm N     cut after N more changing operations ("cut" is answered when it happens)
    cut       cut now
    status    (every answer says: the word, cuts so far, mounts so far)
    quit      stop remounting
Kernel caches are off (entry, attribute and negative timeouts of 0), so a process started after
the remount sees only this file system's state.
"""

import errno
import faulthandler
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mfusepy as fuse

ROOT = 1


@dataclass
class Inode:
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytearray = field(default_factory=bytearray)  # a file's live bytes, a link's target
    synced: bytes = b""  # a file's bytes as of its last fsync
    entries: dict[str, int] = field(default_factory=dict)  # a directory's live entries
    durable: dict[str, int] = field(default_factory=dict)  # ... as of its last fsync
    mtime_ns: int = field(default_factory=time.time_ns)


def failure(code: int) -> fuse.FuseOSError:
    return fuse.FuseOSError(code)


class LazyFS(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self) -> None:
        self.inodes: dict[int, Inode] = {ROOT: Inode(stat.S_IFDIR | 0o755)}
        self.handles: dict[int, int] = {}  # fh → inode
        self.next_ino = ROOT + 1
        self.next_fh = 1
        self.mutex = threading.RLock()
        self.dead = False  # after a cut: every operation fails until the remount
        self.countdown: int | None = None  # changing operations left before an armed cut
        self.cut_happened = threading.Event()
        self.cuts = 0
        self.mounts = 0  # counted when the kernel says the mount is up (init)

    def init(self, path: str) -> None:
        with self.mutex:
            self.mounts += 1

    # the power cut
    def cut(self) -> None:
        """Keep only what was synced: the durable entries from the root down, each file's synced
        bytes. Everything else is gone, as after a power cut."""
        with self.mutex:
            if self.dead:
                return
            kept: dict[int, Inode] = {}
            pending = [ROOT]
            while pending:
                ino = pending.pop()
                if ino in kept or ino not in self.inodes:
                    continue
                node = kept[ino] = self.inodes[ino]
                if stat.S_ISDIR(node.mode):
                    node.entries = dict(node.durable)
                    pending.extend(node.entries.values())
                elif stat.S_ISREG(node.mode):
                    node.data = bytearray(node.synced)
            for node in kept.values():  # entries whose inode is gone (never reachable) go too
                if stat.S_ISDIR(node.mode):
                    node.entries = {n: i for n, i in node.entries.items() if i in kept}
                    node.durable = dict(node.entries)
            self.inodes = kept
            self.handles.clear()
            self.dead = True
            self.countdown = None
            self.cuts += 1
            self.cut_happened.set()

    def revive(self) -> None:
        with self.mutex:
            self.dead = False
            self.cut_happened.clear()

    def _alive(self, changing: bool = False) -> None:
        if self.dead:
            raise failure(errno.EIO)
        if changing and self.countdown is not None:
            self.countdown -= 1
            if self.countdown <= 0:
                self.cut()
                raise failure(errno.EIO)

    # lookups
    def _walk(self, path: str) -> tuple[int, Inode]:
        ino = ROOT
        for name in [p for p in path.split("/") if p]:
            node = self.inodes[ino]
            if not stat.S_ISDIR(node.mode):
                raise failure(errno.ENOTDIR)
            if name not in node.entries:
                raise failure(errno.ENOENT)
            ino = node.entries[name]
        return ino, self.inodes[ino]

    def _parent(self, path: str) -> tuple[Inode, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        _, parent = self._walk(head or "/")
        if not stat.S_ISDIR(parent.mode):
            raise failure(errno.ENOTDIR)
        return parent, name

    def _node(self, path: str | None, fh: int | None) -> Inode:
        if fh is not None and fh in self.handles:
            return self.inodes[self.handles[fh]]
        if path is None:
            raise failure(errno.EBADF)
        return self._walk(path)[1]

    def _new(self, path: str, mode: int, data: bytes = b"") -> int:
        parent, name = self._parent(path)
        if name in parent.entries:
            raise failure(errno.EEXIST)
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        context = fuse.fuse_get_context()
        self.inodes[ino] = Inode(mode, context[0], context[1], bytearray(data))
        parent.entries[name] = ino
        parent.mtime_ns = time.time_ns()
        return ino

    def _open(self, ino: int) -> int:
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.handles[fh] = ino
        return fh

    # attributes
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        with self.mutex:
            self._alive()
            node = self._node(path, fh)
            links = 2 if stat.S_ISDIR(node.mode) else 1
            return {"st_mode": node.mode, "st_uid": node.uid, "st_gid": node.gid,
                    "st_size": len(node.data), "st_nlink": links, "st_mtime": node.mtime_ns,
                    "st_ctime": node.mtime_ns, "st_atime": node.mtime_ns,
                    "st_blocks": (len(node.data) + 511) // 512}  # fmt: skip

    def access(self, path: str, amode: int) -> int:
        with self.mutex:
            self._alive()
            self._walk(path)
            return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 24, "f_bfree": 1 << 23,
                "f_bavail": 1 << 23, "f_files": 1 << 20, "f_ffree": 1 << 20,
                "f_namemax": 255}  # fmt: skip

    def chmod(self, path: str | None, mode: int) -> int:
        with self.mutex:
            self._alive(changing=True)
            node = self._node(path, None)
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)
            return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        with self.mutex:
            self._alive(changing=True)
            node = self._node(path, None)
            node.uid = node.uid if uid < 0 else uid
            node.gid = node.gid if gid < 0 else gid
            return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        with self.mutex:
            self._alive()
            self._node(path, None).mtime_ns = times[1] if times else time.time_ns()
            return 0

    # the namespace
    def readdir(self, path: str, fh: int) -> list[str]:
        with self.mutex:
            self._alive()
            return [".", "..", *self._walk(path)[1].entries]

    def mkdir(self, path: str, mode: int) -> int:
        with self.mutex:
            self._alive(changing=True)
            self._new(path, stat.S_IFDIR | stat.S_IMODE(mode))
            return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self.mutex:
            self._alive(changing=True)
            return self._open(self._new(path, stat.S_IFREG | stat.S_IMODE(mode)))

    def symlink(self, target: str, source: str) -> int:
        with self.mutex:
            self._alive(changing=True)
            ino = self._new(target, stat.S_IFLNK | 0o777, source.encode())
            self.inodes[ino].synced = source.encode()
            return 0

    def readlink(self, path: str) -> str:
        with self.mutex:
            self._alive()
            return bytes(self._walk(path)[1].data).decode()

    def link(self, target: str, source: str) -> int:
        with self.mutex:
            self._alive(changing=True)
            ino, _ = self._walk(source)
            parent, name = self._parent(target)
            if name in parent.entries:
                raise failure(errno.EEXIST)
            parent.entries[name] = ino
            return 0

    def unlink(self, path: str) -> int:
        with self.mutex:
            self._alive(changing=True)
            parent, name = self._parent(path)
            if name not in parent.entries:
                raise failure(errno.ENOENT)
            del parent.entries[name]  # an open handle keeps the inode (self.inodes)
            return 0

    def rmdir(self, path: str) -> int:
        with self.mutex:
            self._alive(changing=True)
            parent, name = self._parent(path)
            _, node = self._walk(path)
            if node.entries:
                raise failure(errno.ENOTEMPTY)
            del parent.entries[name]
            return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            self._alive(changing=True)
            source, old_name = self._parent(old)
            target, new_name = self._parent(new)
            if old_name not in source.entries:
                raise failure(errno.ENOENT)
            ino = source.entries[old_name]
            replaced = target.entries.get(new_name)
            if replaced is not None and stat.S_ISDIR(self.inodes[replaced].mode):
                if self.inodes[replaced].entries:
                    raise failure(errno.ENOTEMPTY)
            del source.entries[old_name]
            target.entries[new_name] = ino
            return 0

    # contents
    def open(self, path: str, flags: int) -> int:
        with self.mutex:
            self._alive()
            ino, node = self._walk(path)
            if flags & os.O_TRUNC:
                self._alive(changing=True)
                node.data.clear()
            return self._open(ino)

    def opendir(self, path: str) -> int:
        with self.mutex:
            self._alive()
            return self._open(self._walk(path)[0])

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self.mutex:
            self._alive()
            return bytes(self._node(path, fh).data[offset : offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self.mutex:
            self._alive(changing=True)
            node = self._node(path, fh)
            if offset > len(node.data):
                node.data.extend(b"\0" * (offset - len(node.data)))
            node.data[offset : offset + len(data)] = data
            node.mtime_ns = time.time_ns()
            return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self.mutex:
            self._alive(changing=True)
            node = self._node(path, fh)
            del node.data[length:]
            node.data.extend(b"\0" * (length - len(node.data)))
            return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self.mutex:
            self._alive(changing=True)
            node = self._node(path, fh)
            node.synced = bytes(node.data)
            return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        with self.mutex:
            self._alive(changing=True)
            node = self._node(path, fh)
            node.durable = dict(node.entries)
            return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        with self.mutex:
            self.handles.pop(fh, None)
            return 0

    def releasedir(self, path: str | None, fh: int) -> int:
        return self.release(path, fh)


def answer(lazy: LazyFS, conn: socket.socket, done: threading.Event) -> None:
    with conn:
        words = conn.makefile().readline().split()
        if words[:1] == ["arm"]:
            with lazy.mutex:
                lazy.countdown = int(words[1])
            lazy.cut_happened.wait()
        elif words[:1] == ["cut"]:
            lazy.cut()
        elif words[:1] == ["quit"]:
            done.set()
        conn.sendall(f"{words[0] if words else '?'} {lazy.cuts} {lazy.mounts}\n".encode())


def serve_control(lazy: LazyFS, path: str, done: threading.Event) -> None:
    """One thread a request: an `arm` waits for its cut while a `cut` or `quit` comes in."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(f"{path}.new")
    server.listen(8)
    os.rename(f"{path}.new", path)  # it appears only once it listens: no refused connect
    while not done.is_set():
        conn, _ = server.accept()
        threading.Thread(target=answer, args=(lazy, conn, done), daemon=True).start()


def main() -> None:
    mountpoint, control = sys.argv[1], sys.argv[2]
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1`: where every thread is
    logging.basicConfig(level=logging.INFO)  # mfusepy logs what a callback raised
    lazy = LazyFS()
    done = threading.Event()
    threading.Thread(target=serve_control, args=(lazy, control, done), daemon=True).start()
    while not done.is_set():
        lazy.revive()
        print(f"lazyfs: mounting ({lazy.mounts} so far)", file=sys.stderr, flush=True)
        try:
            fuse.FUSE(lazy, mountpoint, foreground=True, nothreads=True, allow_other=True,
                      hard_remove=True, entry_timeout=0, attr_timeout=0, negative_timeout=0,
                      fsname="lazyfs")  # fmt: skip
        except RuntimeError as exc:  # libfuse's own unmount at exit finds it unmounted (-z)
            print(f"lazyfs: the mount ended with {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
