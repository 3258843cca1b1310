"""The broker's socket loop: ROUTER for requests, PUB for events, group commit between them.

One thread owns the database. It blocks in ``poll()`` (no timeout: an idle broker uses no CPU),
then drains every request that is already queued, runs the lot in one ``IMMEDIATE`` transaction
(a savepoint each), commits once, and only then sends the replies and publishes the events — so
every reply means "on disk", and every event names a committed row. A batch is bounded in
requests and in bytes, and its replies are sent in groups of at most ``REPLY_BUDGET`` bytes (a
commit each), so big reads never pile up in the broker's memory.

A commit that fails (a full disk) stores nothing: every write of its group is refused as
transient, saying so, while its reads are answered again outside it — what they mark delivered
is held in memory (``messages.HeldMarks``) and written by the next commit that succeeds.

Over ``tcp://`` both listeners are CurveZMQ servers (``chatbox.bus.curve``): without the
broker's key pair the broker refuses to start, in one line; the allow-list is asked through ZAP,
answered by pyzmq's authenticator in a thread of its own (the one thread beside the loop; it
reads only the key files). The events socket is then an XPUB, whose subscription frames the loop
reads too: a supervisor on another host subscribes to its own ``alive`` topic, so the frame
that unsubscribes it says its event connection ended (closed, or dropped by the heartbeat), and
its turn is recorded lost (``broker/liveness.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import apsw
import structlog
import zmq

from chatbox.bus import curve, wire
from chatbox.bus.client import configure
from chatbox.bus.endpoints import Endpoints, check, ipc_path, is_tcp
from chatbox.broker import fsm
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.handlers import Handlers, _error, _salvage_rid
from chatbox.broker.messages import HeldMarks
from chatbox.broker.gate import Gate
from chatbox.broker.sockwatch import SocketWatch
from chatbox.broker.store import is_disk_full
from chatbox.broker.trail import Trail
from chatbox.runtime.signals import StopSignals

log = structlog.get_logger("broker")

MAX_BATCH = 512
# Bytes of requests one batch drains, and of replies one group holds before it commits and
# sends: what a batch holds at once is bounded, however big the frames and reads in it.
REQUEST_BUDGET = 16 * 1024 * 1024
REPLY_BUDGET = 16 * 1024 * 1024
BROKER = Principal("broker", "admin")
PRUNE_EVERY = 10_000  # requests between two prunings of old idempotency keys


class Server:
    def __init__(self, handlers: Handlers, endpoints: Endpoints,
                 context: zmq.Context | None = None):
        self.handlers = handlers
        self.store = handlers.store
        self.ctx = context or zmq.Context.instance()
        self.endpoints = endpoints
        self.router = self.ctx.socket(zmq.ROUTER)
        # over tcp an XPUB: its unsubscriptions say which remote supervisors are gone
        self.xpub = is_tcp(endpoints.events)
        self.pub = self.ctx.socket(zmq.XPUB if self.xpub else zmq.PUB)
        configure(self.router, endpoints.request, endpoints)
        configure(self.pub, endpoints.events, endpoints)
        self.auth: curve.Authenticator | None = None  # the ZAP handler, over tcp
        self._curve_requests = False  # requests over CURVE: each checked against revocation
        self.router.maxmsgsize = wire.MAX_FRAME  # a larger frame: the peer is disconnected
        self.router.sndhwm = wire.MAX_QUEUED_REPLIES
        Gate.prepare(self.router)
        Gate.prepare(self.pub)
        self.pub.sndhwm = 100_000
        self.signals = StopSignals()
        self.requests_served = 0
        self._since_prune = PRUNE_EVERY  # prune once at the first batch
        self.held = HeldMarks()  # marks shown while the disk refused writes
        self._exits: list[str] = []  # supervisors gone, not yet recorded
        self._failed = 0  # groups whose commit failed since the last that succeeded
        self.sockwatch = SocketWatch([])  # the socket files, once bound
        self.gate: Gate | None = None  # refuses new connections near the descriptor limit
        self.trail: Trail | None = None  # the dispatch trail, set by main: fed after each commit

    def bind(self) -> None:
        for endpoint, _ in self._bound():
            check(endpoint)
        if self.endpoints.tcp:
            self._secure()
        for endpoint, sock in self._bound():
            path = ipc_path(endpoint)
            if path is not None:
                path.unlink(missing_ok=True)  # stale: we hold the workspace lock
            sock.bind(endpoint)
            if path is not None:
                path.chmod(0o600)
        self.sockwatch = SocketWatch([p for e, _ in self._bound() if (p := ipc_path(e))])
        self.gate = Gate(self._bound())
        self.gate.start()

    def _secure(self) -> None:
        """Make every tcp listener a CURVE server admitting the allow-list (through ZAP), or
        raise CurveError naming the endpoint and the fix."""
        tcp = [(e, sock) for e, sock in self._bound() if is_tcp(e)]
        where = self.endpoints.curve
        try:
            if where is None:
                raise curve.CurveError("over tcp the bus is CurveZMQ only, and no key "
                                       "directory was given")
            keys = curve.server_keys(where)
        except curve.CurveError as exc:
            raise curve.CurveError(f"refusing to bind {tcp[0][0]}: {exc}") from None
        allow = curve.AllowList(where, on_refused=lambda key: log.warning(
            "curve_refused", key=key, reason="a client key not in the allow-list"))
        self.auth = curve.Authenticator(self.ctx, allow)
        self.auth.start()  # bound before the listeners: no handshake escapes it
        self._curve_requests = is_tcp(self.endpoints.request)
        for _, sock in tcp:
            curve.serve(sock, keys)
        log.info("curve", public_key=keys.public.decode(), allowed=sorted(curve.allowed(where)))

    def _bound(self) -> list[tuple[str, zmq.Socket]]:
        return [(self.endpoints.request, self.router), (self.endpoints.events, self.pub)]

    def rebind_missing(self) -> None:
        """Bind again each ipc endpoint whose socket file was removed while the broker ran, so
        new clients reach it; the clients already connected keep their connections (the old
        listener stays open, unreachable, until the broker stops)."""
        if self.gate is None:
            return  # not bound yet
        with self.gate.lock:
            gone = self.sockwatch.missing()
            if not self.gate.closed:  # else moved aside by the gate itself
                self._rebind(gone)

    def _rebind(self, gone: list[Path]) -> None:
        for endpoint, sock in self._bound():
            path = ipc_path(endpoint)
            if path not in gone:
                continue
            try:
                sock.bind(endpoint)
                path.chmod(0o600)
            except (zmq.ZMQError, OSError) as exc:
                log.error("socket_rebind_failed", path=str(path), error=str(exc))
            else:
                log.warning("socket_rebound", path=str(path),
                            reason="its socket file was removed while the broker ran")

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
        removals = self.sockwatch.fileno()
        if removals is not None:
            poller.register(removals, zmq.POLLIN)
        if self.xpub:
            poller.register(self.pub, zmq.POLLIN)
        liveness = self.handlers.dispatcher.liveness
        watched: set[int] = set()
        while not self.stopping:
            for fd in set(liveness.fds()) - watched:  # pidfds of supervisors said hello since
                poller.register(fd, zmq.POLLIN)
                watched.add(fd)
            ready = dict(poller.poll(0))
            if not ready:
                self.store.idle()  # before it waits, never while a request does
                ready = dict(poller.poll())
            if self.signals.fileno() in ready:
                self.signals.drain()
            if removals is None or removals in ready:
                self.rebind_missing()
            exited = [fd for fd in watched if fd in ready]
            for fd in exited:
                poller.unregister(fd)
                watched.discard(fd)
            gone = self._unsubscribed()  # before the requests: a Hello after its subscription
            if exited or gone or self.router in ready:
                self.process(self._drain() if self.router in ready else [], exited, gone)

    def _unsubscribed(self) -> list[str]:
        """The XPUB's subscription frames read; the remote supervisors whose ``alive`` topic
        they unsubscribe (their event connection ended)."""
        gone: list[str] = []
        if not self.xpub:
            return gone
        liveness = self.handlers.dispatcher.liveness
        while self.pub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            sup = liveness.on_subscription(self.pub.recv(zmq.NOBLOCK))
            if sup is not None:
                log.info("supervisor_disconnected", supervisor=sup,
                         reason="its event connection ended (closed, or silent past the "
                                "heartbeat timeout)")
                gone.append(sup)
        return gone

    def _drain(self) -> list[list[bytes]]:
        """Every request already queued, up to MAX_BATCH or REQUEST_BUDGET bytes: one group
        commit's worth."""
        batch = []
        size = 0
        router = self.router
        allowed = self.auth.allow.names() if self._curve_requests else None
        while len(batch) < MAX_BATCH and size < REQUEST_BUDGET \
                and router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            if allowed is None:
                frames = router.recv_multipart(zmq.NOBLOCK)
            elif (frames := self._admitted(router.recv_multipart(zmq.NOBLOCK, copy=False),
                                           allowed)) is None:
                continue
            batch.append(frames)
            size += sum(len(f) for f in frames)
        return batch

    def _admitted(self, frames: list[zmq.Frame], allowed: frozenset[str]) -> list[bytes] | None:
        """The frames of a CURVE request as bytes, or None (answered ``unauthorized`` here) if
        the key its connection was admitted with has been revoked since: a revocation applies
        to the requests of connections already open, not only to the next handshake."""
        data = [f.bytes for f in frames]
        user = frames[-1].get("User-Id")
        if user in allowed or len(data) < 2:
            return data
        log.warning("curve_revoked", client=user, reason="a request over a connection whose "
                    "key was revoked since it connected")
        try:
            self.router.send_multipart([data[0], _error(
                _salvage_rid(data[-1]), "unauthorized", f"this host's CurveZMQ key ({user}) "
                "was revoked on the broker's host; `chatbox keys issue NAME` issues a new one")],
                zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        return None

    def process(self, batch: list[list[bytes]], exited: list[int] = (),
                gone: list[str] = ()) -> None:
        """Answer ``batch`` in groups: each one transaction, one commit, then its replies sent —
        a group ends early once its replies hold REPLY_BUDGET bytes, so the replies held at
        once stay bounded however big the reads of the batch. ``exited`` (pidfds readable) and
        ``gone`` (remote supervisors disconnected) are recorded first."""
        liveness = self.handlers.dispatcher.liveness
        self._exits.extend(sup for fd in exited if (sup := liveness.exited(fd)) is not None)
        self._exits.extend(gone)
        done = 0
        while True:
            done = self._group(batch, done, time.time())
            if done >= len(batch):
                break

    def _group(self, batch: list[list[bytes]], start: int, now: float) -> int:
        """Answer ``batch[start:]`` up to the reply budget in one transaction; return where it
        stopped. If the commit fails (a full disk), the reads of the group are answered again
        outside it (``_unstored``) and every write is refused as transient."""
        replies: list[tuple[bytes, bytes, bytes]] = []
        outbox: list[tuple[bytes, wire.Event]] = []
        exits, self._exits = self._exits, []
        end, held = start, 0
        try:
            with self.store.write():
                self.held.apply(Ctx(self.store.db, BROKER, now))
                for sup in exits:
                    outbox.extend(self.handlers.supervisor_gone(sup, now))
                while end < len(batch) and held < REPLY_BUDGET:
                    end += 1  # first: a request that ends the transaction is in this group
                    reply = self._answer(batch[end - 1], now, outbox)
                    if reply is not None:
                        replies.append(reply)
                        held += len(reply[2])
                self.store.before_commit()
                self._since_prune += end - start
                if self._since_prune >= PRUNE_EVERY:
                    self._since_prune = 0
                    self.store.prune_requests(now)
        except apsw.Error as exc:
            if not self._failed:  # once per run of failures: a full disk is retried often
                log.error("commit_failed", error=str(exc), disk_full=is_disk_full(exc),
                          data=str(self.store.path.parent))
            self._failed += 1
            self._exits = exits + self._exits  # recorded at the next commit that succeeds
            replies, outbox = self._unstored(batch[start:end], self.handlers.not_stored(exc))
        else:
            self.held.clear()
            if self.trail is not None:  # committed: on file before any reply says so
                self.trail.record(self.store.db, outbox)
            if self._failed:
                log.info("commit_recovered", failed=self._failed)
                self._failed = 0
        self._send(replies, outbox)
        return end

    def _answer(self, frames: list[bytes], now: float, outbox: list[tuple[bytes, wire.Event]],
                unstored: str | None = None) -> tuple[bytes, bytes, bytes] | None:
        if len(frames) == 2:
            return frames[0], frames[1], self.handlers.handle(frames[1], now, outbox,
                                                              unstored=unstored)
        if frames:
            log.warning("bad_frame", frames=len(frames))
            return frames[0], frames[-1], _error(_salvage_rid(frames[-1]), "bad_frame",
                                                 f"a request is one frame, got {len(frames) - 1}")
        return None

    def _unstored(self, group: list[list[bytes]], why: str
                  ) -> tuple[list[tuple[bytes, bytes, bytes]], list[tuple[bytes, wire.Event]]]:
        """The reads of a group whose commit failed, answered in a transaction that is rolled
        back (so the disk is asked for nothing); what they marked delivered is held in memory
        and written by the next commit that succeeds. Every other request is refused ``why``."""
        now = time.time()  # not the failed group's: HeldMarks finds the reads' marks by it
        ctx = Ctx(self.store.db, BROKER, now)
        outbox: list[tuple[bytes, wire.Event]] = []
        db = self.store.db
        db.execute("BEGIN")
        try:
            self.held.apply(ctx)
            replies = [r for frames in group if (r := self._answer(frames, now, outbox, why))]
            self.held.collect(ctx)
        except apsw.Error as exc:  # even reading failed (an I/O error): refuse it all
            log.error("read_failed", error=str(exc))
            outbox = []
            replies = [(rid, payload, _error(_salvage_rid(payload), "store", why))
                       for rid, payload in (f for f in group if len(f) == 2)]
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
        return replies, outbox  # reads publish nothing but Sync's event, which names no row

    def _send(self, replies: list[tuple[bytes, bytes, bytes]],
              outbox: list[tuple[bytes, wire.Event]]) -> None:
        for rid, _, reply in replies:
            try:
                self.router.send_multipart([rid, reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the peer is gone; its retry will find the idempotent answer
        for topic, event in outbox:
            self.pub.send_multipart([topic, wire.encode(event)])
        self.requests_served += len(replies)
        fsm.log_committed(outbox)  # after the replies: no request waits on its log lines

    def close(self) -> None:
        self.sockwatch.close()
        if self.gate is not None:
            self.gate.close()
        self.signals.uninstall()
        self.signals.close()
        self.router.close(linger=0)
        self.pub.close(linger=100)
        if self.auth is not None:
            self.auth.stop()
        for endpoint in (self.endpoints.request, self.endpoints.events):
            path = ipc_path(endpoint)
            if path is not None:
                path.unlink(missing_ok=True)
