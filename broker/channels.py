"""Channels, subscriptions and the read ACL (DESIGN §3, §7).

Humans and admins read everything. An agent reads history only in channels it is subscribed to;
it may see (post to, open a thread in) any channel that is not private or a canary; private
channels and canaries are for their members alone.

Who creates what: the broker creates the standing channels of ``STANDING`` at every start (so a
workspace made before one was added gets it too); a human or admin may create any kind; an
agent may create ad-hoc and private channels only, never a standing channel or a canary.

A refusal never tells an agent more than it may see. A members-only channel it is not in is,
to it, a channel that does not exist: a request that names one (post, read, subscribe,
unsubscribe, search or decisions in it) is answered ``not_found`` "no channel #x", word for
word as for a name that was never created, by ``require_visible`` (or ``get_visible``) before
any other check that could tell the two apart (archived, subscribed, ...). Creating a channel
is the one request that cannot hide a name: names are one namespace, so a taken one must be
refused. That refusal is one sentence for
every taken name and every caller ("the name #x is taken"): it confirms that the name is in
use, as a failed create must, and nothing else: not whether the channel is private, its topic,
its members or its messages.
"""

from __future__ import annotations

from chatbox.bus import wire
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.errors import Conflict, Forbidden, Invalid, NotFound
from chatbox.broker.principals import get as get_principal

STANDING = (("#general", "Everyone, everything"), ("#dispatch", "Work handed out and reported"),
            ("#alerts", "Escalations for a human"),
            # the seed's standing channels, kept so that its prompts and clients find them
            ("#change-orders", "Changes to agreed work"), ("#debug", "Debugging"),
            ("#observations", "Observations"))
MEMBERS_ONLY = ("private", "canary")
HUMANS_CREATE = ("standing", "canary")  # kinds an agent may not create (adhoc, private it may)
HUMANS_ONLY = frozenset({"#alerts"})  # read by humans only (require_human_reader)


def check_channel_name(name: str, field: str = "channel") -> str:
    if not wire.is_channel(name):
        raise Invalid(f"{field} {name!r} is invalid: {wire.CHANNEL_RULE}", field=field)
    return name


SYSTEM = "system"  # the broker's own voice: escalations by guardrails; it has no token


def create_standing(ctx: Ctx) -> None:
    """The standing channels and the system principal: at `chatbox init` and at every broker
    start, so a standing channel added since a workspace was made appears in it too."""
    ctx.db.execute("INSERT OR IGNORE INTO principals(name, role, created_at) "
                   "VALUES (?, 'admin', ?)", (SYSTEM, ctx.now))
    for name, topic in STANDING:
        ctx.db.execute(
            "INSERT OR IGNORE INTO channels(name, topic, kind, created_by, created_at) "
            "VALUES (?, ?, 'standing', NULL, ?)", (name, topic, ctx.now))


def get(ctx: Ctx, name: str, field: str = "channel") -> tuple:
    """(name, topic, kind, created_by, last_seq, last_activity, archived) or NotFound."""
    check_channel_name(name, field)
    row = ctx.db.execute(
        "SELECT name, topic, kind, created_by, last_seq, last_activity, archived FROM channels "
        "WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no channel {name}", field=field)
    return row


def subscription(ctx: Ctx, who: str, channel: str) -> tuple[str, str] | None:
    return ctx.db.execute("SELECT view, wake FROM subscriptions WHERE principal = ? AND channel = ?",
                          (who, channel)).fetchone()


def require_visible(ctx: Ctx, row: tuple, p: Principal | None = None,
                    field: str = "channel") -> None:
    """May ``p`` see this channel at all (post to it, open a thread in it)? A members-only
    channel ``p`` is not in is refused exactly as a missing one is (see the module docstring)."""
    p = p or ctx.principal
    if p.is_human or row[2] not in MEMBERS_ONLY:
        return
    if subscription(ctx, p.name, row[0]) is None:
        raise NotFound(f"no channel {row[0]}", field=field)


def get_visible(ctx: Ctx, name: str, field: str = "channel") -> tuple:
    """The row of channel ``name`` if the principal may see it; NotFound, the same, if it does
    not exist or is members-only and the principal is not in it."""
    row = get(ctx, name, field)
    require_visible(ctx, row, field=field)
    return row


def require_human_reader(ctx: Ctx, channel: str) -> None:
    """``#alerts`` is read by humans only: an escalation there may quote what only some of the
    agents may read (a private channel's message, another agent's output)."""
    if channel in HUMANS_ONLY and not ctx.principal.is_human:
        raise Forbidden(f"{channel} is read by humans only (escalations there may quote what "
                        "you cannot read); an agent may post to it, not read it", field="channel")


def require_readable(ctx: Ctx, row: tuple) -> None:
    """May the principal read this channel's history? Agents: only where subscribed, never
    ``#alerts``."""
    p = ctx.principal
    if p.is_human:
        return
    require_visible(ctx, row)
    require_human_reader(ctx, row[0])
    if subscription(ctx, p.name, row[0]) is None:
        raise Forbidden(f"not subscribed to {row[0]}: subscribe first to read it", field="channel")


def create(ctx: Ctx, name: str, topic: str, kind: str) -> wire.ChannelInfo:
    check_channel_name(name, "name")
    topic = (topic or "").strip()
    if kind == "adhoc" and not topic:
        raise Invalid("an ad-hoc channel needs a topic", field="topic")
    if len(topic) > wire.MAX_TOPIC:
        raise Invalid(f"topic is {len(topic)} characters, over the limit of {wire.MAX_TOPIC}",
                      field="topic")
    if kind in HUMANS_CREATE and not ctx.principal.is_human:
        raise Forbidden(f"only a human or admin may create a {kind} channel such as {name}; "
                        "ask one to create it", field="kind")
    if ctx.db.execute("SELECT 1 FROM channels WHERE name = ?", (name,)).fetchone():
        # the same sentence for every taken name: nothing about the channel but that it exists
        raise Conflict(f"the name {name} is taken: choose another", field="name")
    ctx.db.execute("INSERT INTO channels(name, topic, kind, created_by, created_at) "
                   "VALUES (?, ?, ?, ?, ?)", (name, topic, kind, ctx.principal.name, ctx.now))
    if kind == "private":
        _upsert_subscription(ctx, ctx.principal.name, name, "full", "all", 0)
    return info(ctx, name)


def subscribe(ctx: Ctx, channel: str, view: str, wake: str, agent: str | None) -> wire.SubscriptionResult:
    who = agent or ctx.principal.name
    if who != ctx.principal.name and not ctx.principal.is_human:
        raise Forbidden("an agent may subscribe only itself", field="agent")
    target = get_principal(ctx.db, who)
    row = get_visible(ctx, channel)  # an agent subscribes only itself: a member re-subscribes
    if channel in HUMANS_ONLY and target[1] == "agent":
        raise Forbidden(f"{channel} is read by humans only; no agent subscribes to it",
                        field="channel")
    if row[6]:
        raise Invalid(f"{channel} is archived", field="channel")
    _upsert_subscription(ctx, who, channel, view, wake, row[4])
    acked = ctx.db.execute("SELECT acked FROM offsets WHERE principal = ? AND channel = ?",
                           (who, channel)).get
    return wire.SubscriptionResult(agent=who, subscription=wire.Subscription(
        channel=channel, view=view, wake=wake, last_read=acked or 0))


def _upsert_subscription(ctx: Ctx, who: str, channel: str, view: str, wake: str,
                         start_at: int) -> None:
    ctx.db.execute(
        "INSERT INTO subscriptions(principal, channel, view, wake, created_at) VALUES (?,?,?,?,?) "
        "ON CONFLICT(principal, channel) DO UPDATE SET view = excluded.view, wake = excluded.wake",
        (who, channel, view, wake, ctx.now))
    # A new subscriber starts at the channel's present: history stays readable, but is not
    # a backlog that wakes it.
    ctx.db.execute(
        "INSERT OR IGNORE INTO offsets(principal, channel, acked, delivered, updated_at) "
        "VALUES (?, ?, ?, ?, ?)", (who, channel, start_at, start_at, ctx.now))


def unsubscribe(ctx: Ctx, channel: str, agent: str | None) -> None:
    who = agent or ctx.principal.name
    if who != ctx.principal.name and not ctx.principal.is_human:
        raise Forbidden("an agent may unsubscribe only itself", field="agent")
    get_visible(ctx, channel)
    if subscription(ctx, who, channel) is None:
        raise NotFound(f"{who} is not subscribed to {channel}", field="channel")
    ctx.db.execute("DELETE FROM subscriptions WHERE principal = ? AND channel = ?", (who, channel))


def subscriptions_of(ctx: Ctx, who: str) -> list[wire.Subscription]:
    return [wire.Subscription(channel=c, view=v, wake=w, last_read=a or 0)
            for c, v, w, a in ctx.db.execute(
                "SELECT s.channel, s.view, s.wake, o.acked FROM subscriptions s LEFT JOIN offsets o "
                "ON o.principal = s.principal AND o.channel = s.channel WHERE s.principal = ? "
                "ORDER BY s.channel", (who,))]


def info(ctx: Ctx, name: str) -> wire.ChannelInfo:
    for ch in rooms(ctx, only=name):
        return ch
    raise NotFound(f"no channel {name}", field="channel")


UNREAD_CAP = 1000  # unread counts stop here: counting a million would hold the broker's loop


def rooms(ctx: Ctx, only: str | None = None) -> list[wire.ChannelInfo]:
    """Channels the principal can see, with its subscription and unread count in each (at most
    ``UNREAD_CAP``: a count of 1000 means 1000 or more)."""
    p = ctx.principal
    out = []
    for name, topic, kind, by, last_seq, last_act, view, wake, acked in ctx.db.execute(
            "SELECT c.name, c.topic, c.kind, c.created_by, c.last_seq, c.last_activity, "
            "s.view, s.wake, o.acked FROM channels c "
            "LEFT JOIN subscriptions s ON s.channel = c.name AND s.principal = ?1 "
            "LEFT JOIN offsets o ON o.channel = c.name AND o.principal = ?1 "
            "WHERE c.archived = 0 AND (?2 IS NULL OR c.name = ?2) ORDER BY c.name", (p.name, only)):
        if kind in MEMBERS_ONLY and view is None and not p.is_human:
            continue
        unread = ctx.db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM messages INDEXED BY messages_channel "
            "WHERE channel = ? AND seq > ? AND author != ? LIMIT ?)",
            (name, acked or 0, p.name, UNREAD_CAP)).get if (view is not None or p.is_human) else 0
        out.append(wire.ChannelInfo(name=name, topic=topic, kind=kind, created_by=by,
                                    last_seq=last_seq, last_activity=last_act, unread=unread,
                                    subscribed=view is not None, view=view, wake=wake))
    return out
