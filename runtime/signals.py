"""Stop signals for a long-running process: handlers only record, the loop acts.

``StopSignals`` counts INT and TERM (and SIGBREAK where Windows has it) and makes them readable
on a file descriptor that a ``poll()`` loop can watch, so a blocked loop wakes up at once. The
first signal asks for a graceful stop; a second one means "now".
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK")
                     if hasattr(signal, name))


class StopSignals:
    def __init__(self) -> None:
        self.count = 0
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[StopSignals]:
        """Stop signals recorded for the ``with`` block (a command that waits, as ``tail``
        does), then their default handling back."""
        signals = cls()
        signals.install()
        try:
            yield signals
        finally:
            signals.uninstall()
            signals.close()

    def install(self) -> None:
        signal.set_wakeup_fd(self._w.fileno())
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._record)

    def uninstall(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    def _record(self, signum: int, frame: object) -> None:
        self.count += 1

    @property
    def stopping(self) -> bool:
        """At least one stop signal: finish what is running, then stop."""
        return self.count > 0

    @property
    def now(self) -> bool:
        """A second stop signal: stop at once."""
        return self.count >= 2

    def fileno(self) -> int:
        """Readable when a signal arrived (drain it with ``drain``)."""
        return self._r.fileno()

    def drain(self) -> None:
        try:
            while self._r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._r.close()
        self._w.close()
