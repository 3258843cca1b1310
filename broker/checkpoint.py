"""WAL checkpoints in a thread of their own, off the request loop.

SQLite copies its write-ahead log back into the database (a checkpoint) once the log holds 1000
pages, by default inside the commit that crossed the mark: at a million messages that commit took
5–15 ms longer, and those were the claims past the 5 ms goal. So the broker's connection gets a
WAL hook instead, which turns SQLite's own automatic checkpoints off: after each commit it hears
how many pages the log holds, and each time it has grown by ``PAGES`` it wakes this thread. The
thread checkpoints on a connection of its own in PASSIVE mode, which neither waits for nor
blocks the loop's reads and writes (apsw lets go of the interpreter while SQLite works). No
timer: only a growing log wakes it. Each checkpoint ends with an fsync of the database; one
after every commit (as it once was) doubled the fsyncs the loop's commits wait behind.

The log starts again from its beginning only at the first write that begins after a
checkpoint caught up with all of it, and under a steady load the thread's seldom does: the loop
commits while it copies. So the log grew on to ``LIMIT``, every commit making its file longer,
and a commit that makes the file longer costs half as much again as one that writes over what
the file holds (its fsync commits the file system's journal too: ext4, 8 pages, p50 0.46–0.53
against 0.32–0.35 ms, ``bench/wal_growth.py``). Now, once the thread is done, the loop copies
the few pages committed meanwhile itself, when it has nothing else to do (:meth:`idle`, called
before it waits for requests): its next commit starts the log again, and the file, about
``PAGES`` pages long after the first round since the broker started (SQLite deletes the log at
a clean stop), is written over from then on. Under commits with no pause between them the log
still grows to ``LIMIT`` pages, where the commit checkpoints itself, as SQLite would have (the
log stays bounded, and starts again). A checkpoint that fails (a full disk) is logged once and
tried again after the log has grown by ``PAGES`` more; the log only grows meanwhile, nothing is
lost.
"""

from __future__ import annotations

import threading
from pathlib import Path

import apsw
import structlog

log = structlog.get_logger("broker")

PAGES = 1000  # as SQLite's own default: a log of about 4 MiB
LIMIT = 8 * PAGES  # where a commit checkpoints itself


class Checkpointer:
    """Checkpoints of the database at ``path`` whenever :meth:`hook` (a WAL hook of the
    connection that writes) reports a log of ``pages`` pages or more."""

    def __init__(self, path: Path, pages: int = PAGES):
        self.pages = pages
        self.done = 0  # checkpoints the thread ran so far
        self.caught_up = 0  # and the loop, of what was committed while the thread's ran
        self._woken_at = 0  # the log's size when the hook last woke the thread (the loop's own)
        self._db = apsw.Connection(str(path))
        self._wake = threading.Event()
        self._stopping = False
        self._failing = False
        self._behind = False  # the thread has checkpointed, not what was committed meanwhile
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def hook(self, db: apsw.Connection, name: str, pages: int) -> int:
        if pages < self._woken_at:
            self._woken_at = 0  # the log started again from its beginning
        if pages >= LIMIT:
            try:
                db.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            except apsw.BusyError:
                pass  # the thread is at it
            except apsw.Error as exc:
                self._failed(exc)
        elif pages >= self._woken_at + self.pages:
            self._woken_at = pages
            self._behind = False
            self._wake.set()
        return apsw.SQLITE_OK

    def idle(self, db: apsw.Connection) -> None:
        """The loop (connection ``db``, no transaction open) has nothing to do: if the thread
        has checkpointed since it was last woken, copy what was committed while it ran, so that
        the next commit starts the log again from its beginning. Only the loop wakes the
        thread, so while the loop is here the thread is done, or still at its checkpoint (and
        this one is refused busy, harmlessly)."""
        if not self._behind:
            return
        self._behind = False
        try:
            db.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.BusyError:
            pass
        except apsw.Error as exc:
            self._failed(exc)
        else:
            self.caught_up += 1

    def _failed(self, exc: apsw.Error) -> None:
        if not self._failing:
            log.warning("checkpoint_failed", error=str(exc),
                        reason="the write-ahead log grows until a checkpoint succeeds")
        self._failing = True

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                self._db.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            except apsw.BusyError:
                pass  # a commit past the limit is at it
            except apsw.Error as exc:
                self._failed(exc)
            else:
                self._failing = False
                self._behind = True
                self.done += 1

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._db.close()
