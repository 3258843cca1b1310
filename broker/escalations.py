"""Escalations to a human, and the tier-2 hard stop (DESIGN §5).

An escalation is a tier-2 post in ``#alerts`` that names the agent, the chain, the reason and the
evidence; it wakes no agent (a person answers it). A tier-2 post is ``pending`` until a human
decides it; while its author has one pending, the author is held: nothing but the decision
itself is dispatched to it. The decision is a reply in the post's thread, recorded once in
``approvals`` (never overwritten), delivered to the author directly, and wakes it.

An agent escalates only about a message it may read (``messages.in_view``), since the
escalation carries that message's chain; any other is refused as every unreadable message is,
in one sentence naming neither its channel nor its thread.
"""

from __future__ import annotations

import structlog

from chatbox.bus import wire
from chatbox.broker import audit, channels, messages
from chatbox.broker.channels import SYSTEM
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.errors import Conflict, Forbidden, Invalid

log = structlog.get_logger("broker")

ALERTS = "#alerts"
MAX_EVIDENCE = 8_000


def post_escalation(ctx: Ctx, *, author: str, agent: str | None, chain: int | None,
                    guardrail: str, reason: str, evidence: list[str] = (),
                    about: int | None = None) -> wire.Message:
    lines = [f"agent: {agent or '-'}", f"chain: {chain if chain is not None else '-'}",
             f"reason: {reason}"]
    if about is not None:
        lines.append(f"about: #{about}")
    if evidence:
        lines.append("evidence:")
        lines.extend(f"  - {e}" for e in evidence)
    body = "\n".join(lines)
    if len(body) > MAX_EVIDENCE:
        body = body[:MAX_EVIDENCE - 1] + "…"
    who = Ctx(ctx.db, Principal(author, "admin" if author == SYSTEM else "agent"), ctx.now,
              ctx.outbox)
    title = f"{agent or author}: {guardrail.replace('_', ' ')}"
    msg = messages.post(who, wire.Post(channel=ALERTS, body=body, kind="post", title=title[:200],
                                       type="escalation", tier=2),
                        kind="escalation", chain=chain)
    ctx.db.execute("INSERT OR IGNORE INTO escalations(agent, chain, guardrail, reason, seq, at) "
                   "VALUES (?,?,?,?,?,?)", (agent, chain, guardrail, reason, msg.seq, ctx.now))
    audit.record(ctx, "escalation", ALERTS, {"seq": msg.seq, "agent": agent, "chain": chain,
                                             "guardrail": guardrail})
    log.warning("escalated", agent=agent, chain=chain, guardrail=guardrail, seq=msg.seq)
    return msg


def hop_budget_escalated(ctx: Ctx, chain: int) -> bool:
    return ctx.db.execute("SELECT 1 FROM escalations WHERE chain = ? AND guardrail = 'hop_budget'",
                          (chain,)).get is not None


def escalate(ctx: Ctx, reason: str, about: int | None, chain: int | None) -> wire.Message:
    """Someone asks a human for help (the ``escalate`` tool)."""
    reason = (reason or "").strip()
    if not reason:
        raise Invalid("an escalation needs a reason", field="reason")
    messages.check_body(reason, required=True)
    if about is not None:
        # only about a message the caller may read: any other is refused as every unreadable
        # message is, naming neither its channel nor its chain
        target, _ = messages.in_view(ctx, about, "post_id")
        chain = chain if chain is not None else target.chain
    return post_escalation(ctx, author=ctx.principal.name, agent=ctx.principal.name, chain=chain,
                           guardrail="asked_for_help", reason=reason, about=about)


def held(ctx: Ctx, agent: str) -> bool:
    """Has ``agent`` a tier-2 post still pending a human's decision?"""
    return ctx.db.execute("SELECT 1 FROM messages WHERE author = ? AND tier = 2 AND "
                          "status = 'pending' LIMIT 1", (agent,)).get is not None


def decide(ctx: Ctx, seq: int, approve: bool, reason: str | None) -> tuple[wire.Message, str]:
    """Record a human's decision on a pending tier-2 post; return it and the post's author."""
    verb = "approve" if approve else "deny"
    if not ctx.principal.is_human:
        raise Forbidden(f"only a human or admin may {verb}; an agent never decides", field="post_id")
    post = messages.get(ctx, seq, "post_id")
    if post.tier != 2:
        raise Invalid(f"#{seq} is not a tier-2 post: nothing awaits a decision", field="post_id")
    if post.author == ctx.principal.name:
        raise Forbidden(f"#{seq} is yours: its author may not decide it", field="post_id")
    done = ctx.db.execute("SELECT approve, decided_by FROM approvals WHERE seq = ?", (seq,)).fetchone()
    if done is not None:
        raise Conflict(f"#{seq} was already {'approved' if done[0] else 'denied'} by {done[1]}; "
                       "a decision is never overwritten", field="post_id")
    reason = (reason or "").strip() or None
    if not approve and not reason:
        raise Invalid("a denial needs a reason", field="reason")
    body = f"{'approved' if approve else 'denied'} by {ctx.principal.name}"
    if reason:
        body += f": {reason}"
    decision = messages.post(ctx, wire.Post(body=body, in_reply_to=seq), kind="decision")
    ctx.db.execute("UPDATE messages SET status = ?, resolution = ? WHERE seq = ?",
                   ("approved" if approve else "denied", body, seq))
    ctx.db.execute("INSERT INTO approvals(seq, approve, decided_by, reason, decision_seq, at) "
                   "VALUES (?,?,?,?,?,?)", (seq, int(approve), ctx.principal.name, reason,
                                            decision.seq, ctx.now))
    ctx.db.execute("INSERT OR IGNORE INTO direct(agent, seq) SELECT ?, ? FROM principals "
                   "WHERE name = ? AND role = 'agent'", (post.author, decision.seq, post.author))
    return decision, post.author


def decisions(ctx: Ctx, channel: str | None, limit: int) -> wire.MessagesResult:
    """The newest decisions the principal may read: in its channels, or on its own posts. A
    channel it may not see is refused as a missing one."""
    messages.check_limit(limit, wire.MAX_SEARCH)
    if channel is not None:
        channels.get_visible(ctx, channel)
    acl = "" if ctx.principal.is_human else (
        " AND (m.channel IN (SELECT channel FROM subscriptions WHERE principal = :me) OR "
        "p.author = :me)")
    rows = ctx.db.execute(
        f"SELECT {messages.M_COLUMNS} FROM messages m JOIN messages p ON p.seq = m.in_reply_to "
        f"WHERE m.kind = 'decision' AND (:ch IS NULL OR m.channel = :ch){acl} "
        "ORDER BY m.seq DESC LIMIT :lim", {"ch": channel, "me": ctx.principal.name, "lim": limit})
    return wire.MessagesResult(messages=[messages.to_wire(r) for r in rows])


# What of the pending an agent may see: its channels, never one humans alone read (a
# subscription there is refused, so this only guards an old database's).
_HUMANS_ONLY = ", ".join(f"'{ch}'" for ch in sorted(channels.HUMANS_ONLY))
_AGENT_PENDING = (" AND channel IN (SELECT channel FROM subscriptions WHERE principal = :me)"
                  f" AND channel NOT IN ({_HUMANS_ONLY})")


def pending(ctx: Ctx, since: int, limit: int) -> wire.MessagesResult:
    """What waits for a human: the tier-2 posts still pending (escalations among them), oldest
    first after ``since``, in the channels the caller may read (a human: all; an agent: those
    it is subscribed to, never #alerts). Read through the partial index of pending tier-2 posts,
    so it costs what is pending, not the history; it marks nothing delivered."""
    messages.check_limit(limit)
    acl = "" if ctx.principal.is_human else _AGENT_PENDING
    cursor = ctx.db.execute(
        f"SELECT {messages.COLUMNS} FROM messages INDEXED BY messages_held "
        f"WHERE tier = 2 AND status = 'pending' AND seq > :since{acl} ORDER BY seq LIMIT :lim",
        {"since": since, "me": ctx.principal.name, "lim": limit + 1})
    try:
        found, more = messages.page(cursor, limit)  # bounded in text as a read's page is
    finally:
        cursor.close()
    return wire.MessagesResult(messages=found, more=more)
