"""The one bus client every process uses: DEALER for requests, SUB for events.

Requests have a deadline per attempt and an overall deadline. On a timeout the DEALER is closed
with linger 0 and a new one is opened (a lost reply is never read by the next request), and the
request is sent again with the same idempotency key, so a retry is answered with the first
result. Retries back off exponentially with a cap (tenacity).

Over ``tcp://`` every socket is a CURVE client that pins the broker's public key
(``chatbox.bus.curve``), so nothing — no token — is sent to a peer that has not proved it is
the broker. A handshake the broker refuses (this host's key is not in its allow-list) or that
fails (the peer is not the broker whose key is pinned) is said in the error, not left as
silence.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
import uuid
from collections.abc import Iterable

import tenacity
import zmq
import zmq.utils.monitor

from chatbox.bus import curve, wire
from chatbox.bus.endpoints import Endpoints, ipc_path, is_tcp
from chatbox.bus.codes import is_transient
from chatbox.bus.errors import ProtocolError, Refused, Transient, Unauthorized, Unreachable


def new_key() -> str:
    """An idempotency key: time-ordered (keys of one client land on neighbouring pages of the
    broker's index) and unique (64 random bits after the nanoseconds)."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


# what a tcp client's monitor reports of a handshake that did not succeed
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
FULL_SUFFIX = ".full"  # where the broker moves a socket file at its descriptor limit


def alive_topic(supervisor: str) -> bytes:
    """The topic a supervisor subscribes to and the broker never publishes on: the broker's
    XPUB sees it unsubscribed when the supervisor's event connection ends (closed, or dropped
    by the heartbeat), which is how a supervisor on another host is known to be gone."""
    return wire.topic("alive", supervisor)


def configure(sock: zmq.Socket, endpoint: str, endpoints: Endpoints | None = None) -> None:
    """The options of every bus socket, the broker's included: no linger, quick reconnects,
    and heartbeats where a link can die silently (tcp): a peer that stops answering is dropped
    ``heartbeat_timeout_ms`` after a ping, pings going out every ``heartbeat_ms``."""
    sock.linger = 0
    sock.setsockopt(zmq.RECONNECT_IVL, 50)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1_000)
    if is_tcp(endpoint):
        eps = endpoints or Endpoints(endpoint, endpoint)
        sock.setsockopt(zmq.HEARTBEAT_IVL, eps.heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, eps.heartbeat_timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, eps.heartbeat_timeout_ms)


def client_socket(ctx: zmq.Context, kind: int, endpoint: str, endpoints: Endpoints) -> zmq.Socket:
    """A connected client socket; over tcp a CURVE client pinning the broker's key (its keys
    read now, so keys installed since the last socket are used). CurveError if there are none."""
    keys = None
    if is_tcp(endpoint):
        if endpoints.curve is None:
            raise curve.CurveError(f"refusing {endpoint}: over tcp the bus is CurveZMQ only, "
                                   "and no key directory was given")
        keys = curve.client_keys(endpoints.curve)
    sock = ctx.socket(kind)
    try:
        configure(sock, endpoint, endpoints)
        if keys is not None:
            curve.connect_as(sock, keys)
        sock.connect(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


class BusClient:
    """A connection to the broker for one principal (its token), in one thread.

    ``attempt_timeout`` bounds one round trip; ``deadline`` bounds all retries of one call.
    """

    def __init__(self, endpoints: Endpoints, token: str, *, attempt_timeout: float = 2.0,
                 deadline: float = 10.0, context: zmq.Context | None = None):
        self.endpoints = endpoints
        self.token = token
        self.attempt_timeout = attempt_timeout
        self.deadline = deadline
        self._ctx = context or zmq.Context.instance()
        self._rids = itertools.count(1)
        self._ipc_path = ipc_path(endpoints.request)
        self._dealer: zmq.Socket | None = None
        self._watch: zmq.Socket | None = None  # the tcp DEALER's handshake monitor
        self._sub: zmq.Socket | None = None
        self._held: list[tuple[bytes, wire.Event]] = []

    # ------------------------------------------------------------------ requests

    def call(self, req: wire.Request, *, idem: str | None = None,
             deadline: float | None = None) -> wire.Result:
        """Send ``req`` and return its result; raise Refused (Transient, Unauthorized) or
        Unreachable. Only Unreachable is retried here; a caller that can wait retries a
        Transient itself, with the same ``idem``."""
        if idem is None and wire.keyed(req):
            idem = new_key()
        try:  # the common case: one round trip, no retry machinery
            return self._round_trip(req, idem)
        except Unreachable:
            pass
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Unreachable),
            stop=tenacity.stop_after_delay(self.deadline if deadline is None else deadline),
            wait=tenacity.wait_exponential(multiplier=0.02, max=0.5),
            reraise=True,
        )
        return retrying(self._round_trip, req, idem)

    def _round_trip(self, req: wire.Request, idem: str | None) -> wire.Result:
        if self._dealer is None and self._ipc_path is not None \
                and not os.path.exists(self._ipc_path):
            raise Unreachable(self._no_socket(self._ipc_path))
        dealer = self._dealer_socket()
        rid = next(self._rids)
        dealer.send(wire.encode(wire.Envelope(v=wire.PROTOCOL_VERSION, rid=rid, token=self.token,
                                              req=req, idem=idem)))
        deadline_ms = int(self.attempt_timeout * 1000)
        while True:
            if not dealer.poll(deadline_ms, zmq.POLLIN):
                failed = self._handshake_failure()
                self._reset_dealer()
                raise Unreachable(
                    f"broker did not answer within {self.attempt_timeout:g}s at "
                    f"{self.endpoints.request}{failed}")
            try:
                reply = wire.reply_decoder.decode(dealer.recv())
            except Exception as exc:  # msgspec.DecodeError, ValidationError
                raise ProtocolError(f"undecodable reply from broker: {exc}") from exc
            if reply.rid == rid:
                break
        if isinstance(reply, wire.ErrorReply):  # a reply is a result or an error, never neither
            err = reply.error
            cls = (Unauthorized if err.code == "unauthorized"
                   else Transient if is_transient(err.code) else Refused)
            raise cls(err.message, code=err.code, field=err.field)
        return reply.result

    @staticmethod
    def _no_socket(path: os.PathLike) -> str:
        if os.path.exists(f"{os.fspath(path)}{FULL_SUFFIX}"):
            return ("the broker is at its descriptor limit and refuses new connections until "
                    "some end (raise LimitNOFILE / ulimit -n)")
        return (f"broker not reachable: no socket at {path} (it is not running, or its socket "
                "file was removed: restart it)")

    def _dealer_socket(self) -> zmq.Socket:
        if self._dealer is None:
            sock = client_socket(self._ctx, zmq.DEALER, self.endpoints.request, self.endpoints)
            if is_tcp(self.endpoints.request):
                self._watch = sock.get_monitor_socket(_HANDSHAKE_FAILED)
            self._dealer = sock
        return self._dealer

    def _handshake_failure(self) -> str:
        """Why a tcp handshake failed since the DEALER connected, as a clause; "" if none did."""
        if self._watch is None:
            return ""
        why = ""
        while self._watch.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(self._watch)["event"]
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                why = ("; the broker refused this host's CurveZMQ key (not in its allow-list: "
                       "`chatbox keys issue NAME` on the broker's host)")
            elif not why:
                why = ("; the CurveZMQ handshake failed: the peer is not the broker whose key "
                       "is pinned in server.public")
        return why

    def _reset_dealer(self) -> None:
        if self._watch is not None:
            self._dealer.disable_monitor()
            self._watch.close(linger=0)
            self._watch = None
        if self._dealer is not None:
            self._dealer.close(linger=0)
            self._dealer = None

    # ------------------------------------------------------------------ events

    @property
    def sub_socket(self) -> zmq.Socket:
        """The SUB socket (created and connected on first use), for a caller's own poller."""
        if self._sub is None:
            self._sub = client_socket(self._ctx, zmq.SUB, self.endpoints.events, self.endpoints)
        return self._sub

    def subscribe(self, topics: Iterable[bytes]) -> None:
        for t in topics:
            self.sub_socket.setsockopt(zmq.SUBSCRIBE, t)

    def sync_events(self, timeout: float = 5.0) -> None:
        """Return once every topic subscribed so far is live at the broker's PUB socket.

        A SUB subscription reaches the publisher asynchronously; until it does, events are
        dropped (the slow joiner). Ask the broker to publish on a topic of our own until that
        event arrives: subscriptions are applied in order, so ours are live by then. Events of
        other topics that arrive meanwhile are kept for ``recv_event``.
        """
        nonce = uuid.uuid4().hex
        topic = wire.sync_topic(nonce)
        self.subscribe([topic])
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.call(wire.Sync(nonce=nonce), deadline=max(0.1, deadline - time.monotonic()))
                until = min(deadline, time.monotonic() + 0.1)
                while (left := until - time.monotonic()) > 0:
                    got = self._recv_raw(left)
                    if got is None:
                        break
                    if got[0] == topic:
                        return
                    self._held.append(got)
            raise Unreachable(f"event stream at {self.endpoints.events} not live within "
                              f"{timeout:g}s")
        finally:
            self.sub_socket.setsockopt(zmq.UNSUBSCRIBE, topic)

    def _recv_raw(self, timeout: float | None,
                  wake: int | None = None) -> tuple[bytes, wire.Event] | None:
        sock = self.sub_socket
        ms = None if timeout is None else max(1, int(timeout * 1000))
        if wake is None:
            ready = sock.poll(ms, zmq.POLLIN)
        else:
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(wake, zmq.POLLIN)
            ready = sock in dict(poller.poll(ms))
        if not ready:
            return None
        return self._decode_event(sock.recv_multipart())

    def recv_event(self, timeout: float | None, *,
                   wake: int | None = None) -> tuple[bytes, wire.Event] | None:
        """The next event, or None after ``timeout`` seconds (None: wait forever) or once the
        descriptor ``wake`` is readable (a ``StopSignals``' own: a signal that lands just before
        the poll blocks wakes it all the same)."""
        if self._held:
            return self._held.pop(0)
        return self._recv_raw(timeout, wake)

    def read_event(self) -> tuple[bytes, wire.Event]:
        """Read one event from a SUB socket known to be readable."""
        return self._decode_event(self.sub_socket.recv_multipart())

    @staticmethod
    def _decode_event(frames: list[bytes]) -> tuple[bytes, wire.Event]:
        if len(frames) != 2:
            raise ProtocolError(f"event with {len(frames)} frames, expected 2")
        try:
            return frames[0], wire.event_decoder.decode(frames[1])
        except Exception as exc:
            raise ProtocolError(f"undecodable event: {exc}") from exc

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._reset_dealer()
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None

    def __enter__(self) -> BusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
