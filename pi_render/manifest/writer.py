"""Writes from many threads onto one SQLite connection that neither hang nor vanish when the disk
refuses them, and that share their commits and fsyncs.

Every write carries a ticket. A failure undoes the open transaction (ROLLBACK) and marks the
tickets it covered as lost, and each writer's `commit` says whether *its* ticket is on disk: a
writer never hears "durable" of a write that is not.

The statements run in the calling threads, one at a time (sqlite3 lets go of the GIL while it
works). sqlitedict's own writer thread did this before: each statement and commit was a
hand-over to that thread and back, ~0.15 ms apiece, more than the commit itself.

The connection commits at synchronous=NORMAL (WAL: a commit survives the process, not a power
cut) and a durable commit then fsyncs the WAL itself, outside the lock: WAL commits are
sequential, so one fsync makes every commit before it durable too (group fsync), other threads
go on writing meanwhile, and a write that may be lost to a power cut (a pure task's start) skips
the fsync.
"""

import errno
import functools
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pi_render.errors import DiskFull, StorageError


def is_disk_full(exc: BaseException) -> bool:
    """By its code: SQLITE_FULL (and its extended codes), ENOSPC, or our own DiskFull. The text
    is a last resort for errors that lost their code on the way."""
    if isinstance(exc, DiskFull):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_FULL)
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "database or disk is full" in str(exc)


def storage_error(exc: BaseException) -> StorageError:
    if is_disk_full(exc):
        return DiskFull(f"the data disk is full ({exc}): free some space; that write was undone")
    return StorageError(f"the data store could not write ({exc}); that write was undone")


F = TypeVar("F", bound=Callable[..., Any])


def translated(method: F) -> F:
    """The backends' promise: above them only StorageError (and DiskFull) is ever seen."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:  # not the context manager: this wraps every queue call on the workers' hot path
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    return cast(F, wrapper)


class LostTickets:
    """Ranges of tickets whose writes were rolled back (merged: failures come in runs)."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []

    def add(self, first: int, last: int) -> None:
        if last < first:
            return
        if self.ranges and first <= self.ranges[-1][1] + 1:
            self.ranges[-1][1] = max(self.ranges[-1][1], last)
        else:
            self.ranges.append([first, last])

    def overlaps(self, first: int, last: int) -> bool:
        return any(a <= last and first <= b for a, b in self.ranges)

    def __contains__(self, ticket: int) -> bool:
        if not self.ranges:
            return False  # nearly always: asked twice per commit
        return any(first <= ticket <= last for first, last in reversed(self.ranges))


class TicketedWriter:
    """One connection's writes, in ticket order; commits and fsyncs shared (group commit)."""

    def __init__(self, conn: sqlite3.Connection, sync: Callable[[], None]) -> None:
        self._conn = conn  # isolation_level=None: the transactions are ours
        self._sync = sync  # fsyncs the WAL: what is committed by then is on disk after it
        self._order = threading.Lock()  # the connection, the tickets and the open transaction
        self._syncing = threading.Lock()  # one fsync at a time; who waited may need none
        self._staged = 0  # the last ticket written
        self._open_from = 1  # the first ticket of the open transaction
        self._committed_to = 0  # tickets up to here are committed, unless lost
        self._synced_to = 0  # tickets up to here are fsynced
        self._lost = LostTickets()
        self._loss: StorageError = StorageError("no write was undone")
        self._sync_failure: StorageError | None = None  # once set, nothing is vouched for again
        self._mine = threading.local()  # this thread's first and last ticket since its commit

    def write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement in the open transaction; this thread's next `commit` makes it
        durable or raises."""
        self.write_many([(sql, params)])

    def write_many(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements in the open transaction with no other thread's COMMIT between them:
        they are committed, or undone, together."""
        with self._order:
            try:
                if not self._conn.in_transaction:
                    self._conn.execute("BEGIN")
                for sql, params in statements:
                    self._conn.execute(sql, params)
            except sqlite3.Error as exc:
                self._undo(exc)
                raise storage_error(exc) from None
            self._staged += 1
            if not getattr(self._mine, "first", 0):
                self._mine.first = self._staged
            self._mine.ticket = self._staged

    def commit(self, durable: bool = True) -> None:
        """Block until this thread's writes are committed and, if `durable`, on disk (writers
        that wrote meanwhile share the commit and the fsync). Raises DiskFull or StorageError if
        they were undone, StorageError if the fsync failed (they may be on disk or not)."""
        ticket, first = getattr(self._mine, "ticket", 0), getattr(self._mine, "first", 0)
        self._mine.ticket = self._mine.first = 0
        if ticket == 0:
            return
        with self._order:
            if ticket not in self._lost and ticket > self._committed_to:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._undo(exc)
                else:
                    self._committed_to = self._staged
                    self._open_from = self._staged + 1
            if self._lost.overlaps(first, ticket):  # any of this thread's writes since its last
                raise type(self._loss)(str(self._loss))  # commit: another's COMMIT may split them
            upto = self._committed_to
        if durable:
            self._sync_to(ticket, upto)

    def _sync_to(self, ticket: int, upto: int) -> None:
        with self._syncing:
            if self._sync_failure is not None:
                raise StorageError(str(self._sync_failure))
            if ticket <= self._synced_to:
                return  # an fsync that began after this ticket's commit covered it
            with self._order:
                upto = max(upto, self._committed_to)  # committed by now: the fsync covers it
            try:
                self._sync()
            except OSError as exc:
                # the kernel reports a lost write-back once: a later sync that succeeds proves
                # nothing about what this one covered, so nothing is vouched for from now on
                self._sync_failure = StorageError(
                    f"the data disk failed to sync ({exc}): writes since the daemon started are "
                    f"committed but may not survive a power cut; check the disk, then restart "
                    f"pi-render"
                )
                raise StorageError(str(self._sync_failure)) from None
            self._synced_to = max(self._synced_to, upto)

    def _undo(self, exc: BaseException) -> None:
        """Roll back the open transaction and count its tickets lost. Called holding `_order`."""
        self._lost.add(self._open_from, self._staged)
        self._open_from = self._staged + 1
        self._loss = exc if isinstance(exc, StorageError) else storage_error(exc)
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled it back itself (it does on a full disk or an I/O error)

    def select_one(self, sql: str) -> Any:
        """A read on the writer's own connection (a pragma), in order with the writes."""
        with self._order:
            try:
                return self._conn.execute(sql).fetchone()
            except sqlite3.Error as exc:
                raise storage_error(exc) from None

    def close(self) -> None:
        """Commit what is open (every writer commits its own; this is a last resort), close."""
        with self._order:
            try:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
            finally:
                self._conn.close()
