"""In-process fixtures: a real Store on a temporary file, Handlers and a Dispatcher, no sockets.

``hub`` answers requests exactly as the server does: it encodes an Envelope, hands the bytes to
``Handlers.handle`` inside one ``Store.write()`` transaction, and decodes the Reply. The events
the request put in the outbox (published by the server only after the commit) are kept in
``hub.events``.
"""

from __future__ import annotations

import itertools
import os
import socket
import time

import pytest

from chatbox.broker import channels
from chatbox.broker.bootstrap import init_workspace
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.dispatcher import Dispatcher
from chatbox.broker.handlers import Handlers
from chatbox.broker.store import Store
from chatbox.bus import wire
from chatbox.runtime.workspace import Workspace
from chatbox.guardrails.limits import Limits


class Refusal(AssertionError):
    """A request expected to succeed was refused."""


class Hub:
    def __init__(self, root):
        self.ws = Workspace(root)
        self.admin = init_workspace(self.ws, "alice")
        self.store = Store(self.ws.db_path)
        self.clock = itertools.count(int(time.time()))
        with self.store.write():
            channels.create_standing(Ctx(self.store.db, Principal("broker", "admin"), self.now()))
        self.limits = Limits()
        self.dispatcher = Dispatcher(lambda name: self.limits)
        self.handlers = Handlers(self.store, self.ws, self.dispatcher, "test", time.time())
        self.events: list[tuple[bytes, wire.Event]] = []
        self._rids = itertools.count(1)
        self.tokens: dict[str, str] = {"alice": self.admin}

    def now(self) -> float:
        return float(next(self.clock))

    def restart_broker(self) -> None:
        """What a broker restart leaves: the database, and no in-memory state at all."""
        self.store.close()
        self.store = Store(self.ws.db_path)
        self.dispatcher = Dispatcher(lambda name: self.limits)
        self.handlers = Handlers(self.store, self.ws, self.dispatcher, "test", time.time())

    # ------------------------------------------------------------------ raw frames
    def handle_many(self, payloads: list[bytes]) -> list[bytes]:
        """One batch: every payload in one write() transaction, as the server's group commit."""
        outbox: list[tuple[bytes, wire.Event]] = []
        now = self.now()
        with self.store.write():
            replies = [self.handlers.handle(p, now, outbox) for p in payloads]
        self.events = outbox
        return replies

    def handle_raw(self, payload: bytes) -> wire.Reply:
        return wire.reply_decoder.decode(self.handle_many([payload])[0])

    def envelope(self, req: wire.Request, token: str | None = None, *, idem: str | None = None,
                 v: int = wire.PROTOCOL_VERSION) -> bytes:
        return wire.encode(wire.Envelope(v=v, rid=next(self._rids), token=token or self.admin,
                                         req=req, idem=idem))

    # ------------------------------------------------------------------ requests
    def send(self, req: wire.Request, token: str | None = None, *, idem: str | None = None,
             v: int = wire.PROTOCOL_VERSION) -> wire.Reply:
        payload = self.envelope(req, token, idem=idem, v=v)
        reply = self.handle_raw(payload)
        assert reply.rid == wire.envelope_decoder.decode(payload).rid
        return reply

    def ok(self, req: wire.Request, token: str | None = None, **kw) -> wire.Result:
        reply = self.send(req, token, **kw)
        if reply.error is not None:
            raise Refusal(f"{type(req).__name__} refused: {reply.error}")
        return reply.result

    def err(self, req: wire.Request, token: str | None = None, **kw) -> wire.Error:
        reply = self.send(req, token, **kw)
        assert reply.error is not None, f"{type(req).__name__} was accepted: {reply.result}"
        assert reply.result is None
        return reply.error

    # ------------------------------------------------------------------ conveniences
    def add_agent(self, name: str, *subscribe: str, wake: str = "all") -> str:
        res = self.ok(wire.AddAgent(name=name, subscribe=list(subscribe), wake=wake))
        self.tokens[name] = res.token
        return res.token

    def post(self, channel: str | None, body: str, token: str | None = None,
             **kw) -> wire.Message:
        return self.ok(wire.Post(channel=channel, body=body, **kw), token).message

    def read(self, channel: str, token: str | None = None, since: int = 0) -> list[wire.Message]:
        return self.ok(wire.Read(channel=channel, since=since, limit=1000), token).messages

    def agent(self, name: str) -> wire.AgentInfo:
        return self.ok(wire.ShowAgent(name=name)).agent

    def state(self, name: str) -> str:
        return self.agent(name).state

    def wakes(self) -> list[wire.WakeEvent]:
        """The WakeEvents the last batch put in the outbox."""
        return [ev for _, ev in self.events if isinstance(ev, wire.WakeEvent)]

    def woken(self) -> list[str]:
        return [ev.agent for ev in self.wakes()]

    def hello(self, agent: str, supervisor: str, *, live: bool = False, **kw) -> wire.HelloResult:
        if live:
            kw.setdefault("pid", os.getpid())
            kw.setdefault("host", socket.gethostname())
        return self.ok(wire.Hello(agent=agent, supervisor=supervisor, **kw), self.tokens[agent])

    def claim(self, agent: str, supervisor: str, epoch: int) -> wire.ClaimResult:
        return self.ok(wire.Claim(agent=agent, supervisor=supervisor, epoch=epoch),
                       self.tokens[agent])

    def report(self, agent: str, supervisor: str, claimed: wire.ClaimResult,
               outcome: str = "ok", **kw) -> wire.ReportResult:
        return self.ok(wire.TurnReport(agent=agent, supervisor=supervisor, turn=claimed.turn,
                                       epoch=claimed.epoch, outcome=outcome, **kw),
                       self.tokens[agent])

    def close(self) -> None:
        self.dispatcher.liveness.close()
        self.store.close()


@pytest.fixture
def hub(tmp_path):
    """An initialised workspace with an in-process Store + Handlers; alice is the admin."""
    h = Hub(tmp_path)
    try:
        yield h
    finally:
        h.close()
