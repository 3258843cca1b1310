"""Live updates: the bounded long-poll ``/v1/wait`` and the event stream ``/v1/events``.

Both wait in the event loop on the hub (``hub.py``), never in a worker thread, so a thousand
waiting clients hold no thread and delay no other request. Both follow the order that loses
nothing: listen first, then read through the broker, then wait — a message that commits between
the read and the wait has already been seen by the listener.

``/v1/events`` sends ``event: message`` with the whole message, fetched with the caller's own
token, so only what the caller may read is ever sent; one fetch per principal and message is
shared by all of that principal's streams. ``event: agent`` carries ``{agent, state, paused,
turn, cause}`` (another agent's cause is shown to humans only, as in the roster). Every event's
``id`` is the highest message seq the stream has sent, so ``Last-Event-ID`` resumes the messages
after it: they are replayed (at most ``REPLAY_MAX``; past that the stream ends after them and the
client resumes again from where it got to).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator

import msgspec
from starlette.responses import StreamingResponse

from chatbox.bus import wire
from chatbox.http import shapes
from chatbox.http.auth import whoami
from chatbox.http.bridge import Bridge
from chatbox.http.hub import Queue, Signal
from chatbox.http.problems import ProblemError
from chatbox.http.routes import Ctx

REPLAY_MAX = 5_000
PAGE = wire.MAX_LIMIT
MEMO = 8_192
_encoder = msgspec.json.Encoder()


class Fetcher:
    """Message ``seq`` as the token's principal may read it (None if it may not), fetched once
    however many of that principal's streams ask at the same moment."""

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self._memo: OrderedDict[tuple[str, int], asyncio.Task] = OrderedDict()

    def get(self, token: str, key: str, event: wire.MessageEvent) -> asyncio.Task:
        memo_key = (key, event.seq)
        task = self._memo.get(memo_key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(token, event))
            self._memo[memo_key] = task
            while len(self._memo) > MEMO:
                self._memo.popitem(last=False)
        return task

    async def _fetch(self, token: str, ev: wire.MessageEvent) -> bytes | None:
        """The message's JSON (encoded once for all the streams that send it), or None."""
        m = await self._read(token, ev)
        return None if m is None else _encoder.encode(shapes.message(m))

    async def _read(self, token: str, ev: wire.MessageEvent) -> wire.Message | None:
        try:
            page = await self.bridge.call(token, wire.Read(channel=ev.channel, since=ev.seq - 1,
                                                           limit=1))
        except ProblemError as exc:
            if exc.code not in ("forbidden", "not_found"):
                raise
            if ev.kind != "decision":
                return None
            # a decision on the caller's own post, in a channel it does not read (#alerts)
            try:
                thread = await self.bridge.call(token, wire.GetPost(seq=ev.seq))
            except ProblemError:
                return None
            return next((m for m in thread.replies if m.seq == ev.seq), None)
        first = page.messages[0] if page.messages else None
        return first if first is not None and first.seq == ev.seq else None


# --------------------------------------------------------------------------- /v1/wait

async def wait(ctx: Ctx) -> shapes.Waited:
    who = await whoami(ctx.srv.bridge, ctx.caller.token)
    rooms = await ctx.call(wire.Rooms())
    mine = {c.name for c in rooms.channels if c.subscribed}

    def wanted(ev: wire.Event) -> bool:
        return isinstance(ev, wire.MessageEvent) and ev.author != who.name \
            and (ev.channel in mine or ev.kind == "decision")

    signal = Signal(wanted)
    hub = ctx.srv.hub
    hub.add(signal)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.query.timeout_ms / 1000
    try:
        await hub.ensure_live(ctx.call)
        while True:
            res = await ctx.call(wire.Inbox(limit=ctx.query.limit))
            if res.messages or loop.time() >= deadline:
                return shapes.Waited(messages=shapes.messages(res.messages), more=res.more,
                                     timed_out=not res.messages)
            await signal.wait(deadline - loop.time())  # timed out: one last look
    finally:
        hub.remove(signal)


# --------------------------------------------------------------------------- /v1/events

def frame(event: str, data: object, seq: int) -> bytes:
    encoded = data if isinstance(data, bytes) else _encoder.encode(data)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), encoded)


def last_event_id(ctx: Ctx) -> int | None:
    raw = (ctx.request.headers.get("last-event-id") or "").strip()
    return int(raw) if raw.isdigit() and raw.isascii() and int(raw) <= wire.MAX_ID else None


async def replay(ctx: Ctx, channels: list[wire.ChannelInfo], after: int
                 ) -> tuple[list[wire.Message], bool]:
    """Every message after ``after`` the caller may read, oldest first, at most REPLAY_MAX;
    and whether that was all of them."""
    found: list[wire.Message] = []
    complete = True
    for ch in channels:
        since, taken = after, 0
        while ch.last_seq > since and taken < REPLAY_MAX:
            try:
                page = await ctx.call(wire.Read(channel=ch.name, since=since, limit=PAGE))
            except ProblemError as exc:
                if exc.code in ("forbidden", "not_found"):
                    break  # a channel the caller sees but does not read
                raise
            found.extend(page.messages)
            taken += len(page.messages)
            if not page.more or not page.messages:
                break
            since = page.messages[-1].seq
        else:
            complete = complete and taken < REPLAY_MAX
    found.sort(key=lambda m: m.seq)
    return found[:REPLAY_MAX], complete and len(found) <= REPLAY_MAX


def agent_data(ev: wire.AgentEvent, who: wire.PrincipalResult) -> dict:
    human = who.role in ("human", "admin")
    return {"agent": ev.agent, "state": ev.state, "paused": ev.paused, "turn": ev.turn,
            "cause": ev.cause if human or ev.agent == who.name else ""}


async def events(ctx: Ctx) -> StreamingResponse:
    who = await whoami(ctx.srv.bridge, ctx.caller.token)
    queue = Queue()
    hub = ctx.srv.hub
    hub.add(queue)  # listen first: nothing committed from here on is missed
    try:
        await hub.ensure_live(ctx.call)
        rooms = (await ctx.call(wire.Rooms())).channels
        after = last_event_id(ctx)
        backlog, complete = await replay(ctx, rooms, after) if after is not None else ([], True)
    except BaseException:
        hub.remove(queue)
        raise
    start = after if after is not None else max((c.last_seq for c in rooms), default=0)
    body = _stream(ctx, who, queue, start, backlog, complete)
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(ctx: Ctx, who: wire.PrincipalResult, queue: Queue, start: int,
                  backlog: list[wire.Message], complete: bool) -> AsyncIterator[bytes]:
    hub, fetcher, caller = ctx.srv.hub, ctx.srv.fetcher, ctx.caller
    key = caller.key
    cursor = start
    try:
        yield b"retry: 2000\n: live\n\n"
        sent = set()
        for m in backlog:
            cursor = max(cursor, m.seq)
            sent.add(m.seq)
            yield frame("message", shapes.message(m), cursor)
        if not complete:
            return
        while not queue.overflowed:
            ev = await queue.queue.get()
            if isinstance(ev, wire.MessageEvent):
                if ev.seq <= start or ev.seq in sent:
                    continue
                try:
                    data = await fetcher.get(caller.token, key, ev)
                except ProblemError:
                    return  # the token was revoked, or the broker is gone: the client retries
                if data is None:
                    continue
                cursor = max(cursor, ev.seq)
                yield frame("message", data, cursor)
            elif isinstance(ev, wire.AgentEvent):
                yield frame("agent", agent_data(ev, who), cursor)
    finally:
        hub.remove(queue)
