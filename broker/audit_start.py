"""The audit chain at the broker's start, at ``chatbox init``, and for ``chatbox verify-audit``.

At start the chain is verified from its ``verified`` mark (``broker/audit.py``), so start stays
fast however long it is; a break is kept as it is, flagged in ``#alerts``, and a new segment
starts that names it. ``chatbox verify-audit`` checks it all, from the first entry, on a
read-only connection (the broker may be running: WAL readers never block it).
"""

from __future__ import annotations

import apsw
import structlog

from chatbox.broker import escalations
from chatbox.broker.audit import (Break, Chain, attach, checkpoint_error, describe, key_path,
                                  make_key, read_key, read_mark, verify)
from chatbox.broker.channels import SYSTEM
from chatbox.broker.context import Ctx
from chatbox.broker.errors import StoreError
from chatbox.runtime.workspace import Workspace

log = structlog.get_logger("audit")

def begin(ws: Workspace, ctx: Ctx) -> Chain:
    """``chatbox init``: a new key and the chain's first segment, in ``ctx``'s transaction."""
    chain = Chain(make_key(key_path(ws)))
    attach(ctx.db, chain)
    chain.start_segment(ctx.db, ctx.now, ctx.principal.name, {"reason": "workspace created"})
    _verified_at_head(ctx.db, chain)
    return chain


def start(ws: Workspace, ctx: Ctx, *, enabled: bool = True) -> Chain:
    """The broker's start: the key (made at the first start of a workspace that has none), the
    chain verified from the ``verified`` mark (all of it without one), a break flagged and a new
    segment started after it. ``enabled``: the benchmark's comparison alone."""
    db, path = ctx.db, key_path(ws)
    key = read_key(path)
    exists = db.execute("SELECT EXISTS(SELECT 1 FROM audit) OR "
                        "EXISTS(SELECT 1 FROM audit_mark)").get
    if key is None:
        chain = Chain(make_key(path), enabled=enabled)
        attach(db, chain)
        if exists:
            _flag(ctx, chain, Break(1, 1, f"the audit key {path} is missing: no entry made "
                                          "with the old key can be verified"))
        else:
            chain.start_segment(db, ctx.now, ctx.principal.name, {"reason": "first start"})
            _verified_at_head(db, chain)
        return chain
    chain = Chain(key, enabled=enabled)
    attach(db, chain)
    if not exists:
        _flag(ctx, chain, Break(1, 1, "the chain is missing though its key exists (erased, or "
                                      "the first start was cut short)"))
        return chain
    mark = read_mark(db, "verified")
    bad = checkpoint_error(db, key, mark) if mark is not None else None
    rep = verify(db, key, mark) if bad is None else None
    bad = bad or rep.unflagged()
    if bad is not None:
        _flag(ctx, chain, bad)
    else:
        _verified_at_head(db, chain)
        log.info("audit_verified", entries=rep.entries, since=mark.id if mark else 0,
                 head=rep.last_id)
    return chain


def _verified_at_head(db: apsw.Connection, chain: Chain) -> None:
    head = read_mark(db, "head")
    chain.set_mark(db, "verified", head.segment, head.id, head.mac)


def _flag(ctx: Ctx, chain: Chain, b: Break) -> None:
    """Keep the broken entries, start a segment naming the break, and say so in #alerts."""
    at = chain.start_segment(ctx.db, ctx.now, SYSTEM, {"after": {
        "segment": b.segment, "entry": b.id, "reason": b.reason}})
    _verified_at_head(ctx.db, chain)
    log.error("audit_broken", entry=b.id, segment=b.segment, reason=b.reason, restarted_at=at)
    escalations.post_escalation(
        ctx, author=SYSTEM, agent=None, chain=None, guardrail="audit_chain",
        reason=f"{describe(b)}. The entries are kept as they are for forensics; a new segment "
               f"starts at entry {at}. `chatbox verify-audit` names every break.")


def verify_workspace(ws: Workspace) -> tuple[bool, str]:
    """``chatbox verify-audit``: the whole chain of ``ws``, read-only; (ok, its one line)."""
    path = key_path(ws)
    try:
        key = read_key(path)
    except StoreError as exc:
        return False, exc.message
    if key is None:
        return False, f"no audit key at {path}: the chain cannot be verified"
    if not ws.db_path.exists():
        return False, f"no database at {ws.db_path}; run `chatbox init`"
    try:
        db = apsw.Connection(str(ws.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        return False, f"cannot open database {ws.db_path}: {exc}"
    try:
        if db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'audit'").get == 0:
            return False, (f"database {ws.db_path} has no audit chain yet: start the broker "
                           "once to make it")
        db.execute("BEGIN")  # one snapshot: the entries and the marks of the same moment
        rep = verify(db, key)
        db.execute("COMMIT")
    except apsw.Error as exc:
        return False, f"cannot read the audit chain in {ws.db_path}: {exc}"
    finally:
        db.close()
    if rep.ok:
        return True, (f"audit chain verified: {rep.entries} "
                      f"entr{'y' if rep.entries == 1 else 'ies'} in {rep.segments} "
                      f"segment(s), head at entry {rep.last_id}")
    more = f" ({len(rep.breaks)} breaks in all)" if len(rep.breaks) > 1 else ""
    return False, describe(rep.breaks[0], rep) + more
