"""A durable JSON table in sqlitedict's format: writes on our own connection, reads beside them.

The file is a sqlitedict table (key TEXT PRIMARY KEY, value: JSON text), readable with
`SqliteDict(path, tablename=..., journal_mode="WAL")`. The writes do not go through sqlitedict:
its writer thread turns fsync off and costs a thread hand-over per statement; writer.py commits
at synchronous=NORMAL on a connection of its own and fsyncs the WAL for every durable commit
(group commit, group fsync). Reads go through a second connection (WAL readers never wait on the
writer) and may use SQL over the table: key ranges, json_extract, indexes.

Never close the last connection to a file and open it again at once in the same process: when a
SqliteDict did that just before this table's connection opened, a kill -9 soon after lost
whole runs of committed writes or left the database malformed, within a few kills
(tests/test_records_manifest.py). The cause inside SQLite was not pinned down.

A full disk neither hangs a write nor loses it in silence (writer.py).
"""

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

from pi_render.fsync import fsync_path, make_dirs
from pi_render.manifest.writer import TicketedWriter, translated
from pi_render.task import codec

SQLITEDICT_TABLE = 'CREATE TABLE IF NOT EXISTS "{table}" (key TEXT PRIMARY KEY, value BLOB)'


def _encode(value: object) -> str:
    """Values may arrive as JSON text already (pydantic's); anything else goes through the codec."""
    return value if isinstance(value, str) else codec.dumps(value)


class JsonTable(Protocol):
    """A small durable store of JSON values by key: writes are staged, then `commit` makes them
    durable. SQLite's below; PostgreSQL's (`farm/kv.py`) for what a farm's hosts share."""

    def stage(self, key: str, value: object) -> None: ...

    def delete(self, key: str) -> None: ...

    def commit(self) -> None: ...

    def text(self, key: str) -> str | None: ...

    def items(self) -> list[tuple[str, str]]: ...

    def close(self) -> None: ...


class DurableJsonTable:
    """One sqlitedict table of JSON values, durable commits, with a read-only side connection."""

    @translated
    def __init__(self, path: Path, table: str) -> None:
        make_dirs(path.parent)
        self.table = table
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=30)  # fmt: skip
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable commits fsync the WAL themselves
        # sqlitedict's own table, made on this connection: a SqliteDict opened and closed just
        # before it deleted the WAL (see the module's docstring)
        conn.execute(SQLITEDICT_TABLE.format(table=table))
        self._wal = Path(f"{path}-wal")
        self._writer = TicketedWriter(conn, self._sync_wal)
        self._reader = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._reader_lock = threading.Lock()
        self._reader.execute(f'SELECT count(*) FROM "{table}" WHERE 0').fetchall()  # WAL exists
        fsync_path(path.parent)  # the database's and the WAL's entries (SQLite syncs the folder
        # at the WAL's first sync of its own, which NORMAL defers to a checkpoint)
        self._put = f'REPLACE INTO "{table}" (key, value) VALUES (?, ?)'

    def _sync_wal(self) -> None:
        """Everything committed so far onto the disk (what synchronous=FULL does per commit).
        fdatasync, as SQLite itself syncs: the WAL's bytes and its length, not its mtime (an
        fsync here cost an ext4 journal commit each, ~1/5 of a worker's time)."""
        fd = os.open(self._wal, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def stage(self, key: str, value: object) -> None:
        """Write in the open transaction; it is durable after this thread's next `commit`."""
        self._writer.write(self._put, (key, _encode(value)))

    def stage_many(self, items: list[tuple[str, object]]) -> None:
        """Write several at once: committed, or undone, together (no other thread's commit can
        come between them)."""
        self._writer.write_many([(self._put, (key, _encode(value))) for key, value in items])

    def delete(self, key: str) -> None:
        """Delete in the open transaction; durable after the next `commit`. Missing keys are
        fine."""
        self._writer.write(f'DELETE FROM "{self.table}" WHERE key = ?', (key,))

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key that starts with `prefix` (a key range, so indexed)."""
        sql = f'DELETE FROM "{self.table}" WHERE key >= ? AND key < ?'
        self._writer.write(sql, (prefix, prefix + "\uffff"))

    def commit(self, durable: bool = True) -> None:
        """Block until this thread's writes are committed and, if `durable`, on disk (group
        commit); raises DiskFull or StorageError if the disk refused them (nothing of them
        remains then)."""
        self._writer.commit(durable)

    def text(self, key: str) -> str | None:
        rows = self.query(f"SELECT value FROM {self.table} WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def items(self) -> list[tuple[str, str]]:
        """Every (key, JSON text), in key order."""
        rows = self.query(f"SELECT key, value FROM {self.table} ORDER BY key")
        return [(str(key), str(value)) for key, value in rows]

    @translated
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._reader_lock:
            return self._reader.execute(sql, params).fetchall()

    @translated
    def execute_ddl(self, sql: str) -> None:
        with self._reader_lock:
            self._reader.execute(sql)
            self._reader.commit()

    @translated
    def synchronous(self) -> int:
        """The writer connection's `PRAGMA synchronous` (1 = NORMAL: durable commits fsync the
        WAL themselves)."""
        row = self._writer.select_one("PRAGMA synchronous")
        return int(row[0])

    def close(self) -> None:
        self._writer.close()
        with self._reader_lock:
            self._reader.close()
