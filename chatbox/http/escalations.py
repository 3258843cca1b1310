"""``GET /v1/escalations``: what waits for a human — escalations and other pending tier-2 posts.

The broker lists them (``wire.Pending``, through its index of pending tier-2 posts), as the
caller may see them: a human every channel, an agent its own, never ``#alerts``. Nothing is
read for it, so nothing is marked delivered, and it costs what is pending, not the history.

An escalation's body is the broker's (``chatbox.broker.escalations``): ``agent:``, ``chain:``,
``reason:`` (which may run over several lines), ``about: #N``, then ``evidence:`` and one
``  - …`` line each. A plain tier-2 post's agent is its author and its reason its title.
"""

from __future__ import annotations

import re

from chatbox.bus import wire
from chatbox.http import shapes
from chatbox.http.routes import Ctx

PAGE = wire.MAX_LIMIT
_ABOUT = re.compile(r"^about: #(\d+)$")


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


async def route(ctx: Ctx) -> shapes.Escalations:
    found: list[shapes.Escalation] = []
    since = 0
    while True:
        page = await ctx.call(wire.Pending(since=since, limit=PAGE))
        found += [parse(m) for m in page.messages]
        if not page.more or not page.messages:
            return shapes.Escalations(escalations=found)
        since = page.messages[-1].seq
