"""Durable consumer offsets: what each principal has acked, and what is still unacked for it.

An ack is monotonic, and only up to a seq that exists in that channel and that was delivered to
that principal (by a read, an inbox, or a turn's batch). The log plus the offsets is the queue.

What is unacked is read head by head: one index seek per subscription (on ``(channel, seq)``
after its offset, or on ``addressed`` for a wake mode of "mentions"), one on the unacked direct
deliveries, each with its own LIMIT, merged in seq order in Python. A call reads about as many
rows as it returns, however long the backlog: never every unacked row before it sorts and cuts.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

import apsw

from chatbox.bus import wire
from chatbox.broker import channels
from chatbox.broker.context import Ctx
from chatbox.broker.errors import Forbidden, Invalid
from chatbox.broker.messages import (M_COLUMNS, check_limit, mark_delivered, offset_of,
                                     to_wire)

# The head of one subscription: messages of others after the offset. In a turn's batch a
# message must also be under the hop budget.
_CHANNEL_HEAD = (f"SELECT {M_COLUMNS} FROM messages m INDEXED BY messages_channel "
                 "WHERE m.channel = :ch AND m.seq > :after "
                 "AND m.author != :me{hops} ORDER BY m.seq LIMIT :lim")
# A wake mode of "mentions": only what mentions the agent or replies to its posts (addressed).
_ADDRESSED_HEAD = (f"SELECT {M_COLUMNS} FROM addressed a CROSS JOIN messages m "
                   "ON m.seq = a.seq "
                   "WHERE a.principal = :me AND a.channel = :ch AND a.seq > :after "
                   "AND m.author != :me{hops} ORDER BY a.seq LIMIT :lim")
_HOPS = " AND m.hop < :max_hops"
# Addressed to the agent alone, outside its subscriptions (a decision on its post).
_DIRECT_HEAD = (f"SELECT {M_COLUMNS} FROM direct d INDEXED BY direct_unacked "
                "CROSS JOIN messages m ON m.seq = d.seq "
                "WHERE d.agent = :me AND d.acked = 0 ORDER BY d.seq LIMIT :lim")


def head_queries(ctx: Ctx, who: str, *, due_only: bool) -> list[tuple[str, dict[str, object]]]:
    """One (sql, parameters) per head that ``unacked`` merges, each an index seek; the
    parameters lack ``lim`` and ``max_hops``."""
    hops = _HOPS if due_only else ""
    heads: list[tuple[str, dict[str, object]]] = []
    for channel, wake, acked in ctx.db.execute(
            "SELECT s.channel, s.wake, o.acked FROM subscriptions s JOIN offsets o "
            "ON o.principal = s.principal AND o.channel = s.channel WHERE s.principal = ?",
            (who,)):
        if due_only and wake == "none":
            continue
        sql = _ADDRESSED_HEAD if due_only and wake == "mentions" else _CHANNEL_HEAD
        heads.append((sql.format(hops=hops), {"me": who, "ch": channel, "after": acked}))
    heads.append((_DIRECT_HEAD, {"me": who}))
    return heads


def unacked(ctx: Ctx, who: str, limit: int, *, due_only: bool,
            max_hops: int = 2**31) -> list[wire.Message]:
    """Unacked messages of others in ``who``'s subscriptions, and those addressed to it
    directly, oldest first, at most ``limit``.

    ``due_only`` keeps only those its wake modes say should wake it and whose hop is under the
    hop budget (a turn's batch).
    """
    if limit < 1:  # SQLite reads LIMIT -1 as no limit at all
        return []
    cursors = [ctx.db.execute(sql, {**params, "lim": limit, "max_hops": max_hops})
               for sql, params in head_queries(ctx, who, due_only=due_only)]
    try:
        return [to_wire(row) for row in _merge(cursors, limit)]
    finally:
        for cursor in cursors:
            cursor.close()


def _merge(cursors: list[apsw.Cursor], limit: int) -> Iterator[tuple]:
    """The first ``limit`` rows of the heads in seq order, each seq once (a direct delivery may
    be in a subscribed channel too). Each head is read only as far as the merge needs; when
    only one head has rows (one busy channel: the common case), it is read straight through,
    without the merge's cost per row."""
    heads = [(first, cursor) for cursor in cursors if (first := next(cursor, None)) is not None]
    if len(heads) == 1:
        first, cursor = heads[0]
        yield first
        yield from itertools.islice(cursor, limit - 1)
        return
    last = None
    taken = 0
    for row in heapq.merge(*(itertools.chain((first,), cursor) for first, cursor in heads),
                           key=_seq):
        if row[0] == last:
            continue
        last = row[0]
        yield row
        taken += 1
        if taken == limit:
            return


def _seq(row: tuple) -> int:
    return row[0]


def direct(ctx: Ctx, who: str, limit: int) -> list[wire.Message]:
    """Unacked messages addressed to ``who`` alone (decisions on its posts), oldest first."""
    return [to_wire(r) for r in ctx.db.execute(_DIRECT_HEAD, {"me": who, "lim": limit})]


def deliver(ctx: Ctx, who: str, msgs: list[wire.Message]) -> None:
    """Mark ``msgs`` (oldest first) delivered to ``who``: the newest of each channel."""
    newest = {m.channel: m.seq for m in msgs}  # oldest first: a channel's last is its newest
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
    channels.require_visible(ctx, row)  # a members-only channel the caller is not in: missing
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
    ctx.db.execute("UPDATE direct INDEXED BY direct_unacked SET acked = 1 "
                   "WHERE agent = ? AND acked = 0 AND seq <= ? AND "
                   "(SELECT channel FROM messages WHERE seq = direct.seq) = ?", (who, seq, channel))


def of(ctx: Ctx, who: str) -> dict[str, int]:
    return dict(ctx.db.execute("SELECT channel, acked FROM offsets WHERE principal = ? "
                               "ORDER BY channel", (who,)))
