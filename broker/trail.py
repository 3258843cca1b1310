"""The dispatch trail: ``dispatch_comms.jsonl`` in the workspace (DESIGN §7).

One JSON object per line, one line per message committed in ``#dispatch`` and per decision
(approve or deny) on a tier-2 post in any channel that is not private — a private channel's
decisions stay in the database, since the trail sits in the workspace that every turn sees.

The database is the truth and the trail follows it, append-only, never rewritten:

- every line carries its message's ``seq``, and lines are in ``seq`` order; an append writes
  only seqs past the last whole line in the file, so nothing appears twice;
- the broker appends after each commit (:meth:`Trail.record`, given the batch's events) and
  catches up at start and at stop (:meth:`Trail.catch_up`), reading the database from the last
  seq in the file, so nothing committed is missing after a crash;
- a kill -9 mid-write leaves at most a torn last line: readers skip any line that is not one
  whole object (:func:`parse_line`), and the next append first ends it with a newline, so its
  own lines start fresh.

Writing the trail never fails a request: the commit has happened, and an error is logged and
repaired by the next catch-up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import structlog

from chatbox.bus import wire
from chatbox.runtime.workspace import TRAIL_FILE

log = structlog.get_logger("broker")

DISPATCH = "#dispatch"
CHUNK = 500  # messages read from the database per append while catching up
_TAIL_BLOCK = 64 * 1024
_json = msgspec.json.Encoder()

_FIELDS = ("seq", "channel", "author", "kind", "title", "type", "tier", "in_reply_to", "chain",
           "hop", "turn", "body", "created_at")
_COLS = ", ".join(f"m.{f}" for f in _FIELDS) + ", a.seq, a.approve, a.decided_by, a.reason"
# Two indexed halves, so a catch-up costs what it appends, not the messages in between:
# #dispatch by messages_channel, decisions by the approvals table (one row per decision).
_SELECT = (
    f"SELECT {_COLS} FROM messages m "
    "LEFT JOIN approvals a ON a.seq = m.in_reply_to AND a.decision_seq = m.seq "
    "WHERE m.channel = :dispatch AND m.seq > :after "
    f"UNION ALL SELECT {_COLS} FROM approvals a JOIN messages m ON m.seq = a.decision_seq "
    "JOIN channels c ON c.name = m.channel WHERE a.decision_seq > :after "
    "AND m.channel != :dispatch AND c.kind NOT IN ('private', 'canary') "
    "ORDER BY 1 LIMIT :limit")


def trail_path(workspace_root: Path) -> Path:
    return Path(workspace_root) / TRAIL_FILE


def entry(row: tuple) -> dict[str, Any]:
    """One trail object from a row of ``_SELECT``."""
    obj = dict(zip(_FIELDS, row[:len(_FIELDS)]))
    post, approve, decided_by, reason = row[len(_FIELDS):]
    if obj["kind"] == "decision":
        obj.update(event="decision", post=post if post is not None else obj["in_reply_to"],
                   decision=None if approve is None else ("approve" if approve else "deny"),
                   decided_by=decided_by, reason=reason)
    else:
        obj["event"] = "post"
    return obj


def encode(obj: dict[str, Any]) -> bytes:
    """One line: compact JSON (every newline and control character in a text escaped, so
    nothing splits it) and its newline."""
    return _json.encode(obj) + b"\n"


def parse_line(line: bytes) -> dict[str, Any] | None:
    """The object of one whole line (with or without its newline), or None for a torn or
    foreign one."""
    try:
        obj = json.loads(line)
    except ValueError:  # (UnicodeDecodeError is one)
        return None
    if not isinstance(obj, dict) or type(obj.get("seq")) is not int:
        return None
    return obj


def read_trail(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole entry of the trail, in order; torn lines, and a last line without its
    newline (torn, or still being written), are skipped."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if line.endswith(b"\n"):
                obj = parse_line(line)
                if obj is not None:
                    yield obj


def last_seq(path: Path) -> int:
    """The seq of the last whole entry in the file (0 if none), read from its end backwards.

    A last line that is one whole object but lacks its newline counts: only the broker writes
    the trail, so it is not being written, and the next append ends it with its newline."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return 0
    with fh:
        end = fh.seek(0, os.SEEK_END)
        tail = b""
        while end > 0:
            start = max(0, end - _TAIL_BLOCK)
            fh.seek(start)
            tail = fh.read(end - start) + tail
            end = start
            lines = tail.split(b"\n")
            for line in reversed(lines[1:] if start else lines):  # lines[0] may be cut short
                obj = parse_line(line)
                if obj is not None:
                    return obj["seq"]
            tail = lines[0]  # cut short, or whole: the next block tells
    return 0


class Trail:
    """The broker's writer of the trail; the broker's one thread owns it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.last: int | None = None  # the last seq on file; None: read it from the file

    def catch_up(self, db: Any) -> int:
        """Append every trail message committed past the last seq on file; how many."""
        appended = 0
        try:
            if self.last is None:
                self._open().close()  # there from the start (0600): a sandbox can bind it read-only
                self.last = last_seq(self.path)
                newest = db.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
                if newest < self.last:  # a database older than its trail (a restored backup)
                    log.warning("trail_ahead", path=str(self.path), trail_seq=self.last,
                                db_seq=newest)
            while True:
                rows = db.execute(_SELECT, {"dispatch": DISPATCH, "after": self.last,
                                           "limit": CHUNK}).fetchall()
                if rows:
                    self._append([entry(r) for r in rows])
                    appended += len(rows)
                if len(rows) < CHUNK:
                    return appended
        except OSError as exc:
            self.last = None  # part may be on file: the next catch-up reads where it ended
            log.error("trail_failed", path=str(self.path), error=exc.strerror or str(exc))
            return appended

    def record(self, db: Any, events: Iterable[tuple[bytes, wire.Event]]) -> int:
        """After a commit: append what the batch committed, if any of it belongs here."""
        if any(isinstance(e, wire.MessageEvent) and (e.channel == DISPATCH or
                                                     e.kind == "decision") for _, e in events):
            return self.catch_up(db)
        return 0

    def _append(self, objs: list[dict[str, Any]]) -> None:
        data = b"".join(encode(o) for o in objs)
        with self._open() as fh:
            fd = fh.fileno()
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a torn last line, ended here: ours start fresh
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        self.last = objs[-1]["seq"]

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "rb+", buffering=0)
