"""``chatbox init --import-agentchat DIR``: a seed (AgentChat) workspace carried into a new one.

The seed keeps its state in one SQLite file, ``.agentchat/db.sqlite``. It is opened read-only
and nothing of it changes. Carried over, in ``chatbox init``'s one transaction (all or none):

- every channel: its description as the topic, standing or ad-hoc, its times; a channel that
  only messages name (the seed's ``chat`` posted to channels it never created) comes in ad-hoc;
- every message under its own id, so that replies, read cursors and a client's ``since_id``
  keep their meaning: kind, title, body (a post's description: the seed stored
  ``title\\n\\ndescription`` as a post's body), type, tier, pin, closed with its resolution or
  resolved, time; its @mentions as ChatBox finds them. A tier-2 post still open is ``pending``:
  the seed held nothing and any agent could approve, so a human decides it now;
- every subscription with its view, and every read cursor as the acked offset (a subscription
  without one starts at the channel's newest message, as a new subscription does);
- every name as a principal: ``human`` (``chatbox init --human``) as the admin, the seed's own
  voice (``broker``) as ChatBox's ``system``, every other name as an agent with a token file,
  run by the CLI it is named for (``claude``, ``kimi``, ``codex``, ``gemini``), else the stub.

Everything is checked before anything is written: what ChatBox cannot hold (a name, a channel,
a type, a text out of its bounds) is named, up to ``MAX_PROBLEMS`` of them, and nothing is made.
``renames`` (``--rename OLD=NEW``) maps a seed name or channel to a valid one.

Not carried over: a message's ``phase`` label, the seed's sessions and liveness (it reset them
at every start), its audit log (ChatBox's chain begins, and records the import), its
``dispatch_comms.jsonl`` (left as it is; ChatBox's trail appends its own lines after it).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from chatbox.bus import wire
from chatbox.broker import channels
from chatbox.broker.context import Ctx
from chatbox.broker.errors import Invalid
from chatbox.broker.messages import MENTION_RE
from chatbox.broker.principals import create as create_principal
from chatbox.broker.store import index_messages
from chatbox.runtime.config import Engine
from chatbox.runtime.workspace import SEED_DIR, Workspace, new_token, write_secret

SEED_DB = "db.sqlite"
SEED_VOICE = "broker"  # the author of the seed's own alerts
MAX_PROBLEMS = 10
_LINE = re.compile(wire.LINE_PATTERN)  # a title's and a topic's rule, as on the wire
VIEWS = ("headlines", "digest", "full")
# An agent named as a CLI is run by it; the seed ran every agent with one engine of its
# doorbell's, and named agents for their CLI (``claude``, ``kimi``). Any other gets the stub.
CLI_ENGINES = tuple(e for e in typing.get_args(Engine) if e not in ("stub", "command"))
KINDS = ("chat", "post", "reply")

# The seed's tables and the columns read from each; ``resolved`` came in a later seed (its
# databases from before lack it), ``cursors`` with its autonomy runtime.
_MESSAGES = ("id, channel, author, ts, kind, body, in_reply_to, title, description, msg_type, "
             "tier, pinned, closed_resolution, {resolved}")
_REQUIRED = {"channels": {"name", "description", "is_standing", "created_at", "last_activity"},
             "messages": {"id", "channel", "author", "ts", "kind", "body", "in_reply_to", "title",
                          "description", "msg_type", "tier", "pinned", "closed_resolution"},
             "subscriptions": {"agent", "channel", "view"}}
_OPTIONAL = {"cursors": {"agent", "channel", "last_read_id"}, "agents": {"name"},
             "liveness": {"agent"}}


def locate(path: str | Path) -> Path:
    """The seed's database, given its workspace, its ``.agentchat`` directory or the file."""
    p = Path(path)
    for candidate in (p / SEED_DIR / SEED_DB, p / SEED_DB, p):
        if candidate.is_file():
            return candidate.resolve()
    if not p.exists():
        raise Invalid(f"--import-agentchat {path}: no such file or directory",
                      field="import_agentchat")
    raise Invalid(f"--import-agentchat {path}: no seed database there (looked for "
                  f"{p / SEED_DIR / SEED_DB})", field="import_agentchat")


def parse_renames(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise Invalid(f"--rename {pair!r}: give OLD=NEW (a name, or a #channel)",
                          field="rename")
        if old.startswith("#") != new.startswith("#"):
            raise Invalid(f"--rename {pair!r}: a channel is renamed to a channel, a name to a "
                          "name", field="rename")
        out[old] = new
    return out


@dataclass
class Report:
    source: Path
    channels: int = 0
    messages: int = 0
    subscriptions: int = 0
    cursors: int = 0
    agents: dict[str, str] = field(default_factory=dict)  # name: engine
    pending: list[int] = field(default_factory=list)  # tier-2 posts a human decides now
    skipped: list[str] = field(default_factory=list)  # what the seed had and means nothing here

    def detail(self) -> dict:
        return {"source": str(self.source), "channels": self.channels,
                "messages": self.messages, "subscriptions": self.subscriptions,
                "cursors": self.cursors, "agents": self.agents, "pending": self.pending[:100]}


class Seed:
    """The seed's database, read-only; names and channels as they come in (renamed)."""

    def __init__(self, path: Path, human: str, renames: dict[str, str]):
        self.path = path
        self.human = human
        self.renames = renames
        try:
            self.db = apsw.Connection(f"file:{path}?mode=ro",
                                      flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
            tables = {t: {r[1] for r in self.db.execute(f"PRAGMA table_info({t})")}
                      for t in (*_REQUIRED, *_OPTIONAL)}
        except apsw.Error as exc:
            raise Invalid(f"{path} is not a readable SQLite database ({exc})",
                          field="import_agentchat") from None
        for table, cols in _REQUIRED.items():
            if not tables[table] >= cols:
                missing = ", ".join(sorted(cols - tables[table]))
                raise Invalid(f"{path} is not a seed database: table {table} lacks {missing}",
                              field="import_agentchat")
        self.has = {t for t, cols in _OPTIONAL.items() if tables[t] >= cols}
        self.has_resolved = "resolved" in tables["messages"]

    def close(self) -> None:
        self.db.close()

    def name(self, seed_name: str) -> str:
        if seed_name == SEED_VOICE and seed_name not in self.renames:
            return channels.SYSTEM
        return self.renames.get(seed_name, seed_name)

    def channel(self, seed_name: str) -> str:
        return self.renames.get(seed_name, seed_name)

    def channels(self) -> Iterator[tuple]:
        """(name, topic, standing, created_at, last_activity) of every channel, with those only
        messages name (ad-hoc, created at their first message)."""
        yield from self.db.execute(
            "SELECT name, description, is_standing, created_at, last_activity FROM channels "
            "UNION ALL SELECT channel, '', 0, min(ts), max(ts) FROM messages "
            "WHERE channel NOT IN (SELECT name FROM channels) GROUP BY channel ORDER BY 1")

    def messages(self) -> Iterator[tuple]:
        cols = _MESSAGES.format(resolved="resolved" if self.has_resolved else "0")
        yield from self.db.execute(f"SELECT {cols} FROM messages ORDER BY id")

    def subscriptions(self) -> Iterator[tuple]:
        yield from self.db.execute("SELECT agent, channel, view FROM subscriptions "
                                   "ORDER BY agent, channel")

    def cursors(self) -> Iterator[tuple]:
        if "cursors" in self.has:
            yield from self.db.execute("SELECT agent, channel, last_read_id FROM cursors "
                                       "ORDER BY agent, channel")

    def seed_names(self) -> list[str]:
        """Every name the seed knows, as the seed spells it: authors, subscribers, readers."""
        parts = ["SELECT author FROM messages", "SELECT agent FROM subscriptions"]
        parts += [f"SELECT {c} FROM {t}" for t, c in
                  (("cursors", "agent"), ("agents", "name"), ("liveness", "agent"))
                  if t in self.has]
        return [r[0] for r in self.db.execute(" UNION ".join(parts) + " ORDER BY 1")
                if isinstance(r[0], str)]

    def names(self) -> list[str]:
        """Every name the seed knows, as it comes in."""
        return list(dict.fromkeys(self.name(n) for n in self.seed_names()))


def _body(kind: str, title: str | None, body: str, description: str | None) -> str:
    """A post's body is its description; the seed stored ``title\\n\\ndescription`` beside it.
    Any other body is kept as it is."""
    if kind == "post" and description is not None and body == f"{title}\n\n{description}":
        return description
    return body


def _text_problem(what: str, text: object, limit: int, *, one_line: bool) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        return f"{what} is not text"
    if "\x00" in text:
        return f"{what} contains a NUL character"
    if one_line and not _LINE.match(text):
        return f"{what} is not one line of text without control characters"
    size = len(text) if one_line else len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        return f"{what} is {size} {'characters' if one_line else 'bytes'}, over ChatBox's " \
               f"limit of {limit}"
    return None


def check(seed: Seed) -> None:
    """Everything ChatBox cannot hold, named; raises before anything is written."""
    problems: list[str] = []

    def note(text: str) -> None:
        problems.append(text)

    for raw in seed.seed_names():
        n = seed.name(raw)
        if n == channels.SYSTEM and raw != SEED_VOICE:
            note(f"the seed's name {raw!r} is ChatBox's own (the broker's voice): "
                 f"--rename {raw}=NEW")
        elif not wire.is_name(n):
            note(f"the seed's name {raw!r} is invalid here ({wire.NAME_RULE}): "
                 f"--rename {raw}=NEW")
    for (name, topic, *_rest) in seed.channels():
        new = seed.channel(name)
        if not wire.is_channel(new):
            note(f"the seed's channel {name!r} is invalid here ({wire.CHANNEL_RULE}): "
                 f"--rename {name}=#NEW")
        problem = _text_problem(f"the topic of {name}", topic, wire.MAX_TOPIC, one_line=True)
        if problem:
            note(problem)
    posts: dict[int, str] = {}
    for row in seed.messages():
        if len(problems) >= MAX_PROBLEMS:
            break
        (seq, channel, _author, _ts, kind, body, in_reply_to, title, description, msg_type,
         tier, _pinned, _closed, _resolved) = row
        where = f"message {seq} (in {channel})"
        if kind not in KINDS:
            note(f"{where} is of kind {kind!r}; the seed's kinds are {', '.join(KINDS)}")
            continue
        for problem in (
                _text_problem(f"the body of {where}", _body(kind, title, body, description),
                              wire.MAX_BODY, one_line=False),
                _text_problem(f"the title of {where}", title and title.strip(), wire.MAX_TITLE,
                              one_line=True)):
            if problem:
                note(problem)
        if msg_type is not None and not wire.TYPE_RE.match(msg_type):
            note(f"the type of {where}, {msg_type!r}, is invalid here ({wire.TYPE_RULE})")
        if tier not in (None, 0, 1, 2) or (tier and kind != "post"):
            note(f"{where} has tier {tier!r}; only a post has a tier, 0, 1 or 2")
        if kind == "post":
            posts[seq] = channel
        elif kind == "reply" and posts.get(in_reply_to) != channel:
            note(f"{where} replies to {in_reply_to!r}, which is no earlier post in {channel}")
        elif kind == "chat" and in_reply_to is not None:
            note(f"{where} is a chat message but replies to {in_reply_to!r}")
    for (agent, channel, view) in seed.subscriptions():
        if view not in VIEWS:
            note(f"{agent}'s subscription to {channel} has the view {view!r}; "
                 f"the views are {', '.join(VIEWS)}")
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS])
        more = " (and more)" if len(problems) > MAX_PROBLEMS else ""
        raise Invalid(f"cannot import {seed.path}, nothing was made: {shown}{more}",
                      field="import_agentchat")


def load(ctx: Ctx, ws: Workspace, seed: Seed, report: Report) -> None:
    """Write the checked seed into ``ctx``'s transaction (``chatbox init``'s)."""
    db = ctx.db
    for n in seed.names():
        if n in (seed.human, channels.SYSTEM):
            continue
        engine = n if n in CLI_ENGINES else "stub"
        token = new_token()
        create_principal(db, n, "agent", token, engine=engine, now=ctx.now)
        write_secret(ws.agent_token_path(n), token)
        report.agents[n] = engine
    for (name, topic, standing, created_at, last_activity) in seed.channels():
        db.execute(
            "INSERT INTO channels(name, topic, kind, created_at, last_activity) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET topic = excluded.topic, "
            "created_at = excluded.created_at, last_activity = excluded.last_activity",
            (seed.channel(name), (topic or "").strip(), "standing" if standing else "adhoc",
             created_at, last_activity))
        report.channels += 1
    db.executemany(
        "INSERT INTO messages(seq, channel, author, kind, title, body, type, tier, in_reply_to, "
        "mentions, chain, hop, pinned, status, resolution, created_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?)", _rows(seed, report))
    db.execute("UPDATE channels SET last_seq = coalesce((SELECT max(seq) FROM messages m "
               "WHERE m.channel = channels.name), 0)")
    roles = dict(db.execute("SELECT name, role FROM principals"))
    for (agent, channel, view) in seed.subscriptions():
        who, ch = seed.name(agent), seed.channel(channel)
        if ch in channels.HUMANS_ONLY and roles[who] == "agent":
            report.skipped.append(f"{who}'s subscription to {ch} (read by humans only)")
            continue
        if db.execute("SELECT 1 FROM channels WHERE name = ?", (ch,)).get is None:
            report.skipped.append(f"{who}'s subscription to {ch} (no such channel)")
            continue
        db.execute(
            "INSERT INTO subscriptions(principal, channel, view, wake, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(principal, channel) DO UPDATE SET "
            "view = excluded.view", (who, ch, view, "all" if roles[who] == "agent" else "none",
                                     ctx.now))
        report.subscriptions += 1
    for (agent, channel, last_read) in seed.cursors():
        who, ch = seed.name(agent), seed.channel(channel)
        acked = db.execute("SELECT max(seq) FROM messages WHERE channel = ? AND seq <= ?",
                           (ch, last_read)).get
        if acked is None:
            report.skipped.append(f"{who}'s cursor in {ch} (nothing there to have read)")
            continue
        if ch in channels.HUMANS_ONLY and roles[who] == "agent":
            report.skipped.append(f"{who}'s cursor in {ch} (read by humans only)")
            continue
        db.execute("INSERT INTO offsets(principal, channel, acked, delivered, updated_at) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT(principal, channel) DO UPDATE SET "
                   "acked = excluded.acked, delivered = excluded.delivered",
                   (who, ch, acked, acked, ctx.now))
        report.cursors += 1
    # a subscription without a cursor starts at its channel's newest message
    db.execute("INSERT OR IGNORE INTO offsets(principal, channel, acked, delivered, updated_at) "
               "SELECT s.principal, s.channel, c.last_seq, c.last_seq, ? FROM subscriptions s "
               "JOIN channels c ON c.name = s.channel", (ctx.now,))
    index_messages(db)


def _rows(seed: Seed, report: Report) -> Iterator[tuple]:
    for (seq, channel, author, ts, kind, body, in_reply_to, title, description, msg_type, tier,
         pinned, closed, resolved) in seed.messages():
        body = _body(kind, title, body, description)
        mentions = " ".join(dict.fromkeys(MENTION_RE.findall(body)))
        if closed is not None:
            status = "closed"
        elif resolved:
            status = "resolved"
        elif tier == 2:
            status = "pending"
            report.pending.append(seq)
        else:
            status = "open"
        report.messages += 1
        yield (seq, seed.channel(channel), seed.name(author), kind,
               title.strip() if title and title.strip() else None, body, msg_type, tier or 0,
               in_reply_to, mentions, in_reply_to or seq, int(bool(pinned)), status, closed, ts)
