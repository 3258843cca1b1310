"""The server's one event subscription, fanned out to every waiting request in the event loop.

One thread owns one SUB socket (a zmq socket belongs to one thread), subscribed to every
channel's and every agent's topic. It blocks in ``poll()`` on the socket and a wake-up
socketpair — no timer — and hands each batch of events to the event loop
(``call_soon_threadsafe``), where listeners (an SSE stream, a long-poll) receive them. A
thousand waiting clients cost one socket and one thread, not a thousand.

Events are hints, never content (``chatbox.bus.wire``): a listener that sees a message event
fetches the message itself, with its own caller's token, so the ACL is the broker's. The SUB
side is live at the broker only once a ``Sync`` of ours has come back (the slow joiner); the
first request that needs events makes sure of that with its own caller's token
(:meth:`Hub.ensure_live`) — the server holds no token of its own.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable

import structlog
import zmq

from chatbox.bus import wire
from chatbox.bus.client import client_socket
from chatbox.bus.endpoints import Endpoints

log = structlog.get_logger("http")

TOPICS = (b"chan/", b"agent/", b"sync/")
RCVHWM = 100_000   # events queued in the SUB socket before zmq drops (a burst of posts)
SYNC_TIMEOUT = 3.0


class Listener:
    """Receives every event in the loop; ``push`` must not block."""

    def push(self, event: wire.Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Queue(Listener):
    """A bounded queue of events for one stream; ``overflowed`` once it could not keep up
    (the stream then ends, and its client resumes with Last-Event-ID)."""

    def __init__(self, size: int = 10_000):
        self.queue: asyncio.Queue[wire.Event | None] = asyncio.Queue(size)
        self.overflowed = False

    def push(self, event: wire.Event | None) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def close(self) -> None:
        """End the stream: its reader gets None (or finds it overflowed)."""
        self.push(None)


class Signal(Listener):
    """Set when an event that ``wanted`` accepts arrives (a long-poll's wake-up)."""

    def __init__(self, wanted: Callable[[wire.Event], bool]):
        self.wanted = wanted
        self.event = asyncio.Event()

    def push(self, event: wire.Event) -> None:
        if self.wanted(event):
            self.event.set()

    async def wait(self, timeout: float) -> bool:
        """True if a wanted event came within ``timeout`` seconds (then re-armed)."""
        try:
            await asyncio.wait_for(self.event.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            return False
        self.event.clear()
        return True


class Hub:
    def __init__(self, endpoints: Endpoints, observe: Callable[[wire.Event], None] | None = None):
        self.endpoints = endpoints
        self.observe = observe
        self.listeners: set[Listener] = set()
        self.live = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._syncs: dict[str, asyncio.Future] = {}
        self._sync_lock: asyncio.Lock | None = None
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="http-events", daemon=True)

    # ------------------------------------------------------------------ loop side
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sync_lock = asyncio.Lock()
        self._thread.start()

    def add(self, listener: Listener) -> None:
        self.listeners.add(listener)

    def remove(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    async def ensure_live(self, sync: Callable[[wire.Request], Awaitable[object]]) -> None:
        """Return once the SUB socket is live at the broker; ``sync`` sends a request as the
        caller. Raises the caller's refusal (a bad token) like any call."""
        if self.live:
            return
        assert self._sync_lock is not None
        async with self._sync_lock:
            if self.live:
                return
            nonce = uuid.uuid4().hex
            arrived = asyncio.get_running_loop().create_future()
            self._syncs[nonce] = arrived
            try:
                await sync(wire.Sync(nonce=nonce))
                await asyncio.wait_for(arrived, SYNC_TIMEOUT)
                self.live = True
            except asyncio.TimeoutError:
                log.warning("events_not_live", hint="the broker's events did not arrive in time")
            finally:
                self._syncs.pop(nonce, None)

    def _deliver(self, batch: list[wire.Event]) -> None:
        for event in batch:
            if isinstance(event, wire.SyncEvent):
                fut = self._syncs.get(event.nonce)
                if fut is not None and not fut.done():
                    fut.set_result(True)
                continue
            if self.observe is not None:
                self.observe(event)
            for listener in list(self.listeners):
                listener.push(event)

    def stop(self) -> None:
        self._stopping = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ event thread
    def _run(self) -> None:
        ctx = zmq.Context()
        ctx.setsockopt(zmq.RCVHWM, RCVHWM)  # set before connecting: it applies to new links
        try:  # over tcp a CURVE client pinning the broker's key, as every bus client is
            sub = client_socket(ctx, zmq.SUB, self.endpoints.events, self.endpoints)
        except Exception as exc:  # chatbox.bus.curve.CurveError: no keys for a tcp bus
            log.error("events_failed", error=str(exc))
            ctx.term()
            return
        for topic in TOPICS:
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        try:
            while not self._stopping:
                ready = dict(poller.poll())
                if sub in ready:
                    batch = self._drain(sub)
                    if batch and self._loop is not None and not self._loop.is_closed():
                        self._loop.call_soon_threadsafe(self._deliver, batch)
        except (zmq.ZMQError, RuntimeError) as exc:  # context or loop gone under us at exit
            if not self._stopping:
                log.error("events_failed", error=str(exc))
        finally:
            sub.close(linger=0)
            ctx.term()

    @staticmethod
    def _drain(sub: zmq.Socket) -> list[wire.Event]:
        batch: list[wire.Event] = []
        while sub.poll(0, zmq.POLLIN):
            frames = sub.recv_multipart()
            try:
                batch.append(wire.event_decoder.decode(frames[-1]))
            except Exception as exc:  # msgspec.DecodeError, ValidationError: a hint lost
                log.warning("bad_event", error=str(exc)[:200])
        return batch
