"""The farm database: a psycopg 3 connection pool, errors translated at the boundary, and the
schema created or migrated at start (versioned; an advisory lock makes concurrent starts safe).

Above this line only StorageError (DiskFull for a full disk) is ever seen: the PostgreSQL
backends call `run` and never touch psycopg's exceptions themselves.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from pi_render.errors import DiskFull, StorageError
from pi_render.farm.schema import MIGRATIONS

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]
MIGRATION_LOCK = 0x70695F72656E64  # "pi_rend": one pg_advisory lock id for schema changes


class FarmUnreachable(StorageError):
    """Raised when the farm database does not answer: writes wait, clients get 503."""


def storage_error(exc: BaseException) -> StorageError:
    """What psycopg raised, as the contracts' errors (the message says what to do)."""
    if isinstance(exc, pg_errors.DiskFull) or getattr(exc, "sqlstate", None) == "53100":
        return DiskFull(f"the farm database's disk is full ({exc}); that write was undone")
    if isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
        return FarmUnreachable(f"farm database unreachable: {_first_line(exc)}")
    return StorageError(f"the farm database refused a write ({_first_line(exc)}); undone")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class FarmDatabase:
    """One pool per daemon; `run(fn)` gives `fn` a connection inside one transaction."""

    def __init__(self, url: str, password: str | None = None, pool_size: int = 8,
                 connect_timeout_s: float = 5.0) -> None:  # fmt: skip
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": int(connect_timeout_s)}
        if password is not None:
            kwargs["password"] = password  # from a file, never argv or the config's text
        self.url = url
        self._kwargs = kwargs
        self._timeout = connect_timeout_s
        # `check`: a connection the server dropped (a restart) is replaced before it is handed
        # out, so the first writes after the database returns do not fail one by one
        self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, kwargs=kwargs,
                                   open=False, timeout=connect_timeout_s, name="pi-render-farm",
                                   check=ConnectionPool.check_connection)  # fmt: skip
        self.unreachable_since: datetime | None = None
        self._state_lock = threading.Lock()

    def open(self) -> None:
        """Connect and migrate; raises FarmUnreachable when the database does not answer."""
        self.pool.open(wait=False)
        self.run(migrate)

    def connect(self) -> Connection:
        """A connection of its own (LISTEN needs one that the pool never hands to others)."""
        try:
            return psycopg.connect(self.url, **self._kwargs)
        except psycopg.Error as exc:
            raise storage_error(exc) from None

    def run(self, work: Callable[[Connection], T]) -> T:
        """`work` in one transaction: committed when it returns, undone when it raises."""
        # while it is known to be away, fail fast: a render keeps its frames in the outbox
        # instead of waiting the full connect timeout for each
        timeout = self._timeout if self.unreachable_since is None else 0.5
        try:
            with self.pool.connection(timeout=timeout) as conn:
                with conn.transaction():
                    result = work(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            error = storage_error(exc)
            if isinstance(error, FarmUnreachable):
                self._mark(reachable=False)
                since = self.unreachable_since
                if since is not None:
                    error = FarmUnreachable(f"farm database unreachable since "
                                            f"{since.isoformat(timespec='seconds')}: "
                                            f"{_first_line(exc)}")  # fmt: skip
            raise error from None
        self._mark(reachable=True)
        return result

    def _mark(self, reachable: bool) -> None:
        if reachable == (self.unreachable_since is None):
            return
        with self._state_lock:
            if reachable:
                log.warning("farm database reachable again (down since %s)",
                            self.unreachable_since)  # fmt: skip
                self.unreachable_since = None
            elif self.unreachable_since is None:
                self.unreachable_since = datetime.now().astimezone()
                log.error("farm database unreachable")

    def close(self) -> None:
        self.pool.close()


def migrate(conn: Connection) -> None:
    """Bring the schema to the newest version, one migration at a time, under an advisory lock
    (held to the end of this transaction): two daemons starting together migrate once."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    current = int(row[0]) if row and row[0] is not None else 0
    if current > len(MIGRATIONS):
        raise StorageError(
            f"the farm database's schema is version {current}, newer than this pi-render knows "
            f"({len(MIGRATIONS)}): upgrade pi-render on this host"
        )
    for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
        log.info("farm schema migrated", extra={"version": version})


def follow(
    db: FarmDatabase,
    channels: list[str],
    stop: threading.Event,
    what: str,
    on_connect: Callable[[], None],
    on_note: Callable[[str], None],
) -> None:
    """LISTEN on `channels` until `stop`, reconnecting after an outage (said once when lost and
    once when back, not every second of it)."""
    lost = False
    while not stop.is_set():
        try:
            with listening(db, channels) as conn:
                if lost:
                    log.warning("%s: farm database back", what)
                    lost = False
                on_connect()
                while not stop.is_set():
                    for note in conn.notifies(timeout=1.0):
                        on_note(note.payload)
        except Exception as exc:  # a follower's boundary: it must outlive an outage
            if not lost:
                log.warning("%s: lost the farm database (polling until it is back): %s",
                            what, exc)  # fmt: skip
                lost = True
            stop.wait(1.0)


@contextmanager
def listening(db: FarmDatabase, channels: list[str]) -> Iterator[Connection]:
    """A connection of its own that LISTENs on `channels` (autocommit, as LISTEN needs)."""
    conn = db.connect()
    try:
        for channel in channels:
            conn.execute(f"LISTEN {channel}")
        yield conn
    finally:
        conn.close()
