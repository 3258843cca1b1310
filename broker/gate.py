"""Refusing new connections before the descriptors run out, instead of ending the broker.

Every connection costs the broker a descriptor, and libzmq ends the whole process (an assertion,
SIGABRT) when it cannot accept one for want of a descriptor (EMFILE on an ``ipc://`` listener).
So the broker keeps a reserve: the moment a connection is accepted on a descriptor numbered
within ``reserve`` of the limit (the kernel hands out the lowest free number, so every lower one
is in use), the gate closes — each ``ipc://`` socket file is moved aside, so new clients find no
socket and are refused, while every connected client keeps its connection. Once connections
have ended and an eighth of the reserve more is free again, the files are moved back. The
listen backlog is kept short, so the connections already queued when the gate closes fit in the
reserve (``reserve_for``). Below ``MINIMUM`` descriptors the broker does not start at all. A
``tcp://`` listener is not gated (libzmq drops a connection it cannot accept there).

The gate acts on the listeners' monitor events in a thread of its own, blocked on them (no
timer): libzmq's I/O thread accepts while the request loop works through a batch or waits for
the processor (a commit), so a gate read by that loop could let it accept past the reserve.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import structlog
import zmq
import zmq.utils.monitor

from chatbox.bus.endpoints import ipc_path

log = structlog.get_logger("broker")

EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED

MINIMUM = 128  # descriptors below which the broker does not start: the reserve would leave it
#                a handful of connections, and a crowd could outrun the gate


def too_few() -> str | None:
    """Why this process's descriptor limit is too low for a broker, or None."""
    limit = descriptor_limit()
    if limit >= MINIMUM:
        return None
    return (f"the descriptor limit is {limit}, below the {MINIMUM} a broker needs to keep a "
            "reserve and refuse connections safely: raise it (LimitNOFILE= in the unit, "
            "ulimit -n)")


def descriptor_limit() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows: no such limit to run into
        return 2**31
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def backlog_for(limit: int) -> int:
    """Connections queued per listener before the broker accepts them: up to 32, fewer under a
    small descriptor limit."""
    return max(1, min(32, limit // 64))


def reserve_for(limit: int) -> int:
    """Descriptors kept free: what the I/O thread may still accept before the gate's thread is
    scheduled to close it (tens of connections on a loaded machine), the backlogs, the
    broker's own files — at least 64 or an eighth of the limit, but never more than half."""
    return min(max(64, 2 * (backlog_for(limit) + 1) + 16, limit // 8), limit // 2)


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return 0


class Gate:
    """The connection gate over the listeners of ``bound`` ((endpoint, socket) pairs), which
    must be given ``prepare`` before they bind. :meth:`start` runs it; ``lock`` is held while
    it moves the socket files, and by whoever else acts on them (the rebinding of removed
    ones)."""

    def __init__(self, bound: list[tuple[str, zmq.Socket]]):
        self.limit = descriptor_limit()
        self.reserve = reserve_for(self.limit)
        self.reopen_below = self.limit - self.reserve - max(self.reserve // 8, 1)
        ipc = [(path, sock) for endpoint, sock in bound if (path := ipc_path(endpoint))]
        self.paths = [path for path, _ in ipc]
        self.monitors = [sock.get_monitor_socket(EVENTS) for _, sock in ipc]
        self.closed = False
        self.lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="descriptor-gate", daemon=True)

    @staticmethod
    def prepare(sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.BACKLOG, backlog_for(descriptor_limit()))

    def aside(self, path: Path) -> Path:
        return path.with_name(path.name + ".full")

    def start(self) -> None:
        """From here on the monitors belong to the gate's thread. A busy request loop hands it
        the interpreter within half a millisecond, not Python's default five: the I/O thread
        keeps accepting meanwhile."""
        sys.setswitchinterval(0.0005)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for monitor in self.monitors:
            poller.register(monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if self._wake_r in ready:
                return
            for monitor in self.monitors:
                if monitor in ready:
                    self.on_events(monitor)

    def on_events(self, monitor: zmq.Socket) -> None:
        """Read the monitor's events; close or open the gate as they say."""
        while monitor.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_ACCEPTED and not self.closed \
                    and event["value"] >= self.limit - self.reserve:
                self.close_gate()
            elif event["event"] == zmq.EVENT_DISCONNECTED and self.closed \
                    and open_descriptors() < self.reopen_below:
                self.open_gate()

    def close_gate(self) -> None:
        with self.lock:
            self.closed = True
            self._move(self.paths, [self.aside(path) for path in self.paths])
        log.warning("connections_refused", open=open_descriptors(), limit=self.limit,
                    reason="the broker is near its descriptor limit: new clients are refused "
                    "until connections end (raise LimitNOFILE / ulimit -n)")

    def open_gate(self) -> None:
        with self.lock:
            self._move([self.aside(path) for path in self.paths], self.paths)
            self.closed = False
        log.info("connections_accepted", open=open_descriptors(), limit=self.limit)

    @staticmethod
    def _move(sources: list[Path], targets: list[Path]) -> None:
        for source, target in zip(sources, targets):
            try:
                os.replace(source, target)
            except OSError as exc:
                log.error("gate_failed", path=str(source), error=str(exc))

    def close(self) -> None:
        """At stop: the thread ended, nothing left aside, the monitors closed."""
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        for path in self.paths:
            self.aside(path).unlink(missing_ok=True)
        for monitor in self.monitors:
            monitor.close(linger=0)
