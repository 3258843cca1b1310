"""Channel events for the MCP adapter's blocking tools (``listen``, ``wait``).

One thread owns the SUB socket (zmq sockets belong to one thread): it blocks in ``poll()`` on the
socket and on a wake-up socketpair, applies topic changes, and counts, per channel, the message
events of other authors. A blocking tool subscribes first (``ensure``), takes a ``snapshot`` of the
counts, reads through the broker, and only then waits for a count to move past its snapshot — so
a message that commits between the read and the wait is never slept through. Events are hints:
the tool reads the messages themselves with an authenticated request. No timer anywhere.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable

import structlog
import zmq

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.endpoints import Endpoints
from chatbox.bus.errors import BusError

log = structlog.get_logger("mcp")

APPLY_TIMEOUT = 2.0  # bound on waiting for the event thread to apply a topic change


class EventHub:
    def __init__(self, endpoints: Endpoints, token: str, me: str):
        self._endpoints = endpoints
        self._token = token
        self._me = me
        self._cond = threading.Condition()
        self._counts: dict[str, int] = {}
        self._wanted: set[str] = set()
        self._applied: set[str] = set()
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="mcp-events", daemon=True)

    # ------------------------------------------------------------------ tool side
    def start(self) -> None:
        self._thread.start()

    def ensure(self, channels: Iterable[str]) -> None:
        """Follow these channels' events; return once the SUB socket has subscribed."""
        channels = set(channels)
        with self._cond:
            if channels <= self._wanted and channels <= self._applied:
                return
            self._wanted |= channels
        self._poke()
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or channels <= self._applied,
                                APPLY_TIMEOUT)

    def drop(self, channel: str) -> None:
        with self._cond:
            self._wanted.discard(channel)
        self._poke()

    def snapshot(self, channels: Iterable[str]) -> dict[str, int]:
        with self._cond:
            return {c: self._counts.get(c, 0) for c in channels}

    def wait_for(self, snapshot: dict[str, int], deadline: float) -> bool:
        """Block until a channel of ``snapshot`` has a new event from another author.

        True when one arrived, False when ``deadline`` (a ``time.monotonic()``) passed first.
        """
        def moved() -> bool:
            return self._stopping or any(self._counts.get(c, 0) > n for c, n in snapshot.items())

        with self._cond:
            return self._cond.wait_for(moved, max(0.0, deadline - time.monotonic())) \
                and not self._stopping

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._poke()
        if self._thread.is_alive():
            self._thread.join(APPLY_TIMEOUT)
        self._wake_r.close()
        self._wake_w.close()

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a poke is pending anyway) or closed (stopping)

    # ------------------------------------------------------------------ event thread
    def _run(self) -> None:
        client = BusClient(self._endpoints, self._token)
        sub = client.sub_socket
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        try:
            while True:
                self._apply(sub)
                if self._stopping:
                    return
                ready = dict(poller.poll())
                if self._wake_r.fileno() in ready:
                    self._wake_r.recv(4096)
                if sub in ready:
                    self._drain(client, sub)
        except zmq.ZMQError as exc:  # pragma: no cover - context terminated under us
            log.error("events_failed", error=str(exc))
        finally:
            client.close()
            with self._cond:
                self._stopping = True
                self._cond.notify_all()

    def _apply(self, sub: zmq.Socket) -> None:
        with self._cond:
            for channel in self._wanted - self._applied:
                sub.setsockopt(zmq.SUBSCRIBE, wire.channel_topic(channel))
            for channel in self._applied - self._wanted:
                sub.setsockopt(zmq.UNSUBSCRIBE, wire.channel_topic(channel))
            self._applied = set(self._wanted)
            self._cond.notify_all()

    def _drain(self, client: BusClient, sub: zmq.Socket) -> None:
        moved = False
        while sub.poll(0, zmq.POLLIN):
            try:
                _, event = client.read_event()
            except BusError as exc:
                log.warning("bad_event", error=str(exc))
                continue
            if isinstance(event, wire.MessageEvent) and event.author != self._me:
                with self._cond:
                    self._counts[event.channel] = self._counts.get(event.channel, 0) + 1
                moved = True
        if moved:
            with self._cond:
                self._cond.notify_all()
