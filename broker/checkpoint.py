"""WAL checkpoints in a thread of their own, off the request loop.

SQLite copies its write-ahead log back into the database (a checkpoint) once the log holds 1000
pages, by default inside the commit that crossed the mark: at a million messages that commit took
5–15 ms longer, and those were the claims past the 5 ms goal. So the broker's connection gets a
WAL hook instead, which turns SQLite's own automatic checkpoints off: after each commit it hears
how many pages the log holds, and each time it has grown by ``PAGES`` it wakes this thread. The
thread checkpoints on a connection of its own in PASSIVE mode, which neither waits for nor
blocks the loop's reads and writes (apsw lets go of the interpreter while SQLite works). No
timer: only a growing log wakes it. The log starts again from its beginning at the first write
after a checkpoint that caught up with it; under commits back to back that may not happen (the
next write began while the checkpoint ran), and the log keeps growing: it is checkpointed
again after ``PAGES`` more, never after every commit — each checkpoint ends with an fsync of the
database, and one after every commit (as it was) doubled the fsyncs the loop's commits wait
behind. Past ``LIMIT`` pages the commit checkpoints itself, as SQLite would have (the log stays
bounded, and starts again). A checkpoint that fails (a full disk) is logged once and tried
again after the log has grown by ``PAGES`` more; the log only grows meanwhile, nothing is lost.
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
        self.done = 0  # checkpoints run so far
        self._woken_at = 0  # the log's size when the hook last woke the thread (the loop's own)
        self._db = apsw.Connection(str(path))
        self._wake = threading.Event()
        self._stopping = False
        self._failing = False
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
            self._wake.set()
        return apsw.SQLITE_OK

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
                self.done += 1

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._db.close()
