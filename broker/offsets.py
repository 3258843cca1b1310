"""Durable consumer offsets: what each principal has acked, and what is still unacked for it.

An ack is monotonic, and only up to a seq that exists in that channel and that was delivered to
that principal (by a read, an inbox, or a turn's batch). The log plus the offsets is the queue.
"""

from __future__ import annotations

from chatbox.bus import wire
from chatbox.broker import channels
from chatbox.broker.context import Ctx
from chatbox.broker.errors import Forbidden, Invalid
from chatbox.broker.messages import COLUMNS, check_limit, mark_delivered, offset_of, to_wire

_M_COLUMNS = ", ".join("m." + c.strip() for c in COLUMNS.split(","))

# A message is due to wake an agent when its subscription's wake mode matches it.
_WAKE_MATCH = (
    " AND s.wake != 'none' AND (s.wake = 'all' OR instr(' ' || m.mentions || ' ', ' ' || :me || ' ')"
    " OR EXISTS (SELECT 1 FROM messages p WHERE p.seq = m.in_reply_to AND p.author = :me))")


def unacked(ctx: Ctx, who: str, limit: int, *, due_only: bool,
            max_hops: int = 2**31) -> list[wire.Message]:
    """Unacked messages of others in ``who``'s subscriptions, oldest first.

    ``due_only`` keeps only those its wake modes say should wake it and whose hop is under the
    hop budget (a turn's batch).
    """
    sql = (f"SELECT {_M_COLUMNS} FROM subscriptions s "
           "JOIN offsets o ON o.principal = s.principal AND o.channel = s.channel "
           "JOIN messages m ON m.channel = s.channel AND m.seq > o.acked "
           "WHERE s.principal = :me AND m.author != :me"
           + (_WAKE_MATCH + " AND m.hop < :max_hops" if due_only else "") +
           f" UNION SELECT {_M_COLUMNS} FROM direct d JOIN messages m ON m.seq = d.seq "
           "WHERE d.agent = :me AND d.acked = 0 ORDER BY 1 LIMIT :lim")
    return [to_wire(r) for r in ctx.db.execute(sql, {"me": who, "lim": limit,
                                                     "max_hops": max_hops})]


def direct(ctx: Ctx, who: str, limit: int) -> list[wire.Message]:
    """Unacked messages addressed to ``who`` alone (decisions on its posts), oldest first."""
    return [to_wire(r) for r in ctx.db.execute(
        f"SELECT {_M_COLUMNS} FROM direct d JOIN messages m ON m.seq = d.seq "
        "WHERE d.agent = ? AND d.acked = 0 ORDER BY m.seq LIMIT ?", (who, limit))]


def deliver(ctx: Ctx, who: str, msgs: list[wire.Message]) -> None:
    newest: dict[str, int] = {}
    for m in msgs:
        newest[m.channel] = max(newest.get(m.channel, 0), m.seq)
    for channel, seq in newest.items():
        mark_delivered(ctx, who, channel, seq)


def inbox(ctx: Ctx, limit: int) -> wire.MessagesResult:
    check_limit(limit)
    msgs = unacked(ctx, ctx.principal.name, limit + 1, due_only=False)
    more = len(msgs) > limit
    msgs = msgs[:limit]
    deliver(ctx, ctx.principal.name, msgs)
    return wire.MessagesResult(messages=msgs, last_seq=msgs[-1].seq if msgs else 0, more=more)


def ack(ctx: Ctx, channel: str, up_to: int) -> wire.AckResult:
    me = ctx.principal.name
    row = channels.get(ctx, channel)
    in_channel = ctx.db.execute("SELECT channel FROM messages WHERE seq = ?", (up_to,)).get
    direct = ctx.db.execute("SELECT 1 FROM direct WHERE agent = ? AND seq = ?", (me, up_to)).get
    if direct and in_channel == row[0]:  # a decision on my post, delivered to me directly
        set_acked(ctx, me, channel, up_to)
        return wire.AckResult(channel=channel, last_read=up_to)
    if not ctx.principal.is_human and channels.subscription(ctx, me, channel) is None:
        raise Forbidden(f"not subscribed to {channel}", field="channel")
    if in_channel != row[0]:  # never where it is: the caller may not be able to read that
        raise Invalid(f"cannot ack #{up_to} in {channel}: it is not a message of {channel}",
                      field="up_to")
    done, delivered = offset_of(ctx, me, channel)
    if up_to > delivered:
        raise Invalid(f"cannot ack #{up_to} in {channel}: it was not delivered to you yet "
                      f"(delivered up to #{delivered}; read it first)", field="up_to")
    if up_to > done:
        set_acked(ctx, me, channel, up_to)
        done = up_to
    return wire.AckResult(channel=channel, last_read=done)


def set_acked(ctx: Ctx, who: str, channel: str, seq: int) -> None:
    """Move ``who``'s offset in ``channel`` up to ``seq`` (never back); direct deliveries too."""
    ctx.db.execute("UPDATE offsets SET acked = max(acked, ?), updated_at = ? "
                   "WHERE principal = ? AND channel = ?", (seq, ctx.now, who, channel))
    ctx.db.execute("UPDATE direct SET acked = 1 WHERE agent = ? AND acked = 0 AND seq <= ? AND "
                   "seq IN (SELECT seq FROM messages WHERE channel = ?)", (who, seq, channel))


def of(ctx: Ctx, who: str) -> dict[str, int]:
    return dict(ctx.db.execute("SELECT channel, acked FROM offsets WHERE principal = ? "
                               "ORDER BY channel", (who,)))
