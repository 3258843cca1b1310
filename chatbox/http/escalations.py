"""``GET /v1/escalations``: what waits for a human — escalations and other pending tier-2 posts.

The broker has no request that lists them, so they are found by reading, as the caller, every
channel it may read, and kept: per principal, a cursor per channel and the tier-2 posts still
pending. Each request reads only what is new since the last one; a decision (a reply of kind
``decision``) takes its post off the list. So the first request reads the history once and
later ones read a page at most.

An escalation's body is the broker's (``chatbox.broker.escalations``): ``agent:``, ``chain:``,
``reason:`` (which may run over several lines), ``about: #N``, then ``evidence:`` and one
``  - …`` line each. A plain tier-2 post's agent is its author and its reason its title.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict

from chatbox.bus import wire
from chatbox.http import shapes
from chatbox.http.auth import whoami
from chatbox.http.problems import ProblemError
from chatbox.http.routes import Ctx

PAGE = wire.MAX_LIMIT
MAX_PRINCIPALS = 256
_ABOUT = re.compile(r"^about: #(\d+)$")


class Pending:
    """One principal's view: how far each channel was read, and what is pending."""

    def __init__(self) -> None:
        self.cursors: dict[str, int] = {}
        self.posts: dict[int, wire.Message] = {}
        self.lock = asyncio.Lock()

    def take(self, m: wire.Message) -> None:
        if m.tier == 2 and m.status == "pending":
            self.posts[m.seq] = m
        elif m.kind == "decision" and m.in_reply_to is not None:
            self.posts.pop(m.in_reply_to, None)
        elif m.seq in self.posts and m.status != "pending":
            del self.posts[m.seq]


class Book:
    """Pending per principal (by the name of its token), the least recent dropped."""

    def __init__(self) -> None:
        self._by: OrderedDict[str, Pending] = OrderedDict()

    def of(self, key: str) -> Pending:
        p = self._by.get(key)
        if p is None:
            p = self._by[key] = Pending()
        self._by.move_to_end(key)
        while len(self._by) > MAX_PRINCIPALS:
            self._by.popitem(last=False)
        return p


def parse(m: wire.Message) -> shapes.Escalation:
    if m.kind != "escalation":
        return shapes.Escalation(message=shapes.message(m), agent=m.author, chain=m.chain,
                                 reason=m.title or m.body[:200], evidence=[], post=m.seq,
                                 about=None)
    agent, chain, about = None, None, None
    reason: list[str] = []
    evidence: list[str] = []
    part = ""
    for line in m.body.split("\n"):
        if part != "evidence" and line.startswith("agent: "):
            agent = None if line[7:] == "-" else line[7:]
        elif part != "evidence" and line.startswith("chain: "):
            chain = int(line[7:]) if line[7:].isdigit() else None
        elif part != "evidence" and line.startswith("reason: "):
            part = "reason"
            reason.append(line[8:])
        elif part != "evidence" and _ABOUT.match(line):
            about, part = int(_ABOUT.match(line).group(1)), "about"
        elif line == "evidence:":
            part = "evidence"
        elif part == "evidence":
            evidence.append(line[4:] if line.startswith("  - ") else line)
        elif part == "reason":
            reason.append(line)
    return shapes.Escalation(message=shapes.message(m), agent=agent,
                             chain=chain if chain is not None else m.chain,
                             reason="\n".join(reason) or (m.title or ""), evidence=evidence,
                             post=m.seq, about=about)


async def catch_up(ctx: Ctx, pending: Pending) -> None:
    rooms = (await ctx.call(wire.Rooms())).channels
    for ch in rooms:
        since = pending.cursors.get(ch.name, 0)
        while ch.last_seq > since:
            try:
                page = await ctx.call(wire.Read(channel=ch.name, since=since, limit=PAGE))
            except ProblemError as exc:
                if exc.code in ("forbidden", "not_found"):
                    break  # seen, not read: nothing of it waits for this caller
                raise
            for m in page.messages:
                pending.take(m)
            if not page.messages:
                break
            since = page.messages[-1].seq
            if not page.more:
                break
        pending.cursors[ch.name] = max(since, pending.cursors.get(ch.name, 0))


async def route(ctx: Ctx) -> shapes.Escalations:
    await whoami(ctx.srv.bridge, ctx.caller.token)  # a bad token is a 401, even with no channel
    pending = ctx.srv.escalations.of(ctx.caller.key)
    async with pending.lock:
        await catch_up(ctx, pending)
        found = [parse(m) for _, m in sorted(pending.posts.items())]
    return shapes.Escalations(escalations=found)
