"""A durable JSON table on sqlitedict: fsynced writes through sqlitedict, reads beside them.

sqlitedict turns fsync off on its connection; everything a manifest confirms must survive a power
cut, so it is turned back on. Reads go through a second connection (WAL readers never wait on
the writer's fsync) and may use SQL over the table: key ranges, json_extract, indexes.

Writes go through a TicketedWriter (writer.py): a full disk neither hangs them nor loses them
in silence.
"""

import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

from sqlitedict import SqliteDict

from pi_render.fsync import make_dirs
from pi_render.manifest.writer import TicketedWriter, translated
from pi_render.task import codec


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
    """One sqlitedict table of JSON values, synchronous=FULL, with a read-only side connection."""

    @translated
    def __init__(self, path: Path, table: str) -> None:
        make_dirs(path.parent)
        self.table = table
        self._db = SqliteDict(
            str(path),
            tablename=table,
            autocommit=False,
            journal_mode="WAL",
            encode=_encode,
            decode=codec.loads,
            outer_stack=False,
        )
        self._db.conn.execute("PRAGMA synchronous=FULL")
        self._writer = TicketedWriter(self._db.conn)
        self._reader = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._reader_lock = threading.Lock()

    def stage(self, key: str, value: object) -> None:
        """Queue a write; it is durable after this thread's next `commit`."""
        self._writer.write(lambda: self._db.__setitem__(key, value))

    def delete(self, key: str) -> None:
        """Queue a delete; durable after the next `commit`. Missing keys are fine."""
        sql = f'DELETE FROM "{self.table}" WHERE key = ?'
        self._writer.write(lambda: self._db.conn.execute(sql, (key,)))

    def delete_prefix(self, prefix: str) -> None:
        """Queue deleting every key that starts with `prefix` (a key range, so indexed)."""
        sql = f'DELETE FROM "{self.table}" WHERE key >= ? AND key < ?'
        self._writer.write(lambda: self._db.conn.execute(sql, (prefix, prefix + "\uffff")))

    def commit(self) -> None:
        """Block until this thread's writes are on disk (group commit); raises DiskFull or
        StorageError if the disk refused them (nothing of them remains then)."""
        self._writer.commit()

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
        """The writer connection's `PRAGMA synchronous` (2 = FULL)."""
        row = self._writer.select_one("PRAGMA synchronous")
        return int(row[0])

    def close(self) -> None:
        self._db.close()
        with self._reader_lock:
            self._reader.close()
