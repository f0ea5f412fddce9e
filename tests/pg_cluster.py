"""A real PostgreSQL server for the farm tests: Debian's `postgresql` binaries, a cluster made
in a temp dir and run as an unprivileged user (`nobody` when the tests run as root), listening
only on a Unix socket in that dir. CI installs the package; there a missing server fails."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The newest installed server's bin dir (Debian keeps them per major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))  # fmt: skip
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """initdb, start, stop (fast or immediate, as a crash), and fresh databases per test."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = _free_port()
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self.root.chmod(0o755)
        self._as_user(["initdb", "-D", str(self.data), "-A", "trust", "-U", "pirender",
                       "--no-sync", "-E", "UTF8"])  # fmt: skip

    def _as_user(self, argv: list[str]) -> None:
        done = subprocess.run([str(self.bin / argv[0]), *argv[1:]], user=self.user,
                              capture_output=True, text=True, cwd=self.root)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-k {self.root} -p {self.port} -c listen_addresses='' -c max_connections=200"
        self._as_user(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                       "-o", options, "start"])  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: no checkpoint, recovery from the WAL at the next start."""
        self._as_user(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def url(self, database: str) -> str:
        return f"postgresql://pirender@/{database}?host={self.root}&port={self.port}"

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)


def cluster_or_skip() -> PostgresCluster:
    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must provide PostgreSQL (apt package postgresql; see scripts/setup.sh)")
        pytest.skip("PostgreSQL is not installed (apt install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must provide psycopg (pip install '.[farm]')")
        pytest.skip("psycopg is not installed (pip install '.[farm]')")
    cluster = PostgresCluster(bin_dir)
    cluster.start()
    return cluster
