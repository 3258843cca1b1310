"""Refusing new connections before the descriptors run out, instead of ending the broker.

Every connection costs the broker a descriptor, and libzmq ends the whole process (an assertion,
SIGABRT) when it cannot accept one for want of a descriptor (EMFILE on an ``ipc://`` listener).
So the broker keeps a reserve: the moment a connection is accepted on a descriptor numbered
within ``reserve`` of the limit (the kernel hands out the lowest free number, so every lower one
is in use), the gate closes — each ``ipc://`` socket file is moved aside, so new clients find no
socket and are refused, while every connected client keeps its connection. Once connections
have ended and a quarter of the reserve more is free again, the files are moved back. The
listen backlog is kept short, so the connections already queued when the gate closes fit in the
reserve (``reserve_for``). A ``tcp://`` listener is not gated (libzmq drops a connection it
cannot accept there).

The gate acts on the listeners' monitor events, which the request loop polls beside its
sockets: no timer.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
import zmq
import zmq.utils.monitor

from chatbox.bus.endpoints import ipc_path

log = structlog.get_logger("broker")

EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


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
    """Descriptors kept free: those the two listeners may still accept from their backlogs, the
    broker's own files, and an eighth of the limit beside — never half of a small one."""
    return min(max(2 * (backlog_for(limit) + 1) + 16, limit // 8), limit // 2)


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return 0


class Gate:
    """The connection gate over the listeners of ``bound`` ((endpoint, socket) pairs), which
    must be given ``prepare`` before they bind."""

    def __init__(self, bound: list[tuple[str, zmq.Socket]]):
        self.limit = descriptor_limit()
        self.reserve = reserve_for(self.limit)
        self.reopen_below = self.limit - self.reserve - max(self.reserve // 4, 1)
        ipc = [(path, sock) for endpoint, sock in bound if (path := ipc_path(endpoint))]
        self.paths = [path for path, _ in ipc]
        self.monitors = [sock.get_monitor_socket(EVENTS) for _, sock in ipc]
        self.closed = False

    @staticmethod
    def prepare(sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.BACKLOG, backlog_for(descriptor_limit()))

    def aside(self, path: Path) -> Path:
        return path.with_name(path.name + ".full")

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
        self.closed = True
        for path in self.paths:
            try:
                os.replace(path, self.aside(path))
            except OSError as exc:
                log.error("gate_failed", path=str(path), error=str(exc))
        log.warning("connections_refused", open=open_descriptors(), limit=self.limit,
                    reason="the broker is near its descriptor limit: new clients are refused "
                    "until connections end (raise LimitNOFILE / ulimit -n)")

    def open_gate(self) -> None:
        self.closed = False
        for path in self.paths:
            try:
                os.replace(self.aside(path), path)
            except OSError as exc:
                log.error("gate_failed", path=str(path), error=str(exc))
        log.info("connections_accepted", open=open_descriptors(), limit=self.limit)

    def close(self) -> None:
        """At stop: nothing left aside, the monitors closed."""
        for path in self.paths:
            self.aside(path).unlink(missing_ok=True)
        for monitor in self.monitors:
            monitor.close(linger=0)
