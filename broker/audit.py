"""The keyed audit chain (DESIGN §7): every consequential action, tamper-evident.

Each entry is a row of ``audit`` — (id, at, principal, action, subject, detail) and its MAC,
``HMAC-SHA256(key, previous MAC || canonical bytes)``, where the canonical bytes are the msgpack
array of the six fields and ``detail`` is JSON with sorted keys (a post's metadata, never its
body). The key is a 0600 file outside the database, ``.chatbox/audit.key``, invisible to turns:
a forger who can rewrite the database but not read the key cannot make one valid MAC, so an
edit, a deletion, a reordering or a recomputed plain hash shows at the first entry it touches.

Two MACed marks in ``audit_mark`` close the chain's ends: ``head`` (the last entry, moved by
every append, in the same transaction) shows a truncation, and ``verified`` (where the last
verification ended) lets the broker's start check only what came after it, so start stays fast
at any length; ``chatbox verify-audit`` checks from the first entry.

A chain is made of segments. The first entry of each is a ``segment`` entry MACed from a
genesis value of its own. When a verification finds a bad entry, the entries are kept as they
are (for forensics), the break is flagged in ``#alerts``, and a new segment starts whose first
entry names the segment, entry and reason of the break.

Entries are written by :func:`record`, through the connection's :class:`Chain` (attached at the
broker's start and at ``chatbox init``: ``broker/audit_start.py``), in the caller's
transaction: a request rolled back to its savepoint takes its entries with it.
"""

from __future__ import annotations

import hmac
import secrets
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import msgspec
import structlog

from chatbox.broker.context import Ctx
from chatbox.broker.errors import StoreError
from chatbox.bus import wire
from chatbox.runtime.workspace import Workspace, write_secret

log = structlog.get_logger("audit")

KEY_FILE = "audit.key"
KEY_BYTES = 32
SEGMENT = "segment"
_GENESIS = b"chatbox audit segment "
_json = msgspec.json.Encoder(order="sorted")
_chains: weakref.WeakKeyDictionary[apsw.Connection, Chain] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- the MACs

def canonical(id_: int, at: float, principal: str, action: str, subject: str,
              detail: str) -> bytes:
    """The bytes an entry's MAC covers (after the previous MAC)."""
    return msgspec.msgpack.encode((id_, at, principal, action, subject, detail))


def entry_mac(key: bytes, prev: bytes, canon: bytes) -> bytes:
    return hmac.digest(key, prev + canon, "sha256")


def genesis(key: bytes, segment: int) -> bytes:
    """The "previous MAC" of the first entry of ``segment``."""
    return hmac.digest(key, _GENESIS + str(segment).encode(), "sha256")


def mark_tag(key: bytes, name: str, segment: int, id_: int, mac: bytes) -> bytes:
    return hmac.digest(key, msgspec.msgpack.encode(("mark", name, segment, id_, mac)), "sha256")


# --------------------------------------------------------------------------- the key

def key_path(ws: Workspace) -> Path:
    return ws.data / KEY_FILE


def read_key(path: Path) -> bytes | None:
    """The key in ``path``; None if there is no such file; StoreError if it is no key."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read the audit key {path}: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise StoreError(f"the audit key {path} is malformed (not {KEY_BYTES * 2} hex digits); "
                         "restore it from a backup")
    return key


def make_key(path: Path) -> bytes:
    key = secrets.token_bytes(KEY_BYTES)
    write_secret(path, key.hex())  # 0600, atomic, fsync'd
    return key


# --------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class Mark:
    name: str
    segment: int
    id: int
    mac: bytes
    tag: bytes

    def valid(self, key: bytes) -> bool:
        return hmac.compare_digest(self.tag, mark_tag(key, self.name, self.segment, self.id,
                                                      self.mac))


def read_mark(db: apsw.Connection, name: str) -> Mark | None:
    row = db.execute("SELECT segment, id, mac, tag FROM audit_mark WHERE name = ?",
                     (name,)).fetchone()
    return None if row is None else Mark(name, *row)


class Chain:
    """Appends entries to the chain of one connection with one key. ``enabled=False`` (for the
    benchmark's comparison alone) writes nothing."""

    def __init__(self, key: bytes, *, enabled: bool = True):
        self.key = key
        self.enabled = enabled

    def append(self, db: apsw.Connection, at: float, principal: str, action: str, subject: str,
               detail: dict[str, Any]) -> int:
        """Append one entry after the head; its id (0 if disabled)."""
        if not self.enabled:
            return 0
        head = db.execute("SELECT segment, id, mac FROM audit_mark WHERE name = 'head'").fetchone()
        segment, last, prev = head
        return self._write(db, segment, last + 1, prev, at, principal, action, subject, detail)

    def start_segment(self, db: apsw.Connection, at: float, principal: str,
                      detail: dict[str, Any]) -> int:
        """Start a new segment after every entry there is (``detail`` says why)."""
        head = read_mark(db, "head")
        last = max(db.execute("SELECT coalesce(max(id), 0) FROM audit").get,
                   head.id if head else 0)
        segment = max(head.segment if head else 0, _last_segment(db)) + 1
        detail = {**detail, SEGMENT: segment}
        return self._write(db, segment, last + 1, genesis(self.key, segment), at, principal,
                           SEGMENT, f"segment {segment}", detail)

    def _write(self, db: apsw.Connection, segment: int, id_: int, prev: bytes, at: float,
               principal: str, action: str, subject: str, detail: dict[str, Any]) -> int:
        text = _json.encode(detail).decode()
        mac = entry_mac(self.key, prev, canonical(id_, at, principal, action, subject, text))
        db.execute("INSERT INTO audit(id, at, principal, action, subject, detail, mac) "
                   "VALUES (?,?,?,?,?,?,?)", (id_, at, principal, action, subject, text, mac))
        self.set_mark(db, "head", segment, id_, mac)
        return id_

    def set_mark(self, db: apsw.Connection, name: str, segment: int, id_: int,
                 mac: bytes) -> None:
        db.execute("INSERT OR REPLACE INTO audit_mark(name, segment, id, mac, tag) "
                   "VALUES (?,?,?,?,?)",
                   (name, segment, id_, mac, mark_tag(self.key, name, segment, id_, mac)))


def _last_segment(db: apsw.Connection) -> int:
    """The highest segment number any segment entry claims (unverified: only for numbering)."""
    text = db.execute("SELECT detail FROM audit WHERE action = 'segment' "
                      "ORDER BY id DESC LIMIT 1").get
    try:
        return int(msgspec.json.decode(text or "{}").get(SEGMENT, 0))
    except (msgspec.DecodeError, TypeError, ValueError, AttributeError):
        return 0


def attach(db: apsw.Connection, chain: Chain) -> None:
    """Make ``chain`` the one :func:`record` writes to for ``db``."""
    _chains[db] = chain


def record(ctx: Ctx, action: str, subject: str, detail: dict[str, Any]) -> None:
    """Append one entry for ``ctx``'s principal in ``ctx``'s transaction (nothing on a
    connection no chain is attached to: a unit test's store)."""
    chain = _chains.get(ctx.db)
    if chain is not None:
        chain.append(ctx.db, ctx.now, ctx.principal.name, action, subject, detail)


def transition(ctx: Ctx, before: str, after: Any, cause: str) -> None:
    """The entry of an FSM transition (``after``: the agent's new ``AgentState``)."""
    record(ctx, "transition", after.agent, {"from": before, "to": after.state, "epoch":
                                            after.epoch, "paused": after.paused,
                                            "cause": cause[:200]})


def turn_outcome(ctx: Ctx, turn: Any, outcome: str, exit_code: int | None) -> None:
    """The entry of a turn's end (``turn``: a ``turns.Turn``)."""
    record(ctx, "turn", turn.agent, {"turn": turn.id, "epoch": turn.epoch, "outcome": outcome,
                                     "exit_code": exit_code, "batch": len(turn.seqs)})


def request(ctx: Ctx, req: wire.Request, result: wire.Result) -> None:
    """The entry of a request that changed state, once it succeeded (in its savepoint)."""
    chain = _chains.get(ctx.db)
    entry = _describe(req, result) if chain is not None else None
    if entry is not None:
        chain.append(ctx.db, ctx.now, ctx.principal.name, *entry)


def auth_failure(db: apsw.Connection, op: str, at: float) -> None:
    """The entry of a request refused for its token (the token itself is never recorded). A
    database that refuses the write costs the entry, never the batch's other requests."""
    chain = _chains.get(db)
    if chain is None or not db.in_transaction:
        return
    db.execute("SAVEPOINT audit_auth")
    try:
        chain.append(db, at, "-", "auth_failed", op, {})
    except apsw.Error as exc:
        if not db.in_transaction:
            raise  # SQLite ended the batch's transaction: the server's to handle
        db.execute("ROLLBACK TO audit_auth")
        log.error("audit_not_recorded", action="auth_failed", error=str(exc))
    db.execute("RELEASE audit_auth")


def _describe(req: wire.Request, result: wire.Result) -> tuple[str, str, dict] | None:
    """(action, subject, detail) of a request worth an entry; None for the rest (reads, and
    marks: the delivery marks of Read and Inbox, a turn's connection)."""
    match req:
        case wire.Post():
            m = result.message
            return "post", m.channel, {"seq": m.seq, "kind": m.kind, "tier": m.tier,
                                       "in_reply_to": m.in_reply_to, "chain": m.chain,
                                       "hop": m.hop, "turn": m.turn, "bytes": len(m.body)}
        case wire.Ack(channel=ch, up_to=up_to):
            return "ack", ch, {"up_to": up_to}
        case wire.Subscribe(channel=ch, view=view, wake=wake, agent=agent):
            return "subscribe", ch, {"agent": agent, "view": view, "wake": wake}
        case wire.Unsubscribe(channel=ch, agent=agent):
            return "unsubscribe", ch, {"agent": agent}
        case wire.CreateChannel(name=name, kind=kind):
            return "create_channel", name, {"kind": kind}
        case wire.SetFlag(seq=seq, action=action):
            return action, f"seq:{seq}", {}
        case wire.AddAgent(name=name, engine=engine, subscribe=subscribe):
            return "add_agent", name, {"engine": engine, "subscribe": subscribe}
        case wire.SetPaused(name=name, paused=paused):
            return "pause" if paused else "resume", name, {}
        case wire.Revoke(name=name):
            return "revoke", name, {}
        case wire.Decide(seq=seq, approve=approve):
            return "approve" if approve else "deny", f"seq:{seq}", {"decision": result.message.seq}
        case wire.Escalate(seq=about, turn=turn):
            return "escalate", f"seq:{result.message.seq}", {"about": about, "turn": turn}
        case wire.Hello(agent=agent, supervisor=sup, host=host, pid=pid):
            return "hello", agent, {"supervisor": sup, "host": host, "pid": pid}
        case wire.Claim(agent=agent, epoch=epoch):
            return "claim", agent, {"epoch": epoch, "turn": result.turn}
        case wire.TurnReport(agent=agent, turn=turn, epoch=epoch, outcome=outcome):
            reply = result.reply.seq if result.reply is not None else None
            return "report", agent, {"turn": turn, "epoch": epoch, "outcome": outcome,
                                     "reply": reply}
    return None


# --------------------------------------------------------------------------- verifying

@dataclass(frozen=True)
class Break:
    id: int       # the first bad entry (or where the missing ones begin)
    segment: int  # the segment it broke
    reason: str


@dataclass
class Report:
    entries: int = 0       # entries checked
    segments: int = 0      # segment starts that verified
    last_id: int = 0
    last_mac: bytes = b""
    segment: int = 0       # the segment of the last good entry
    breaks: list[Break] = field(default_factory=list)
    flagged: dict[tuple[int, int], int] = field(default_factory=dict)  # (seg, id) -> seg start

    @property
    def ok(self) -> bool:
        return not self.breaks

    def unflagged(self) -> Break | None:
        """The first break no later segment names (the one the broker must still flag)."""
        return next((b for b in self.breaks if (b.segment, b.id) not in self.flagged), None)


_EDITED = "its MAC does not match (edited, reordered, or made without the key)"


def verify(db: apsw.Connection, key: bytes, since: Mark | None = None) -> Report:
    """Check the chain from its first entry, or from the ``verified`` mark ``since`` (already
    checked valid by the caller), to its head."""
    rep = Report()
    broken = False
    if since is not None:
        rep.last_id, rep.last_mac, rep.segment = since.id, since.mac, since.segment
    rows = db.execute("SELECT id, at, principal, action, subject, detail, mac FROM audit "
                      "WHERE id > ? ORDER BY id", (rep.last_id,))
    for id_, at, principal, action, subject, detail, mac in rows:
        rep.entries += 1
        canon = canonical(id_, at, principal, action, subject, detail)
        if action == SEGMENT and (seg := _segment_of(detail)) > rep.segment:
            if hmac.compare_digest(mac, entry_mac(key, genesis(key, seg), canon)):
                if rep.last_id == 0 and seg != 1:
                    rep.breaks.append(Break(1, 1, f"entries 1-{id_ - 1} are missing: the chain "
                                            "begins past its first segment"))
                _names_break(rep, detail, id_)
                broken, rep.segments, rep.segment = False, rep.segments + 1, seg
                rep.last_id, rep.last_mac = id_, mac
                continue
        if broken:
            continue  # inside a broken segment: kept, not trusted, until a new one starts
        expected = rep.last_id + 1
        if id_ > expected:
            bad, why = expected, (f"entry {expected} is missing" if id_ == expected + 1 else
                                  f"entries {expected}-{id_ - 1} are missing")
        elif rep.last_id == 0 and action != SEGMENT:
            bad, why = id_, "the chain does not begin with a segment start"
        elif rep.last_id == 0 or not hmac.compare_digest(mac, entry_mac(key, rep.last_mac, canon)):
            bad, why = id_, _EDITED
        else:
            rep.last_id, rep.last_mac = id_, mac
            continue
        rep.breaks.append(Break(bad, max(rep.segment, 1), why))
        broken = True
    if not broken:
        _check_head(db, key, rep)
    rep.breaks.sort(key=lambda b: b.id)
    return rep


def _segment_of(detail: str) -> int:
    try:
        value = msgspec.json.decode(detail).get(SEGMENT)
    except (msgspec.DecodeError, AttributeError):
        return 0
    return value if isinstance(value, int) else 0


def _names_break(rep: Report, detail: str, at: int) -> None:
    """A segment start names the break it follows: flagged, and a break of the chain even where
    no entry shows it any more (a truncation, an erased chain, a lost key)."""
    after = msgspec.json.decode(detail).get("after")
    if not isinstance(after, dict):
        return
    named = Break(after.get("entry"), after.get("segment"), str(after.get("reason")))
    rep.flagged[(named.segment, named.id)] = at
    if not any((b.segment, b.id) == (named.segment, named.id) for b in rep.breaks):
        rep.breaks.append(named)


def _check_head(db: apsw.Connection, key: bytes, rep: Report) -> None:
    """The chain must end where its head mark says: anything else is a truncation (or a forged
    mark)."""
    head = read_mark(db, "head")
    if head is None:
        if rep.last_id:
            rep.breaks.append(Break(rep.last_id + 1, rep.segment, "its head mark is missing"))
        return
    if not head.valid(key):
        rep.breaks.append(Break(rep.last_id + 1, rep.segment, f"the chain ends at entry "
                                f"{rep.last_id} and its head mark was made without the key "
                                "(entries past it deleted, or the mark forged)"))
    elif head.id > rep.last_id:
        rep.breaks.append(Break(rep.last_id + 1, rep.segment,
                          f"truncated: entries {rep.last_id + 1}-{head.id} are missing"))
    elif head.id != rep.last_id or not hmac.compare_digest(head.mac, rep.last_mac):
        rep.breaks.append(Break(head.id, head.segment, "its head mark names another entry"))


def checkpoint_error(db: apsw.Connection, key: bytes, mark: Mark) -> Break | None:
    """Why the ``verified`` mark cannot be trusted, or None."""
    if not mark.valid(key):
        return Break(mark.id, mark.segment, "the verified mark was made without the key")
    mac = db.execute("SELECT mac FROM audit WHERE id = ?", (mark.id,)).get
    if mac is None:
        return Break(mark.id, mark.segment, f"entry {mark.id}, verified before, is missing "
                     "(deleted or truncated)")
    if not hmac.compare_digest(mac, mark.mac):
        return Break(mark.id, mark.segment, f"entry {mark.id}, verified before, was edited")
    return None


def describe(b: Break, rep: Report | None = None) -> str:
    """One line naming a break (and the segment that flagged it, if one did)."""
    line = f"audit chain broken at entry {b.id} (segment {b.segment}): {b.reason}"
    start = rep.flagged.get((b.segment, b.id)) if rep else None
    return line + (f"; flagged at a start, a new segment begins at entry {start}" if start else "")

