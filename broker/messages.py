"""Messages: posting, threads (one level), history, flags and full-text search."""

from __future__ import annotations

import re
from collections.abc import Iterable

from chatbox.bus import wire
from chatbox.broker import channels
from chatbox.broker.context import Ctx
from chatbox.broker.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from chatbox.broker.store import index_messages

# the wire's bounds, one definition (chatbox.bus.bounds)
MAX_BODY, MAX_TITLE, MAX_LIMIT, TYPE_RE = wire.MAX_BODY, wire.MAX_TITLE, wire.MAX_LIMIT, wire.TYPE_RE
# @name; a name never ends in "." or "-" here, so "thanks @kim." mentions kim
# the statuses of a tier-2 post: held until a human decides, then decided for good
TIER2_STATUSES = ("pending", "approved", "denied")
MENTION_RE = re.compile(r"(?<![\w@])@([a-z0-9](?:[a-z0-9_.-]{0,62}[a-z0-9_])?)")

#: A message's columns in the order of ``wire.Message``'s fields, so :func:`to_wire` builds
#: it positionally (keywords cost msgspec ~2 µs a message: 0.2 ms of a 100-message batch).
COLUMNS = ("seq, channel, author, kind, body, title, type, tier, in_reply_to, mentions, chain, "
           "hop, turn, pinned, status, resolution, created_at")
#: The same, of the table aliased ``m``.
M_COLUMNS = ", ".join("m." + c.strip() for c in COLUMNS.split(","))


def to_wire(row: tuple) -> wire.Message:
    (seq, channel, author, kind, body, title, type_, tier, in_reply_to, mentions, chain, hop,
     turn, pinned, status, resolution, created_at) = row
    return wire.Message(seq, channel, author, kind, body, title, type_, tier, in_reply_to,
                        mentions.split() if mentions else [], chain, hop, turn, bool(pinned),
                        status, resolution, created_at)


def get(ctx: Ctx, seq: int, field: str = "seq") -> wire.Message:
    row = ctx.db.execute(f"SELECT {COLUMNS} FROM messages WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        raise NotFound(f"no message #{seq}", field=field)
    return to_wire(row)


#: The one refusal of a message the caller may not read, wherever it is: it names neither its
#: channel nor its thread (seqs are global, so that the message exists tells nothing).
NOT_YOURS = "#{seq} is in a channel you may not read (private, or read by humans only)"


def in_view(ctx: Ctx, seq: int, field: str) -> tuple[wire.Message, wire.Message]:
    """Message #``seq`` and the post of its thread, if the caller may see that thread: a human;
    the post's author; else not in a humans-only channel (#alerts) nor in a members-only one
    it is not in. Any other is refused with ``NOT_YOURS``, the same for all."""
    msg = get(ctx, seq, field)
    root = msg if msg.in_reply_to is None else get(ctx, msg.in_reply_to, field)
    p = ctx.principal
    if p.is_human or root.author == p.name:
        return msg, root
    kind = channels.get(ctx, root.channel)[2]
    if root.channel in channels.HUMANS_ONLY or (
            kind in channels.MEMBERS_ONLY
            and channels.subscription(ctx, p.name, root.channel) is None):
        raise Forbidden(NOT_YOURS.format(seq=seq), field=field)
    return msg, root


def clip_body(text: str) -> str:
    """Untrusted engine output made storable: no NUL, at most MAX_BODY bytes of UTF-8."""
    raw = text.replace("\x00", "").encode("utf-8", "replace")
    return raw[:MAX_BODY].decode("utf-8", "ignore")


def check_body(body: str, *, required: bool) -> str:
    if not isinstance(body, str):
        raise Invalid("body must be text", field="body")
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY:
        raise TooLarge(f"body is {size} bytes, over the limit of {MAX_BODY}", field="body")
    if "\x00" in body:
        raise Invalid("body contains a NUL character", field="body")
    if required and not body.strip():
        raise Invalid("body is empty", field="body")
    return body


def check_title(title: str | None, *, required: bool) -> str | None:
    if title is None or not title.strip():
        if required:
            raise Invalid("a post needs a title", field="title")
        return None
    title = title.strip()
    if len(title) > MAX_TITLE:
        raise TooLarge(f"title is {len(title)} characters, over the limit of {MAX_TITLE}",
                       field="title")
    if any(c in title for c in "\x00\r\n"):
        raise Invalid("title must be one line", field="title")
    return title


def post(ctx: Ctx, req: wire.Post, *, kind: str | None = None, chain: int | None = None,
         hop: int = 0, turn: int | None = None) -> wire.Message:
    """Store one message and return it. Chain and hop are the caller's (the dispatcher's)."""
    parent = None
    if req.in_reply_to is not None:
        parent, _ = in_view(ctx, req.in_reply_to, "in_reply_to")
        if parent.in_reply_to is not None:
            raise Invalid(f"#{parent.seq} is itself a reply (to #{parent.in_reply_to}); replies "
                          f"are one level deep: reply to #{parent.in_reply_to}",
                          field="in_reply_to")
        if req.channel is not None and req.channel != parent.channel:
            raise Invalid(f"#{parent.seq} is in {parent.channel}, not {req.channel}",
                          field="channel")
        channel_name = parent.channel
        kind = kind or "reply"
    elif req.channel is None:
        raise Invalid("channel is required", field="channel")
    else:
        channel_name = req.channel
        kind = kind or req.kind
    row = channels.get(ctx, channel_name)
    channels.require_visible(ctx, row)
    if row[6]:
        raise Invalid(f"{channel_name} is archived", field="channel")
    title = check_title(req.title, required=kind == "post")
    body = check_body(req.body, required=kind != "post")
    if req.type is not None and not TYPE_RE.match(req.type):
        raise Invalid(f"type {req.type!r} is invalid: a lowercase word of up to 32 characters",
                      field="type")
    if req.tier not in (0, 1, 2):
        raise Invalid(f"tier must be 0, 1 or 2, got {req.tier}", field="tier")
    if req.tier and kind not in ("post", "escalation"):
        raise Invalid("only a post carries a tier above 0", field="tier")
    mentions = " ".join(dict.fromkeys(MENTION_RE.findall(body)).keys())
    status = "pending" if req.tier == 2 else "open"  # tier 2: a hard stop until a human decides
    seq = ctx.db.execute(
        "INSERT INTO messages(channel, author, kind, title, body, type, tier, in_reply_to, "
        "mentions, chain, hop, turn, status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "RETURNING seq",
        (channel_name, ctx.principal.name, kind, title, body, req.type, req.tier,
         req.in_reply_to, mentions, chain or 0, hop, turn, status, ctx.now)).get
    if chain is None:  # a new chain starts at its first message
        ctx.db.execute("UPDATE messages SET chain = ? WHERE seq = ?", (seq, seq))
        chain = seq
    ctx.db.execute("UPDATE channels SET last_seq = ?, last_activity = ? WHERE name = ?",
                   (seq, ctx.now, channel_name))
    ctx.publish(wire.channel_topic(channel_name),
                wire.MessageEvent(channel=channel_name, seq=seq, author=ctx.principal.name,
                                  kind=kind))
    return wire.Message(seq=seq, channel=channel_name, author=ctx.principal.name, kind=kind,
                        body=body, title=title, type=req.type, tier=req.tier,
                        in_reply_to=req.in_reply_to, mentions=mentions.split(), chain=chain,
                        hop=hop, turn=turn, status=status, created_at=ctx.now)


def check_limit(limit: int, cap: int = MAX_LIMIT) -> int:
    if not 1 <= limit <= cap:
        raise Invalid(f"limit must be between 1 and {cap}, got {limit}", field="limit")
    return limit


#: Characters of text one page of history holds at most, beside its ``limit`` of messages: a
#: read's reply stays well under the server's reply budget however big the messages (without it
#: a page of 1,000 messages of 64 KiB is 64 MiB). A page holds at least one message.
PAGE_TEXT = 8 * 1024 * 1024


def page(rows: Iterable[tuple], limit: int) -> tuple[list[wire.Message], bool]:
    """The first ``limit`` rows or fewer, up to PAGE_TEXT characters; and whether more follow."""
    msgs: list[wire.Message] = []
    size = 0
    for row in rows:
        size += len(row[4]) + len(row[5] or "")  # body, title
        if len(msgs) == limit or (msgs and size > PAGE_TEXT):
            return msgs, True
        msgs.append(to_wire(row))
    return msgs, False


def read(ctx: Ctx, channel: str, since: int, limit: int) -> wire.MessagesResult:
    """History of one channel after ``since``, oldest first: at most ``limit`` messages and
    PAGE_TEXT characters, ``more`` if others follow. Counts as delivered to the reader."""
    check_limit(limit)
    row = channels.get(ctx, channel)
    channels.require_readable(ctx, row)
    cursor = ctx.db.execute(f"SELECT {COLUMNS} FROM messages INDEXED BY messages_channel "
                            "WHERE channel = ? AND seq > ? "
                            "ORDER BY seq LIMIT ?", (channel, max(since, 0), limit + 1))
    try:
        msgs, more = page(cursor, limit)
    finally:
        cursor.close()
    if msgs:
        mark_delivered(ctx, ctx.principal.name, channel, msgs[-1].seq)
    return wire.MessagesResult(messages=msgs, last_seq=row[4], more=more)


def mark_delivered(ctx: Ctx, who: str, channel: str, seq: int) -> None:
    ctx.db.execute(
        "INSERT INTO offsets(principal, channel, acked, delivered, updated_at) "
        "VALUES (?1, ?2, 0, ?3, ?4) ON CONFLICT(principal, channel) DO UPDATE SET "
        "delivered = max(delivered, ?3), updated_at = ?4", (who, channel, seq, ctx.now))


class HeldMarks:
    """Delivery marks (and turns' connections) that reads made while the disk refused writes.

    A read answered after its batch's commit failed runs in a transaction that is rolled back,
    so what it marked would be lost: the rows it stamped with its own time (``mark_delivered``
    sets ``updated_at``, ``turns.connect`` sets ``connected_at``) are collected here, laid into
    every later transaction first — so :func:`offset_of`, and with it an ack, sees them — and
    forgotten once one of those commits. Bounded by principals x channels and open turns."""

    def __init__(self) -> None:
        self.delivered: dict[tuple[str, str], int] = {}
        self.connected: dict[int, tuple[str, float]] = {}

    def collect(self, ctx: Ctx) -> None:
        """Keep what the reads of ``ctx`` (a transaction about to be rolled back) marked."""
        for who, channel, seq in ctx.db.execute(
                "SELECT principal, channel, delivered FROM offsets WHERE updated_at = ?",
                (ctx.now,)):
            self.delivered[who, channel] = max(self.delivered.get((who, channel), 0), seq)
        for turn, agent in ctx.db.execute(
                "SELECT t.id, t.agent FROM agent_state a JOIN turns t ON t.id = a.current_turn "
                "WHERE t.connected_at = ?", (ctx.now,)):
            self.connected.setdefault(turn, (agent, ctx.now))

    def apply(self, ctx: Ctx) -> None:
        """Lay the held marks into the open transaction (each never moves a mark back)."""
        for (who, channel), seq in self.delivered.items():
            mark_delivered(ctx, who, channel, seq)
        for turn, (agent, at) in self.connected.items():
            ctx.db.execute("UPDATE turns SET connected_at = ? WHERE id = ? AND agent = ? AND "
                           "ended_at IS NULL AND connected_at IS NULL", (at, turn, agent))

    def clear(self) -> None:
        self.delivered.clear()
        self.connected.clear()


def offset_of(ctx: Ctx, who: str, channel: str) -> tuple[int, int]:
    """``who``'s (acked, delivered) seqs in ``channel``; (0, 0) before its first delivery."""
    row = ctx.db.execute("SELECT acked, delivered FROM offsets WHERE principal = ? AND channel = ?",
                         (who, channel)).fetchone()
    return row or (0, 0)


def thread(ctx: Ctx, seq: int) -> wire.ThreadResult:
    """A post and its replies; any channel that is not private, as the seed intended."""
    _, msg = in_view(ctx, seq, "post_id")  # an agent reads the decisions on its escalation
    replies = [to_wire(r) for r in ctx.db.execute(
        f"SELECT {COLUMNS} FROM messages WHERE in_reply_to = ? ORDER BY seq", (msg.seq,))]
    return wire.ThreadResult(post=msg, replies=replies)


def set_flag(ctx: Ctx, seq: int, action: str, resolution: str | None) -> wire.Message:
    msg, _ = in_view(ctx, seq, "post_id")
    if msg.author != ctx.principal.name and not ctx.principal.is_human:
        raise Forbidden(f"#{seq} is {msg.author}'s: an agent may {action} only its own messages",
                        field="post_id")
    if action in ("close", "resolve", "unresolve") and msg.status in TIER2_STATUSES:
        # a tier-2 hold is lifted by a human's decision alone, and a decision stays made
        raise Conflict(f"#{seq} is a tier-2 post ({msg.status}): only a human's approve or deny "
                       "changes its status", field="post_id")
    if action in ("pin", "unpin"):
        ctx.db.execute("UPDATE messages SET pinned = ? WHERE seq = ?", (action == "pin", seq))
    elif action == "close":
        if resolution is not None and len(resolution) > wire.MAX_RESOLUTION:
            raise TooLarge("resolution is too long", field="resolution")
        ctx.db.execute("UPDATE messages SET status = 'closed', resolution = ? WHERE seq = ?",
                       (resolution, seq))
    elif action == "resolve":
        ctx.db.execute("UPDATE messages SET status = 'resolved' WHERE seq = ?", (seq,))
    elif action == "unresolve":
        ctx.db.execute("UPDATE messages SET status = 'open', resolution = NULL WHERE seq = ?",
                       (seq,))
    return get(ctx, seq)


SEARCH_WINDOW = 2000  # matches ranked, newest first


def search(ctx: Ctx, query: str, channel: str | None, limit: int) -> wire.MessagesResult:
    """Full-text search over what the principal may read; every word must match. The results
    are the best ranked of the newest ``SEARCH_WINDOW`` matches."""
    check_limit(limit, wire.MAX_SEARCH)
    index_messages(ctx.db)
    words = re.findall(r"\w+", query or "")
    if not words:
        raise Invalid("query has no words to search for", field="query")
    match = " ".join('"' + w.replace('"', '""') + '"' for w in words[:32])
    if channel is not None:
        channels.require_readable(ctx, channels.get(ctx, channel))
    acl = "" if ctx.principal.is_human else (
        " AND m.channel IN (SELECT channel FROM subscriptions WHERE principal = :me)")
    # the best of the newest SEARCH_WINDOW matches: ranking every match of a word that is in
    # most messages would hold the broker's one loop for seconds at a million messages
    rows = ctx.db.execute(
        f"WITH c AS MATERIALIZED (SELECT f.rowid AS seq, f.rank AS rank FROM messages_fts f "
        f"JOIN messages m ON m.seq = f.rowid "
        f"WHERE messages_fts MATCH :q AND (:ch IS NULL OR m.channel = :ch){acl} "
        "ORDER BY f.rowid DESC LIMIT :window) "
        f"SELECT {M_COLUMNS} FROM c JOIN messages m ON m.seq = c.seq ORDER BY c.rank, m.seq DESC "
        "LIMIT :lim",
        {"q": match, "ch": channel, "me": ctx.principal.name, "lim": limit,
         "window": SEARCH_WINDOW}).fetchall()
    return wire.MessagesResult(messages=[to_wire(r) for r in rows])
