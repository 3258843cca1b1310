"""Noticing that the broker's socket files were removed while it runs, without a timer.

A removed ``ipc://`` socket file leaves the broker serving the clients already connected and
unreachable for every new one ("no socket at …"). On Linux an inotify descriptor on each
socket file's directory becomes readable when a file there is deleted or moved away; the
request loop polls it beside its sockets, and then asks which of its socket files are gone,
so the loop rebinds them. Elsewhere (no inotify) the loop asks after each batch instead: the
clients still connected, a supervisor among them, keep it asking.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

IN_MOVED_FROM = 0x040
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_MASK = IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "inotify_init1") else None


class SocketWatch:
    """Which of ``paths`` (socket files) are missing, and a descriptor that says when to ask."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        self._fd: int | None = None
        libc = _libc() if self.paths else None
        if libc is None:
            return
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return
        for directory in {p.parent for p in self.paths}:
            if libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
                os.close(fd)
                return
        self._fd = fd

    def fileno(self) -> int | None:
        """A descriptor readable after a removal in a watched directory; None without inotify
        (then :meth:`missing` is to be asked after every batch)."""
        return self._fd

    def missing(self) -> list[Path]:
        """The socket files that are gone (the pending notifications consumed first)."""
        if self._fd is not None:
            try:
                while os.read(self._fd, 65536):
                    pass
            except BlockingIOError:
                pass
        return [p for p in self.paths if not p.exists()]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
