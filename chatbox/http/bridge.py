"""The async bridge from the HTTP server's event loop to the bus: every call as the caller.

The server makes its bus calls in its event loop itself, with ``zmq.asyncio``: one DEALER per
token (a *link*), several requests in flight on it at once, each reply matched to its request
by ``rid``. No worker thread and no lock is involved, so a thousand concurrent requests cost a
thousand futures, and a long-poll, which only awaits, holds nothing. The token is the caller's
own — the server never acts as anyone but the principal who asked, and the broker applies that
principal's role and ACL exactly as over the bus.

A call keeps the bus client's contract (``chatbox.bus.client``): a write carries a fresh
idempotency key, and a round trip that times out closes its link (no late reply is read by a
later request) and is sent again with the same key, with capped exponential backoff, until the
call's deadline — so a retry is answered with the first result, never applied twice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import OrderedDict
from collections.abc import Callable

import structlog
import zmq
import zmq.asyncio

from chatbox.bus import wire
from chatbox.bus.client import client_socket, new_key
from chatbox.bus.codes import is_transient
from chatbox.bus.endpoints import Endpoints, ipc_path
from chatbox.bus.errors import BusError, ProtocolError, Refused, Transient, Unauthorized, \
    Unreachable
from chatbox.http.problems import from_bus

log = structlog.get_logger("http")

ATTEMPT_TIMEOUT = 2.0   # one round trip to the broker
DEADLINE = 4.0          # all retries of one call (a broker restart fits in it)
WINDOW = 32             # requests in flight on one link (the broker queues 64 replies a peer)
MAX_LINKS = 256         # tokens with a link kept open; the least recent are closed


class Link:
    """One DEALER for one token, in the event loop; replies matched to requests by rid."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoints: Endpoints):
        # over tcp a CURVE client pinning the broker's key, as every bus client is
        self.sock = client_socket(ctx, zmq.DEALER, endpoints.request, endpoints)
        self.pending: dict[int, asyncio.Future] = {}
        self.window = asyncio.Semaphore(WINDOW)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            raw = await self.sock.recv()
            try:
                reply = wire.reply_decoder.decode(raw)
            except Exception as exc:  # msgspec.DecodeError, ValidationError
                log.warning("bad_reply", error=str(exc)[:200])
                continue
            fut = self.pending.pop(reply.rid, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    def close(self, why: str) -> None:
        self.reader.cancel()
        self.sock.close(linger=0)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(Unreachable(why))
        self.pending.clear()


class Bridge:
    """``await bridge.call(token, request)``: one bus request as that token's principal."""

    def __init__(self, endpoints: Endpoints):
        self.endpoints = endpoints
        self._ctx = zmq.asyncio.Context()
        self._links: OrderedDict[str, Link] = OrderedDict()
        self._rids = itertools.count(1)
        self._ipc = ipc_path(endpoints.request)
        self.on_refused: Callable[[str], None] | None = None  # a token the broker refused

    async def call(self, token: str, req: wire.Request,
                   rename: dict[str, str] | None = None) -> wire.Result:
        """The result, or a ``ProblemError`` carrying the broker's refusal."""
        try:
            return await self._call(token, req)
        except BusError as exc:
            if exc.code == "unauthorized":
                self.forget(token)
                if self.on_refused is not None:
                    self.on_refused(token)
            raise from_bus(exc, rename) from None

    async def _call(self, token: str, req: wire.Request) -> wire.Result:
        loop = asyncio.get_running_loop()
        idem = new_key() if wire.keyed(req) else None
        deadline = loop.time() + DEADLINE
        delay = 0.02
        while True:
            try:
                reply = await self._attempt(token, req, idem)
                break
            except Unreachable:
                if loop.time() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        if isinstance(reply, wire.ErrorReply):
            err = reply.error
            cls = (Unauthorized if err.code == "unauthorized"
                   else Transient if is_transient(err.code) else Refused)
            raise cls(err.message, code=err.code, field=err.field)
        return reply.result

    async def _attempt(self, token: str, req: wire.Request, idem: str | None) -> wire.Reply:
        if self._ipc is not None and token not in self._links and not os.path.exists(self._ipc):
            raise Unreachable(f"broker not reachable: no socket at {self._ipc} (it is not "
                              "running, or its socket file was removed: restart it)")
        link = self._link(token)
        async with link.window:
            rid = next(self._rids)
            fut = asyncio.get_running_loop().create_future()
            link.pending[rid] = fut
            try:
                await link.sock.send(wire.encode(wire.Envelope(
                    v=wire.PROTOCOL_VERSION, rid=rid, token=token, req=req, idem=idem)))
                return await asyncio.wait_for(fut, ATTEMPT_TIMEOUT)
            except asyncio.TimeoutError:
                self._drop(token, link, "the broker did not answer in time")
                raise Unreachable(f"broker did not answer within {ATTEMPT_TIMEOUT:g}s at "
                                  f"{self.endpoints.request}") from None
            except zmq.ZMQError as exc:
                self._drop(token, link, str(exc))
                raise ProtocolError(f"bus socket failed: {exc}") from None
            finally:
                link.pending.pop(rid, None)

    def _link(self, token: str) -> Link:
        link = self._links.get(token)
        if link is None:
            link = self._links[token] = Link(self._ctx, self.endpoints)
            while len(self._links) > MAX_LINKS:
                self._links.popitem(last=False)[1].close("closed: too many tokens in use")
        self._links.move_to_end(token)
        return link

    def _drop(self, token: str, link: Link, why: str) -> None:
        """Close ``link`` (a late reply on it is never read) and forget it."""
        if self._links.get(token) is link:
            del self._links[token]
        link.close(why)

    def forget(self, token: str) -> None:
        """Close the link of a token the broker refused (revoked, unknown)."""
        link = self._links.pop(token, None)
        if link is not None:
            link.close("the token was refused")

    def close(self) -> None:
        for link in self._links.values():
            link.close("the server is stopping")
        self._links.clear()
        self._ctx.term()
