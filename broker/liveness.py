"""Knowing at once when a supervisor dies, without a timer: a pidfd per local supervisor.

A supervisor's Hello names its pid and host. On this host the broker opens a pidfd for it
(Linux ≥ 5.3), which the request loop polls beside its sockets: it becomes readable the moment
the process exits. A supervisor on another host (or a platform without pidfds) is noticed by its
fresh Hello when it restarts.
"""

from __future__ import annotations

import os
import socket


class Liveness:
    def __init__(self) -> None:
        self._fd_of: dict[str, int] = {}   # supervisor id -> pidfd
        self._sup_of: dict[int, str] = {}  # pidfd -> supervisor id
        self.host = socket.gethostname()

    def watch(self, supervisor: str, pid: int | None, host: str | None) -> None:
        if supervisor in self._fd_of or pid is None or host != self.host:
            return
        if not hasattr(os, "pidfd_open"):  # pragma: no cover - not Linux
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        self._fd_of[supervisor] = fd
        self._sup_of[fd] = supervisor

    def is_alive(self, supervisor: str) -> bool | None:
        """True while a watched supervisor runs; None when it cannot be watched from here."""
        return True if supervisor in self._fd_of else None

    def fds(self) -> list[int]:
        return list(self._sup_of)

    def exited(self, fd: int) -> str | None:
        """Forget a pidfd that became readable; return whose it was."""
        sup = self._sup_of.pop(fd, None)
        if sup is not None:
            del self._fd_of[sup]
            os.close(fd)
        return sup

    def close(self) -> None:
        for fd in list(self._sup_of):
            os.close(fd)
        self._sup_of.clear()
        self._fd_of.clear()
