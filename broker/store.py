"""SQLite through apsw: opening the database, running the schema's migrations
(``broker/schema.py``), and the one transaction helper.

Only the broker process opens the database. Every write goes through :meth:`Store.write`, an
``IMMEDIATE`` transaction; a batch of requests shares one transaction (group commit) with a
savepoint per request, so each request is all-or-nothing and the batch costs one fsync.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import apsw
import apsw.bestpractice

from chatbox.broker.checkpoint import Checkpointer
from chatbox.broker.errors import StoreError
from chatbox.broker.schema import MIGRATIONS, SCHEMA_VERSION


# Index new messages once this many are waiting (search() catches up first, so it stays exact).
FTS_CHUNK = 256
# How long an idempotency key is remembered: longer than any client's retry deadline.
REQUEST_TTL = 24 * 3600.0

_bestpractice_applied = False


def _apply_bestpractice() -> None:
    global _bestpractice_applied
    if not _bestpractice_applied:
        apsw.bestpractice.apply(apsw.bestpractice.recommended)
        apsw.connection_hooks.append(_stable_plans)
        _bestpractice_applied = True


def _stable_plans(db: apsw.Connection) -> None:
    """Plans that do not depend on the values bound to a statement (SQLite's query planner
    stability guarantee). Without it, once ``PRAGMA optimize`` (run at every open) has written
    ``sqlite_stat4``, every new value bound to a parameter compared with an indexed column
    expires the statement, and its next run prepares it again: 10-40 µs a statement, on every
    statement of every request. Our plans are index-driven whatever the values
    (``tests/unit/test_scale.py`` holds them to that after an ANALYZE)."""
    db.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)


def index_messages(db: apsw.Connection, at_least: int = 1) -> None:
    """Feed the full-text index every message past its watermark, if ``at_least`` are waiting.

    Messages are never edited, so indexing once, late, in the same transaction is exact.
    """
    indexed = db.execute("SELECT indexed FROM fts_state").get
    newest = db.execute("SELECT coalesce(max(seq), 0) FROM messages").get
    if newest - indexed >= at_least:
        db.execute("INSERT INTO messages_fts(rowid, title, body) SELECT seq, title, body "
                   "FROM messages WHERE seq > ? ORDER BY seq", (indexed,))
        db.execute("UPDATE fts_state SET indexed = ?", (newest,))


_SQLITE_HEADER = b"SQLite format 3\x00"


def _require_database_file(path: Path) -> None:
    """Look at the file before SQLite does: opening it would write a fresh header into an empty
    one, and fail noisily on a foreign one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        raise StoreError(f"no database at {path}; run `chatbox init`") from None
    except OSError as exc:
        raise StoreError(f"cannot read database {path}: {exc.strerror}") from None
    if head != _SQLITE_HEADER:
        what = "empty or truncated" if len(head) < len(_SQLITE_HEADER) and \
            _SQLITE_HEADER.startswith(head) else "not a SQLite file"
        raise StoreError(
            f"database {path} is {what} ({path.stat().st_size} bytes); refusing to start on it, "
            "which would lose every message and principal: restore it from a backup, or move "
            f"{path.parent} away and run `chatbox init` to begin anew")


def is_disk_full(exc: BaseException | None) -> bool:
    """Is ``exc``, or an error it was raised from or during, SQLite's SQLITE_FULL?"""
    while exc is not None:
        if isinstance(exc, apsw.FullError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _out_of_space(path: Path, exc: apsw.Error) -> bool:
    """Did opening ``path`` fail for want of space? SQLite says SQLITE_FULL for a page it could
    not write, and only "disk I/O error" for the WAL index it could not grow: then the file
    system's free space decides."""
    if is_disk_full(exc):
        return True
    if not isinstance(exc, apsw.IOError):
        return False
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < _WAL_INDEX_BYTES


_WAL_INDEX_BYTES = 32768  # what SQLite writes first when it opens a WAL database


class Store:
    """The broker's one connection. Not thread-safe: the broker's request loop owns it."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", existing: bool = False):
        """``existing``: the database must already hold ChatBox's schema (the broker's case:
        ``chatbox init`` made it). An empty, truncated or foreign file is then refused, never
        silently initialised — that would lose every message and principal."""
        _apply_bestpractice()
        self.path = path
        if existing:
            _require_database_file(path)
        try:
            self.db = apsw.Connection(str(path))
        except apsw.Error as exc:  # opening writes: WAL's index (-shm), a crash's recovery
            if _out_of_space(path, exc):
                raise StoreError(f"cannot open database {path}: the disk holding {path.parent} "
                                 f"is full ({exc}); free space there, then start the broker "
                                 "again") from None
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        self._depth = 0
        self.checkpointer: Checkpointer | None = None
        self._savepoints = 0
        try:
            try:
                version = self.db.execute("PRAGMA user_version").get
                tables = self.db.execute("SELECT count(*) FROM sqlite_master").get
            except apsw.Error as exc:
                raise StoreError(f"database {path} is not a ChatBox database ({exc}); "
                                 "restore it from a backup") from None
            if existing and version == 0:
                what = "another program's" if tables else "empty or truncated"
                raise StoreError(
                    f"database {path} holds no ChatBox schema ({what}, "
                    f"{path.stat().st_size} bytes); refusing to start on it, which would lose "
                    "every message and principal: restore it from a backup, or move "
                    f"{path.parent} away and run `chatbox init` to begin anew")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} has schema version {version}, newer than this "
                    f"chatbox ({SCHEMA_VERSION}); upgrade chatbox")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.migrate(version)
        except BaseException:
            self.db.close()
            raise

    def migrate(self, version: int) -> None:
        for i in range(version, SCHEMA_VERSION):
            with self.write():
                self.db.execute(MIGRATIONS[i])
                self.db.execute(f"PRAGMA user_version={i + 1}")

    @contextlib.contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; nested calls become savepoints."""
        if self._depth:
            with self.savepoint():
                yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            self.db.execute("COMMIT")
        except BaseException:
            # a failed COMMIT (a full disk, an I/O error) may leave the transaction open:
            # end it, or every later BEGIN fails and the broker is wedged
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def before_commit(self) -> None:
        """Housekeeping that belongs in the open batch transaction: index a full chunk."""
        index_messages(self.db, FTS_CHUNK)

    def prune_requests(self, now: float, limit: int = 1000) -> int:
        """Forget idempotency keys older than REQUEST_TTL, a bounded number at a time."""
        self.db.execute(
            "DELETE FROM requests WHERE (principal, key) IN (SELECT principal, key FROM requests "
            "WHERE created_at < ? ORDER BY created_at LIMIT ?)", (now - REQUEST_TTL, limit))
        return self.db.changes()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[apsw.Connection]:
        """A savepoint inside the open transaction: all of the block, or none of it."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.db.execute(f"SAVEPOINT {name}")
        try:
            yield self.db
        except BaseException:
            self.db.execute(f"ROLLBACK TO {name}; RELEASE {name}")
            raise
        finally:
            self._savepoints -= 1
        self.db.execute(f"RELEASE {name}")

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def checkpoint_in_background(self) -> Checkpointer:
        """From now on the write-ahead log is checkpointed by a thread, never in a commit
        (``broker/checkpoint.py``); :meth:`close` stops it."""
        self.checkpointer = Checkpointer(self.path)
        self.db.set_wal_hook(self.checkpointer.hook)
        return self.checkpointer

    def idle(self) -> None:
        """The broker has no request to answer: housekeeping that would otherwise delay one."""
        if self.checkpointer is not None and not self.in_transaction:
            self.checkpointer.idle(self.db)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.db.set_wal_hook(None)
            self.checkpointer.close()
            self.checkpointer = None
        self.db.close()
