"""Live updates: the bounded long-poll ``/v1/wait`` and the event stream ``/v1/events``.

Both wait in the event loop on the hub (``hub.py``), never in a worker thread, so a thousand
waiting clients hold no thread and delay no other request. Both follow the order that loses
nothing: listen first, then read through the broker, then wait — a message that commits between
the read and the wait has already been seen by the listener.

``/v1/events`` sends ``event: message`` with the whole message, read with the caller's own
token, so only what the caller may read is ever sent. A message event is a hint to read its
channel on from the stream's cursor there, so a lost hint costs nothing; one read per principal,
cursor and event is shared by all of that principal's streams. ``event: agent`` carries ``{agent, state, paused,
turn, cause}`` (another agent's cause is shown to humans only, as in the roster). Every event's
``id`` is the highest message seq the stream has sent, so ``Last-Event-ID`` resumes the messages
after it: they are replayed (at most ``REPLAY_MAX``; past that the stream ends after them and the
client resumes again from where it got to).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import NamedTuple

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
LIVE_PAGE = 100
_encoder = msgspec.json.Encoder()


class Page(NamedTuple):
    items: list[tuple[int, bytes]]   # (seq, the message's JSON), oldest first
    more: bool


class Fetcher:
    """What a principal may read, fetched once however many of its streams ask at once.

    A page is fetched for an event (its key holds the event's seq), so it was read after that
    event's commit and holds it; every stream of the principal at the same cursor shares it, and
    each message is encoded to JSON once for all of them.
    """

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self._memo: OrderedDict[tuple, asyncio.Task] = OrderedDict()

    def _once(self, memo_key: tuple, make) -> asyncio.Task:
        task = self._memo.get(memo_key)
        if task is None:
            task = self._memo[memo_key] = asyncio.ensure_future(make())
            while len(self._memo) > MEMO:
                self._memo.popitem(last=False)
        return task

    def page(self, token: str, key: str, channel: str, since: int, seen: int) -> asyncio.Task:
        """The messages of ``channel`` after ``since`` (None: the principal may not read it),
        read after event ``seen`` arrived."""
        return self._once((key, channel, since, seen),
                          lambda: self._page(token, channel, since))

    def decision(self, token: str, key: str, seq: int) -> asyncio.Task:
        """Decision ``seq`` on the principal's own post, in a channel it does not read."""
        return self._once((key, "decision", seq), lambda: self._decision(token, seq))

    async def _page(self, token: str, channel: str, since: int) -> Page | None:
        try:
            res = await self.bridge.call(token, wire.Read(channel=channel, since=since,
                                                          limit=LIVE_PAGE))
        except ProblemError as exc:
            if exc.code in ("forbidden", "not_found"):
                return None
            raise
        return Page([(m.seq, _encoder.encode(shapes.message(m))) for m in res.messages],
                    res.more)

    async def _decision(self, token: str, seq: int) -> bytes | None:
        try:
            thread = await self.bridge.call(token, wire.GetPost(seq=seq))
        except ProblemError:
            return None
        m = next((m for m in thread.replies if m.seq == seq), None)
        return None if m is None else _encoder.encode(shapes.message(m))


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
    """Each message event is a hint to read its channel on from the stream's cursor there (the
    tail pattern): a hint lost or coalesced costs nothing, the next one in the channel reads
    what was missed."""
    hub, fetcher, caller = ctx.srv.hub, ctx.srv.fetcher, ctx.caller
    key, token = caller.key, caller.token
    cursors: dict[str, int] = {}
    unreadable: set[str] = set()
    top = start
    watcher = asyncio.ensure_future(_until_gone(ctx, queue))
    try:
        yield b"retry: 2000\n: live\n\n"
        for m in backlog:
            cursors[m.channel] = top = max(top, m.seq)
            yield frame("message", shapes.message(m), top)
        if not complete:
            return
        while not queue.overflowed:
            ev = await queue.queue.get()
            if ev is None:
                return  # the client has gone
            if isinstance(ev, wire.AgentEvent):
                yield frame("agent", agent_data(ev, who), top)
                continue
            if not isinstance(ev, wire.MessageEvent) or ev.seq <= cursors.get(ev.channel, start):
                continue
            try:
                while ev.channel not in unreadable:
                    page = await fetcher.page(token, key, ev.channel,
                                              cursors.get(ev.channel, start), ev.seq)
                    if page is None:
                        unreadable.add(ev.channel)
                        break
                    for seq, data in page.items:
                        cursors[ev.channel] = seq
                        top = max(top, seq)
                        yield frame("message", data, top)
                    if not page.more or not page.items:
                        break
                if ev.channel in unreadable and ev.kind == "decision":
                    data = await fetcher.decision(token, key, ev.seq)
                    if data is not None:
                        top = max(top, ev.seq)
                        yield frame("message", data, top)
            except ProblemError:
                return  # the token was revoked, or the broker is gone: the client retries
    finally:
        watcher.cancel()
        hub.remove(queue)


async def _until_gone(ctx: Ctx, queue: Queue) -> None:
    """Wake the stream when its client disconnects: an idle stream writes nothing, so it would
    otherwise learn of it only at its next event."""
    while (await ctx.request.receive())["type"] != "http.disconnect":
        pass
    queue.close()
