"""The broker's socket loop: ROUTER for requests, PUB for events, group commit between them.

One thread owns the database. It blocks in ``poll()`` (no timeout: an idle broker uses no CPU),
then drains every request that is already queued, runs the lot in one ``IMMEDIATE`` transaction
(a savepoint each), commits once, and only then sends the replies and publishes the events — so
every reply means "on disk", and every event names a committed row.
"""

from __future__ import annotations

import time

import apsw
import structlog
import zmq

from chatbox.bus import wire
from chatbox.bus.client import configure
from chatbox.bus.endpoints import Endpoints, check, ipc_path
from chatbox.broker.handlers import Handlers, _error, _salvage_rid
from chatbox.runtime.signals import StopSignals

log = structlog.get_logger("broker")

MAX_BATCH = 512
PRUNE_EVERY = 10_000  # requests between two prunings of old idempotency keys


class Server:
    def __init__(self, handlers: Handlers, endpoints: Endpoints,
                 context: zmq.Context | None = None):
        self.handlers = handlers
        self.store = handlers.store
        self.ctx = context or zmq.Context.instance()
        self.endpoints = endpoints
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        configure(self.router, endpoints.request)
        configure(self.pub, endpoints.events)
        self.router.maxmsgsize = wire.MAX_FRAME  # a larger frame: the peer is disconnected
        self.router.sndhwm = wire.MAX_QUEUED_REPLIES
        self.pub.sndhwm = 100_000
        self.signals = StopSignals()
        self.requests_served = 0
        self._since_prune = PRUNE_EVERY  # prune once at the first batch

    def bind(self) -> None:
        for endpoint, sock in ((self.endpoints.request, self.router),
                               (self.endpoints.events, self.pub)):
            check(endpoint)
            path = ipc_path(endpoint)
            if path is not None:
                path.unlink(missing_ok=True)  # stale: we hold the workspace lock
            sock.bind(endpoint)
            if path is not None:
                path.chmod(0o600)

    # ------------------------------------------------------------------ signals
    def install_signals(self) -> None:
        """Handlers only record; the loop acts: it stops after the batch in hand."""
        self.signals.install()

    @property
    def stopping(self) -> bool:
        return self.signals.stopping

    # ------------------------------------------------------------------ loop
    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.signals.fileno(), zmq.POLLIN)
        liveness = self.handlers.dispatcher.liveness
        watched: set[int] = set()
        while not self.stopping:
            for fd in set(liveness.fds()) - watched:  # pidfds of supervisors said hello since
                poller.register(fd, zmq.POLLIN)
                watched.add(fd)
            ready = dict(poller.poll())
            if self.signals.fileno() in ready:
                self.signals.drain()
            exited = [fd for fd in watched if fd in ready]
            for fd in exited:
                poller.unregister(fd)
                watched.discard(fd)
            if exited or self.router in ready:
                self.process(self._drain() if self.router in ready else [], exited)

    def _drain(self) -> list[list[bytes]]:
        """Every request already queued, up to MAX_BATCH: one group commit's worth."""
        batch = []
        router = self.router
        while len(batch) < MAX_BATCH and router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            batch.append(router.recv_multipart(zmq.NOBLOCK))
        return batch

    def process(self, batch: list[list[bytes]], exited: list[int] = ()) -> None:
        now = time.time()
        replies: list[tuple[bytes, bytes, bytes]] = []
        outbox: list[tuple[bytes, wire.Event]] = []
        try:
            with self.store.write():
                for fd in exited:
                    outbox.extend(self.handlers.on_supervisor_exit(fd, now))
                for frames in batch:
                    if len(frames) == 2:
                        replies.append((frames[0], frames[1], self.handlers.handle(
                            frames[1], now, outbox)))
                    elif frames:
                        log.warning("bad_frame", frames=len(frames))
                        replies.append((frames[0], frames[-1], _error(
                            _salvage_rid(frames[-1]), "bad_frame",
                            f"a request is one frame, got {len(frames) - 1}")))
                self.store.before_commit()
                self._since_prune += len(batch)
                if self._since_prune >= PRUNE_EVERY:
                    self._since_prune = 0
                    self.store.prune_requests(now)
        except apsw.Error as exc:
            log.error("commit_failed", error=str(exc))
            outbox = []
            replies = [(rid, payload, _error(_salvage_rid(payload), "store", f"not stored: {exc}"))
                       for rid, payload, _ in replies]
        for rid, _, reply in replies:
            try:
                self.router.send_multipart([rid, reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the peer is gone; its retry will find the idempotent answer
        for topic, event in outbox:
            self.pub.send_multipart([topic, wire.encode(event)])
        self.requests_served += len(replies)

    def close(self) -> None:
        self.signals.uninstall()
        self.signals.close()
        self.router.close(linger=0)
        self.pub.close(linger=100)
        for endpoint in (self.endpoints.request, self.endpoints.events):
            path = ipc_path(endpoint)
            if path is not None:
                path.unlink(missing_ok=True)
