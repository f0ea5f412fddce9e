"""A JsonTable (`manifest/base.py`) in the farm's database: one `kv` table, one `store` name
per use. Writes staged by any thread go out together in one transaction at the next `commit`,
which returns only once they are in (the lock is held through the write)."""

import threading

from pi_render.farm.db import Connection, FarmDatabase
from pi_render.manifest.base import _encode


class PostgresJsonTable:
    def __init__(self, db: FarmDatabase, store: str) -> None:
        self.db, self.store = db, store
        self._pending: list[tuple[str, str | None]] = []  # (key, value); None deletes
        self._lock = threading.Lock()

    def stage(self, key: str, value: object) -> None:
        with self._lock:
            self._pending.append((key, _encode(value)))

    def delete(self, key: str) -> None:
        with self._lock:
            self._pending.append((key, None))

    def commit(self) -> None:
        """Raises StorageError (nothing of the staged writes is kept then)."""
        with self._lock:
            pending, self._pending = self._pending, []
            if pending:
                self.db.run(lambda conn: self._write(conn, pending))

    def _write(self, conn: Connection, pending: list[tuple[str, str | None]]) -> None:
        for key, value in pending:
            if value is None:
                conn.execute("DELETE FROM kv WHERE store = %s AND key = %s", (self.store, key))
            else:
                conn.execute(
                    "INSERT INTO kv (store, key, value) VALUES (%s, %s, %s) ON CONFLICT "
                    "(store, key) DO UPDATE SET value = EXCLUDED.value",
                    (self.store, key, value),
                )

    def text(self, key: str) -> str | None:
        row = self.db.run(
            lambda conn: conn.execute(
                "SELECT value FROM kv WHERE store = %s AND key = %s", (self.store, key)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    def items(self) -> list[tuple[str, str]]:
        rows = self.db.run(
            lambda conn: conn.execute(
                "SELECT key, value FROM kv WHERE store = %s ORDER BY key", (self.store,)
            ).fetchall()
        )
        return [(str(key), str(value)) for key, value in rows]

    def close(self) -> None:
        """The database is the daemon's to close."""
