"""Writes through sqlitedict's writer thread that neither hang nor vanish when the disk refuses
them.

sqlitedict sends COMMIT from its own thread and, when COMMIT fails, that thread dies and every
later call waits forever; and a failed statement's error waits in one slot for whichever thread
calls next. So COMMIT is sent as a statement, and every write carries a ticket: a failure undoes
the open transaction (SAVEPOINT + ROLLBACK, which never finds "no transaction") and marks the
tickets it covered as lost, and each writer's `commit` says whether *its* ticket is on disk. When
a failure's cause is uncertain (another thread took the error from the shared slot while a
COMMIT was on its way), the COMMIT counts as failed: a writer may hear "lost" of a write that is
on disk, never "durable" of one that is not.
"""

import errno
import functools
import sqlite3
import threading
from collections.abc import Callable
from queue import Queue
from typing import Any, TypeVar, cast

from sqlitedict import _RESPONSE_NO_MORE

from pi_render.errors import DiskFull, StorageError


def is_disk_full(exc: BaseException) -> bool:
    """By its code: SQLITE_FULL (and its extended codes), ENOSPC, or our own DiskFull. The text
    is a last resort for errors that lost their code on the way (sqlitedict re-raises some)."""
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

    def __contains__(self, ticket: int) -> bool:
        return any(first <= ticket <= last for first, last in reversed(self.ranges))


class TicketedWriter:
    """Hands statements to one sqlitedict connection in ticket order and commits them."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn  # sqlitedict's SqliteMultithread
        self._order = threading.Lock()  # statements reach the writer thread in ticket order
        self._committing = threading.Lock()  # one COMMIT in flight at a time
        self._staged = 0  # the last ticket handed over
        self._open_from = 1  # the first ticket of the open transaction
        self._durable_to = 0  # tickets up to here are on disk, unless lost
        self._lost = LostTickets()
        self._undos = 0
        self._loss: StorageError = StorageError("no write was undone")
        self._mine = threading.local()  # this thread's last ticket

    def write(self, hand_over: Callable[[], None]) -> None:
        """Hand one statement over; this thread's next `commit` makes it durable or raises."""
        with self._order:
            try:
                hand_over()  # raises only an earlier statement's error, before handing over
            except sqlite3.Error as exc:
                self._undo(exc)
                raise storage_error(exc) from None
            self._staged += 1
            self._mine.ticket = self._staged

    def commit(self) -> None:
        """Block until this thread's writes are on disk (writers that staged meanwhile share the
        fsync: group commit). Raises DiskFull or StorageError if they were undone."""
        ticket = getattr(self._mine, "ticket", 0)
        self._mine.ticket = 0
        if ticket == 0:
            return
        with self._committing:
            if ticket not in self._lost and ticket > self._durable_to:
                self._commit_open()
        if ticket in self._lost:
            raise type(self._loss)(str(self._loss))

    def _commit_open(self) -> None:
        done: Queue[object] = Queue()
        with self._order:
            first, last, undos = self._open_from, self._staged, self._undos
            self._open_from = last + 1
            try:
                self._conn.execute("COMMIT", None, done)
            except sqlite3.Error as exc:  # an earlier statement failed: the COMMIT never went
                self._open_from = first
                self._undo(exc)
                return
        failure: BaseException | None = None
        try:
            while done.get() != _RESPONSE_NO_MORE:
                pass
            self._conn.check_raise_error()
        except sqlite3.Error as exc:
            failure = exc
        with self._order:
            if failure is None and self._undos != undos:
                failure = self._loss  # someone took an error meanwhile: maybe this COMMIT's
            if failure is not None:
                self._lost.add(first, last)
                self._undo(failure)
                return
            self._durable_to = max(self._durable_to, last)

    def _undo(self, exc: BaseException) -> None:
        """Roll back the open transaction and count its tickets lost. Called holding `_order`."""
        self._lost.add(self._open_from, self._staged)
        self._open_from = self._staged + 1
        self._undos += 1
        self._loss = exc if isinstance(exc, StorageError) else storage_error(exc)
        for statement in ("SAVEPOINT pi_render_undo", "ROLLBACK"):
            self._hand_over_anyway(statement)

    def _hand_over_anyway(self, statement: str) -> None:
        """An error waiting in sqlitedict's slot comes from a statement this rollback covers;
        raising it clears the slot, so the second try hands the statement over."""
        try:
            self._conn.execute(statement)
        except sqlite3.Error:
            self._conn.execute(statement)

    def select_one(self, sql: str) -> Any:
        """A read on the writer's own connection (a pragma), in order with the writes."""
        with self._order:
            try:
                return self._conn.select_one(sql)
            except sqlite3.Error as exc:
                self._undo(exc)
                raise storage_error(exc) from None
