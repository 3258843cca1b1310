"""``chatbox tail --trail``: follow the dispatch trail, ``dispatch_comms.jsonl``, as it grows.

The trail is a file the broker appends to (``chatbox.broker.trail``), so following it needs no
broker: this reads the file, prints each whole entry, and blocks until the workspace directory
changes (inotify on Linux; elsewhere a short sleep between reads). A torn line — what a crash
mid-write leaves — is skipped with one line on stderr; a line still being written is waited
for. The trail is never rewritten: a file that shrinks or is replaced ends the follow, failed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import sys
import time
from pathlib import Path
from typing import IO, Any

from chatbox.broker import entry as broker
from chatbox.cli.output import INDENT, json_line, safe_block, safe_line, when
from chatbox.runtime.exits import Exit
from chatbox.runtime.signals import StopSignals
from chatbox.runtime.workspace import Workspace, WorkspaceError

POLL_SECONDS = 0.5  # only where inotify is missing
_IN_MODIFY, _IN_MOVED_TO, _IN_CREATE = 0x002, 0x080, 0x100
_TAIL_BLOCK = 64 * 1024


class Rewritten(Exception):
    """The trail shrank or was replaced: something other than the broker wrote it."""


def entry_line(obj: dict[str, Any]) -> str:
    """``2026-12-01 12:00:00 #12 #dispatch alice: title`` (and the body, indented), or
    ``… #13 #alerts bob approved #12: reason`` for a decision. Every text made safe."""
    head = (f"{when(obj.get('created_at'))} #{obj.get('seq')} {safe_line(obj.get('channel'))} "
            f"{safe_line(obj.get('author'))}")
    if obj.get("event") == "decision":
        verb = {"approve": "approved", "deny": "denied"}.get(obj.get("decision"), "decided")
        line = f"{head} {verb} #{obj.get('post')}"
        return f"{line}: {safe_block(obj['reason'])}" if obj.get("reason") else line
    if obj.get("title"):
        line = f"{head}: {safe_line(obj['title'])}"
        return f"{line}\n{INDENT}{safe_block(obj.get('body'))}" if obj.get("body") else line
    return f"{head}: {safe_block(obj.get('body'))}"


class Changes:
    """Wait for a change in one directory: inotify where the C library has it, else a sleep."""

    def __init__(self, directory: Path):
        self.fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        mask = _IN_MODIFY | _IN_MOVED_TO | _IN_CREATE
        if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
            os.close(fd)
            return
        self.fd = fd

    def wait(self, timeout: float | None = None, wake: int | None = None) -> None:
        """Until a change, ``timeout`` seconds, or the descriptor ``wake`` is readable."""
        woken = [] if wake is None else [wake]
        if self.fd < 0:
            select.select(woken, [], [], POLL_SECONDS if timeout is None
                          else min(timeout, POLL_SECONDS))
            return
        readable, _, _ = select.select([self.fd, *woken], [], [], timeout)
        if self.fd in readable:
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Reader:
    """The whole lines appended to the trail since the last read, as objects."""

    def __init__(self, path: Path, err: IO[str]):
        self.path, self.err = path, err
        self.fh: IO[bytes] | None = None
        self.partial = b""
        self.inode: tuple[int, int] | None = None

    def open(self, at_end: bool) -> bool:
        try:
            self.fh = open(self.path, "rb")
        except FileNotFoundError:
            return False
        st = os.fstat(self.fh.fileno())
        self.inode = (st.st_dev, st.st_ino)
        if at_end:  # from the end of the last whole line: what follows it is still coming
            start = max(0, st.st_size - _TAIL_BLOCK)
            self.fh.seek(start)
            block = self.fh.read()
            cut = block.rfind(b"\n")
            self.fh.seek(start + cut + 1 if cut >= 0 else st.st_size)
        return True

    def read(self, at_end: bool = False) -> list[dict[str, Any]]:
        if self.fh is None and not self.open(at_end):
            return []
        self._check_same_file()
        lines = (self.partial + self.fh.read()).split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            obj = broker.parse_trail_line(line)
            if obj is None:
                after = f" after #{out[-1]['seq']}" if out else ""
                print(f"chatbox: skipped a torn line of {self.path}{after} (a crash mid-write)",
                      file=self.err, flush=True)
            else:
                out.append(obj)
        return out

    def _check_same_file(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise Rewritten(f"{self.path} was removed") from None
        if (st.st_dev, st.st_ino) != self.inode or st.st_size < self.fh.tell():
            raise Rewritten(f"{self.path} was rewritten or replaced; the trail is append-only")

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def follow(path: Path, *, since: int | None = None, count: int | None = None,
           as_json: bool = False, out: IO[str] | None = None, err: IO[str] | None = None,
           timeout: float | None = None, signals: StopSignals | None = None) -> int:
    """Print the trail's entries after ``since`` (None: only those still to come), then each one
    as it is appended; return after ``count`` entries, when ``timeout`` seconds pass with
    nothing new (None: never), or at a stop signal of ``signals`` (whose descriptor the wait
    watches). Raises :class:`Rewritten`."""
    out, err = out or sys.stdout, err or sys.stderr
    changes = Changes(path.parent)  # watching before the first read: no append is missed
    reader = Reader(path, err)
    printed = 0
    at_end = since is None  # the first read only: a trail that appears later is all new
    try:
        while True:
            for obj in reader.read(at_end):
                if since is not None and obj["seq"] <= since:
                    continue
                print(json_line(obj) if as_json else entry_line(obj), file=out, flush=True)
                printed += 1
                if count is not None and printed >= count:
                    return printed
            if signals is not None and signals.stopping:
                return printed
            at_end = False
            started = time.monotonic()
            changes.wait(timeout, None if signals is None else signals.fileno())
            if timeout is not None and time.monotonic() - started >= timeout:
                return printed
    finally:
        changes.close()
        reader.close()


def cmd_trail(args: argparse.Namespace) -> int:
    """``chatbox tail --trail [--since SEQ] [--count N] [--json]``; no broker needed."""
    if getattr(args, "channels", None):
        print("chatbox: tail --trail follows the dispatch trail and takes no CHANNEL",
              file=sys.stderr)
        return Exit.USAGE
    try:
        ws = Workspace.find(getattr(args, "workspace", None))
        ws.require_data_dir()
        path = broker.trail_path(ws)
        with StopSignals.installed() as signals:  # before the line that says we follow
            if args.count is None:
                print(f"following {path}; Ctrl-C to stop", file=sys.stderr, flush=True)
            follow(path, since=args.since, count=args.count, as_json=args.json, signals=signals)
    except (WorkspaceError, Rewritten) as exc:
        print(f"chatbox: {exc}", file=sys.stderr)
        return Exit.FAILED
    except KeyboardInterrupt:
        return Exit.OK  # Ctrl-C is how a tail ends
    return Exit.OK
