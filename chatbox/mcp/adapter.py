"""The MCP adapter's tools: one agent's identity, bound at start, acting over the bus.

``Adapter.call(name, args)`` is the one entry: it takes the seed's legacy identity arguments
off (tokens ignored unread, a foreign ``agent_name`` refused), validates the rest against the
tool's schema, runs the tool, and returns a plain-JSON result — or raises ``ToolError`` with a
code and a sentence. Refusals of the broker keep its code and sentence, with the field renamed
to the tool's argument. Blocking tools (``listen``, ``wait``) are bounded by ``timeout_ms``.

Calls written for the seed get what its clients read: ``hello`` opens missing default channels
(``#phase-*`` standing, others ad-hoc) where the caller may, ``listen`` reads after
``max(since_id, ack)``, and ``ack`` up to 0 changes nothing and answers the offset.

Runs in worker threads: requests share one DEALER under a lock; events come from the EventHub.
"""

from __future__ import annotations

import threading
import time

import structlog

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.endpoints import Endpoints
from chatbox.bus.errors import BusError, Refused, Unauthorized, Unreachable
from chatbox.mcp import views
from chatbox.mcp.events import EventHub
from chatbox.mcp.tools import (BY_NAME, INBOX_MAX_MSGS, LISTEN_MAX_MSGS, TOOLSETS, ToolError,
                               take_legacy, validate)

log = structlog.get_logger("mcp")

ATTEMPT_TIMEOUT = 2.0   # one round trip to the broker
REQUEST_DEADLINE = 4.0  # all retries of one request (a broker restart fits in it)
MAX_PAGES = 10          # pages of one channel skimmed past the reader's own messages
STANDING_PREFIX = "#phase-"  # default channels hello opens as standing (the seed's rule)


class Adapter:
    def __init__(self, agent: str, token: str, endpoints: Endpoints, *, toolset: str = "all",
                 turn: int | None = None):
        self.agent = agent
        self.turn = turn
        self.tools = TOOLSETS[toolset]
        self.role: str | None = None
        self._verified = False
        self._bus = BusClient(endpoints, token, attempt_timeout=ATTEMPT_TIMEOUT,
                              deadline=REQUEST_DEADLINE)
        self._lock = threading.Lock()
        self._closed = False
        self.events = EventHub(endpoints, token, agent)

    # ------------------------------------------------------------------ lifecycle
    def start(self, verify_deadline: float = 1.0) -> None:
        """Verify the identity now if the broker is up (a bus that cannot be set up at all — a
        CURVE key missing — raises here, before anything runs), then follow events."""
        try:
            self.verify(verify_deadline)
        except Unreachable:
            log.warning("broker_unreachable", hint="tools answer 'unavailable' until it is back")
        self.events.start()

    def close(self) -> None:
        self.events.stop()
        with self._lock:
            self._closed = True
            self._bus.close()

    def verify(self, deadline: float | None = None) -> None:
        """Whoami: the token must be this agent's. Raises Refused/Unreachable or ToolError."""
        who = self._call(wire.Whoami(), deadline=deadline)
        if who.name != self.agent:
            raise ToolError("forbidden", f"the token given to this server belongs to {who.name}, "
                            f"not {self.agent}")
        self.role = who.role
        if not self._verified:
            log.info("identity_verified", role=who.role)
            if self.turn is not None:  # the broker now knows this turn's agent connected
                self._call(wire.Attach(turn=self.turn), deadline=deadline)
        self._verified = True

    # ------------------------------------------------------------------ entry
    def call(self, name: str, args: dict | None) -> dict:
        spec = BY_NAME.get(name)
        if spec is None or name not in self.tools:
            raise ToolError("not_found", f"no tool named {name!r}")
        args = dict(args or {})
        legacy = take_legacy(args)
        claimed = legacy.get("agent_name")
        if claimed is not None and claimed != self.agent:
            raise ToolError("forbidden", f"this server acts only as {self.agent}, not as "
                            f"{claimed!r}; drop agent_name", "agent_name")
        validate(name, args)
        try:
            if not self._verified:
                self.verify()
            return getattr(self, "_" + name)(**args)
        except Refused as exc:
            raise ToolError(exc.code, exc.message, spec.fields.get(exc.field, exc.field)) from None
        except Unreachable:
            raise ToolError("unavailable", "broker not reachable, retrying") from None
        except BusError as exc:
            raise ToolError("internal", str(exc)) from None

    def _call(self, req: wire.Request, deadline: float | None = None) -> wire.Result:
        with self._lock:
            if self._closed:
                raise Unreachable("the adapter is shutting down")
            return self._bus.call(req, deadline=deadline)

    def _me(self) -> wire.AgentInfo:
        return self._call(wire.ShowAgent(name=self.agent)).agent

    def _post(self, **kw: object) -> wire.Message:
        return self._call(wire.Post(turn=self.turn, **kw)).message

    # ------------------------------------------------------------------ presence
    def _hello(self, name: str, phase: str, default_channels: list[str]) -> dict:
        if name != self.agent:
            raise ToolError("forbidden", f"you are {self.agent}; this server speaks only for "
                            f"{self.agent}, not {name!r}", "name")
        me = self._me()
        current = {s.channel for s in me.subscriptions}
        created: list[str] = []
        refused = []
        for channel in dict.fromkeys(default_channels):
            if channel in current:
                continue
            try:
                if self._join(channel):
                    created.append(channel)
                current.add(channel)
            except Unauthorized:
                raise
            except Refused as exc:
                refused.append({"channel": channel, "code": exc.code, "message": exc.message})
        self.events.ensure(current)
        rooms = self._call(wire.Rooms()).channels
        out = {"status": "ok", "agent": self.agent, "role": self.role, "phase": phase,
               "state": me.state, "subscribed": sorted(current),
               "unread": {c.name: c.unread for c in rooms if c.subscribed},
               "session_token": None}  # the seed's key: identity is this server's, not a token
        if self.turn is not None:
            out["turn"] = self.turn
        if created:
            out["created"] = created
        if refused:
            out["refused"] = refused
        return out

    def _join(self, channel: str) -> bool:
        """Subscribe to ``channel``, opening it first if it does not exist (``#phase-*`` as a
        standing channel, which only a human may open; any other as ad-hoc). True if opened."""
        try:
            self._call(wire.Subscribe(channel=channel))
            return False
        except Refused as exc:
            if exc.code != "not_found" or exc.field != "channel":
                raise
        kind = "standing" if channel.startswith(STANDING_PREFIX) else "adhoc"
        opened = True
        try:
            self._call(wire.CreateChannel(name=channel, kind=kind,
                                          topic=f"opened by {self.agent} at hello"))
        except Refused as exc:
            if exc.code != "conflict":  # a conflict: someone opened it meanwhile
                raise
            opened = False
        self._call(wire.Subscribe(channel=channel))
        return opened

    def _rooms(self) -> dict:
        return {"status": "ok",
                "channels": [views.channel(c) for c in self._call(wire.Rooms()).channels]}

    def _subscribe(self, channel: str, view: str | None = None, wake: str | None = None) -> dict:
        current = next((s for s in self._me().subscriptions if s.channel == channel), None)
        view = view or (current.view if current else "full")
        wake = wake or (current.wake if current else "all")
        sub = self._call(wire.Subscribe(channel=channel, view=view, wake=wake)).subscription
        self.events.ensure([channel])
        return {"status": "ok", "channel": sub.channel, "view": sub.view, "wake": sub.wake,
                "last_read_id": sub.last_read}

    def _unsubscribe(self, channel: str) -> dict:
        self._call(wire.Unsubscribe(channel=channel))
        self.events.drop(channel)
        return {"status": "ok", "channel": channel, "subscribed": False}

    def _agents(self) -> dict:
        return {"status": "ok",
                "agents": [views.agent(a) for a in self._call(wire.ListAgents()).agents]}

    # ------------------------------------------------------------------ posting
    def _chat(self, channel: str, body: str) -> dict:
        m = self._post(channel=channel, body=body, kind="chat")
        return {"status": "ok", "message_id": m.seq, **_where(m)}

    def _start_post(self, channel: str, title: str, description: str, type: str,
                    tier: int = 0) -> dict:
        m = self._post(channel=channel, kind="post", title=title, body=description, type=type,
                       tier=tier)
        return {"status": "ok", "post_id": m.seq, "message_id": m.seq, **_where(m),
                "tier": m.tier, "post_status": m.status}

    def _reply(self, post_id: int, body: str) -> dict:
        m = self._post(in_reply_to=post_id, body=body)
        return {"status": "ok", "reply_id": m.seq, "message_id": m.seq, "post_id": post_id,
                **_where(m)}

    def _escalate(self, reason: str, post_id: int | None = None) -> dict:
        res = self._call(wire.Escalate(reason=reason, seq=post_id, turn=self.turn))
        if isinstance(res, wire.MessageResult):
            m = res.message
            return {"status": "ok", "message_id": m.seq, "post_id": m.seq, **_where(m)}
        return {"status": "ok", **_generic(res)}

    # ------------------------------------------------------------------ flags and decisions
    def _flag(self, seq: int, action: str, resolution: str | None = None) -> wire.Message:
        return self._call(wire.SetFlag(seq=seq, action=action, resolution=resolution)).message

    def _pin_post(self, post_id: int) -> dict:
        m = self._flag(post_id, "pin")
        return {"status": "ok", "post_id": m.seq, "pinned": m.pinned}

    def _unpin_post(self, post_id: int) -> dict:
        m = self._flag(post_id, "unpin")
        return {"status": "ok", "post_id": m.seq, "pinned": m.pinned}

    def _close_post(self, post_id: int, resolution: str) -> dict:
        m = self._flag(post_id, "close", resolution)
        return {"status": "ok", "post_id": m.seq, "post_status": m.status,
                "resolution": m.resolution}

    def _resolve_message(self, message_id: int) -> dict:
        m = self._flag(message_id, "resolve")
        return {"status": "ok", "message_id": m.seq, "message_status": m.status,
                "resolved": m.status == "resolved"}

    def _unresolve_message(self, message_id: int) -> dict:
        m = self._flag(message_id, "unresolve")
        return {"status": "ok", "message_id": m.seq, "message_status": m.status,
                "resolved": m.status == "resolved"}

    def _approve(self, post_id: int, comment: str | None = None) -> dict:
        res = self._call(wire.Decide(seq=post_id, approve=True, reason=comment))
        return {"status": "ok", "post_id": post_id, "decision": "approved", **_generic(res)}

    def _deny(self, post_id: int, reason: str) -> dict:
        res = self._call(wire.Decide(seq=post_id, approve=False, reason=reason))
        return {"status": "ok", "post_id": post_id, "decision": "denied", **_generic(res)}

    def _decisions(self, channel: str | None = None, limit: int = 20) -> dict:
        return {"status": "ok", **_generic(self._call(wire.Decisions(channel=channel,
                                                                     limit=limit)))}

    # ------------------------------------------------------------------ reading
    def _get_post(self, post_id: int) -> dict:
        thread = self._call(wire.GetPost(seq=post_id))
        return {"status": "ok", "post": views.in_thread(thread.post, root=True),
                "replies": [views.in_thread(m) for m in thread.replies]}

    def _search(self, query: str, channel: str | None = None, limit: int = 20) -> dict:
        res = self._call(wire.Search(query=query, channel=channel, limit=limit))
        return {"status": "ok", "messages": views.messages(res.messages, "digest"),
                "count": len(res.messages)}

    def _ack(self, channel: str, up_to_id: int) -> dict:
        if up_to_id == 0:  # the seed's "nothing yet": changes nothing, says where I am
            return {"status": "ok", "channel": channel, "last_read_id": self._acked(channel)}
        res = self._call(wire.Ack(channel=channel, up_to=up_to_id))
        return {"status": "ok", "channel": res.channel, "last_read_id": res.last_read}

    def _acked(self, channel: str) -> int:
        """My offset in ``channel``, refused as the broker refuses an ack there."""
        for sub in self._me().subscriptions:
            if sub.channel == channel:
                return sub.last_read
        if any(c.name == channel for c in self._call(wire.Rooms()).channels):
            raise ToolError("forbidden", f"not subscribed to {channel}", "channel")
        raise ToolError("not_found", f"no channel {channel}", "channel")

    def _inbox(self, max_msgs: int = INBOX_MAX_MSGS) -> dict:
        res = self._call(wire.Inbox(limit=max_msgs))
        return _inbox_result(res, self._views())

    def _views(self) -> dict[str, str]:
        return {s.channel: s.view for s in self._me().subscriptions}

    def _wait(self, timeout_ms: int) -> dict:
        me = self._me()
        channels = [s.channel for s in me.subscriptions]
        if not channels:
            raise ToolError("invalid", "you subscribe to no channel, so nothing can arrive for "
                            "you: subscribe first")
        views_of = {s.channel: s.view for s in me.subscriptions}
        deadline = time.monotonic() + timeout_ms / 1000
        self.events.ensure(channels)
        last = False
        while True:
            snap = self.events.snapshot(channels)
            res = self._call(wire.Inbox(limit=INBOX_MAX_MSGS))
            if res.messages or last or time.monotonic() >= deadline:
                return {**_inbox_result(res, views_of), "timed_out": not res.messages}
            log.debug("waiting", tool="wait", channels=channels)
            last = not self.events.wait_for(snap, deadline)  # timed out: one last look

    def _listen(self, channels: list[str], view: str, timeout_ms: int,
                since_id: int = 0, max_msgs: int = LISTEN_MAX_MSGS) -> dict:
        channels = list(dict.fromkeys(channels))
        deadline = time.monotonic() + timeout_ms / 1000
        acked = {s.channel: s.last_read for s in self._me().subscriptions}
        # the seed's rule: what I acked is never returned again, whatever since_id says
        since = {c: max(since_id, acked.get(c, 0)) for c in channels}
        self.events.ensure(channels)
        last = False
        while True:
            snap = self.events.snapshot(channels)
            msgs, more, top = self._read_new(channels, since, max_msgs)
            if msgs or last or time.monotonic() >= deadline:
                break
            log.debug("waiting", tool="listen", channels=channels)
            last = not self.events.wait_for(snap, deadline)  # timed out: one last look
        return {"status": "ok", "view": view, "messages": views.messages(msgs, view),
                "more": more, "next_since_id": top, "timed_out": not msgs and timeout_ms > 0}

    def _read_new(self, channels: list[str], since: dict[str, int],
                  limit: int) -> tuple[list[wire.Message], bool, int]:
        """Others' messages after ``since`` in each channel, oldest first, at most ``limit``."""
        found: list[wire.Message] = []
        cursors = dict(since)
        unfinished: list[int] = []  # cursors of channels with more left to read
        for channel in channels:
            taken = 0
            for _ in range(MAX_PAGES):
                page = self._call(wire.Read(channel=channel, since=cursors[channel],
                                            limit=limit))
                mine = [m for m in page.messages if m.author != self.agent]
                found.extend(mine)
                taken += len(mine)
                if page.messages:
                    cursors[channel] = page.messages[-1].seq
                if not page.more:
                    break
                if taken >= limit:
                    unfinished.append(cursors[channel])
                    break
            else:
                unfinished.append(cursors[channel])
        found.sort(key=lambda m: m.seq)
        if len(found) > limit:
            found = found[:limit]
            unfinished.append(found[-1].seq)
        # the id to pass as since_id next time: never past a message not returned
        top = min(unfinished) if unfinished else max(cursors.values(), default=0)
        return found, bool(unfinished), top


def _where(m: wire.Message) -> dict:
    return {"channel": m.channel, "seq": m.seq, "chain": m.chain, "hop": m.hop}


def _inbox_result(res: wire.MessagesResult, views_of: dict[str, str]) -> dict:
    ack: dict[str, int] = {}
    for m in res.messages:
        ack[m.channel] = max(ack.get(m.channel, 0), m.seq)
    return {"status": "ok", "messages": views.messages(res.messages, views_of),
            "more": res.more, "ack_up_to": ack}


def _generic(res: wire.Result) -> dict:
    """A result whose shape this adapter does not know in detail, as plain JSON."""
    if isinstance(res, wire.MessageResult):
        return {"message": views.message(res.message)}
    if isinstance(res, wire.MessagesResult):
        return {"messages": views.messages(res.messages), "more": res.more}
    if isinstance(res, wire.Done):
        return {}
    data = views.scrub(res)
    data.pop("kind", None)
    return data
