"""A durable JSON table on sqlitedict: fsynced writes through sqlitedict, reads beside them.

sqlitedict turns fsync off on its connection; everything a manifest confirms must survive a power
cut, so it is turned back on. Reads go through a second connection (WAL readers never wait on
the writer's fsync) and may use SQL over the table: key ranges, json_extract, indexes.

A write that fails (a full disk) must neither hang nor be lost silently. sqlitedict's own commit
request kills its writer thread when COMMIT fails, so COMMIT is sent as a statement; and since a
failed COMMIT (or statement) undoes the whole open transaction, every write handed over so far is
counted lost, each writer holds a ticket, and `commit` tells each one whether its own write is on
disk, even when another thread's commit covered (or lost) it.
"""

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from queue import Queue
from typing import Any

from sqlitedict import _RESPONSE_NO_MORE, SqliteDict

from pi_render.errors import DiskFull, StorageError
from pi_render.task import codec


def storage_error(exc: sqlite3.Error) -> StorageError:
    if "full" in str(exc):
        return DiskFull(f"the data disk is full ({exc}): free some space; that write was undone")
    return StorageError(f"the data store could not write ({exc}); that write was undone")


def _encode(value: object) -> str:
    """Values may arrive as JSON text already (pydantic's); anything else goes through the codec."""
    return value if isinstance(value, str) else codec.dumps(value)


class DurableJsonTable:
    """One sqlitedict table of JSON values, synchronous=FULL, with a read-only side connection."""

    def __init__(self, path: Path, table: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
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
        self._db.commit(blocking=True)
        self._reader = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._reader_lock = threading.Lock()
        self._order = threading.Lock()  # statements reach SQLite's thread in ticket order
        self._committing = threading.Lock()
        self._staged = self._durable = self._lost = 0  # tickets: handed over, on disk, undone
        self._open = False  # a write was handed over since the last COMMIT or ROLLBACK
        self._ticket = threading.local()  # this thread's last write
        self._loss: StorageError = StorageError("no write was undone")

    def stage(self, key: str, value: object) -> None:
        """Queue a write; it is durable after this thread's next `commit`."""
        self._write(lambda: self._db.__setitem__(key, value))

    def delete(self, key: str) -> None:
        """Queue a delete; durable after the next `commit`. Missing keys are fine."""
        self._write(lambda: self._db.conn.execute(f'DELETE FROM "{self.table}" WHERE key = ?',
                                                  (key,)))  # fmt: skip

    def delete_prefix(self, prefix: str) -> None:
        """Queue deleting every key that starts with `prefix` (a key range, so indexed)."""
        self._write(lambda: self._db.conn.execute(
            f'DELETE FROM "{self.table}" WHERE key >= ? AND key < ?', (prefix, prefix + "\uffff")
        ))  # fmt: skip

    def _write(self, hand_over: Callable[[], None]) -> None:
        with self._order:
            try:
                hand_over()
            except sqlite3.Error as exc:  # an earlier statement failed; it surfaces here
                self._undo(exc)
                raise storage_error(exc) from None
            self._staged += 1
            self._open = True
            self._ticket.value = self._staged

    def commit(self) -> None:
        """Block until this thread's writes are on disk (writers that staged meanwhile share the
        fsync: group commit). Raises DiskFull or StorageError if they were undone."""
        ticket = getattr(self._ticket, "value", 0)
        with self._committing:
            if self._durable < ticket and self._lost < ticket:
                self._commit_open()
        if self._durable < ticket:  # undone by a failure another thread saw first
            raise type(self._loss)(str(self._loss))

    def _commit_open(self) -> None:
        done: Queue[object] = Queue()
        with self._order:
            covering = self._staged
            if not self._open:
                return
            self._open = False
            self._db.conn.execute("COMMIT", None, done)
        try:
            while done.get() != _RESPONSE_NO_MORE:
                pass
            self._db.conn.check_raise_error()
        except sqlite3.Error as exc:
            with self._order:
                self._undo(exc)
            raise storage_error(exc) from None
        self._durable = max(self._durable, covering)

    def _undo(self, exc: sqlite3.Error) -> None:
        """Roll back whatever is open (SAVEPOINT first, so ROLLBACK never finds no transaction)
        and count every write handed over so far as lost. Called holding `_order`."""
        self._db.conn.execute("SAVEPOINT pi_render_undo")
        self._db.conn.execute("ROLLBACK")
        self._lost, self._open, self._loss = self._staged, False, storage_error(exc)

    def text(self, key: str) -> str | None:
        rows = self.query(f"SELECT value FROM {self.table} WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._reader_lock:
            return self._reader.execute(sql, params).fetchall()

    def execute_ddl(self, sql: str) -> None:
        with self._reader_lock:
            self._reader.execute(sql)
            self._reader.commit()

    def synchronous(self) -> int:
        """The writer connection's `PRAGMA synchronous` (2 = FULL)."""
        row = self._db.conn.select_one("PRAGMA synchronous")
        return int(row[0])

    def close(self) -> None:
        self._db.close()
        with self._reader_lock:
            self._reader.close()
