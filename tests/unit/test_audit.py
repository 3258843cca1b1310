"""The keyed audit chain (DESIGN §7), in process: what it records, and every forgery it catches.

A forger here can rewrite the database at will but cannot read ``audit.key``: a forgery also
recomputes every hash it could without the key (the chain's own formulas with SHA-256 in place
of HMAC, as an unkeyed chain would have them), and the chain must still name the first bad
entry.
"""

from __future__ import annotations

import hashlib
import json

import msgspec
import pytest
from structlog.testing import capture_logs

from chatbox.broker import audit, audit_start
from chatbox.broker.context import Ctx, Principal
from chatbox.bus import wire

COLUMNS = "id, at, principal, action, subject, detail"


@pytest.fixture
def chained(hub):
    """The hub with the chain attached, as the broker's start does."""
    _start(hub)
    return hub


def _start(hub) -> None:
    with hub.store.write():
        audit_start.start(hub.ws, Ctx(hub.store.db, Principal("broker", "admin"), hub.now()))


def _key(hub) -> bytes:
    return audit.read_key(audit.key_path(hub.ws))


def _verify(hub, key: bytes | None = None) -> audit.Report:
    return audit.verify(hub.store.db, key or _key(hub))


def _entries(hub) -> list[tuple]:
    return hub.store.db.execute(f"SELECT {COLUMNS} FROM audit ORDER BY id").fetchall()


def _activity(hub) -> None:
    """A little of everything: an agent, posts, a turn, an ack."""
    hub.add_agent("echo", "#general")
    for i in range(3):
        hub.post("#general", f"secret body {i}")
    hello = hub.hello("echo", "sup-1")
    claimed = hub.claim("echo", "sup-1", hello.epoch)
    hub.report("echo", "sup-1", claimed)
    hub.ok(wire.Ack(channel="#general", up_to=claimed.messages[-1].seq), hub.tokens["echo"])


def _rehash(hub, first: int) -> None:
    """What a forger without the key can do: recompute the hash of every entry from ``first``
    on, and both marks, with the chain's own formulas but SHA-256 in place of HMAC."""
    db = hub.store.db
    prev = db.execute("SELECT mac FROM audit WHERE id = ?", (first - 1,)).get
    with hub.store.write():
        for row in db.execute(f"SELECT {COLUMNS} FROM audit WHERE id >= ? ORDER BY id",
                              (first,)).fetchall():
            prev = hashlib.sha256(prev + audit.canonical(*row)).digest()
            db.execute("UPDATE audit SET mac = ? WHERE id = ?", (prev, row[0]))
        last = db.execute("SELECT max(id) FROM audit").get
        for name, segment in db.execute("SELECT name, segment FROM audit_mark").fetchall():
            tag = hashlib.sha256(msgspec.msgpack.encode(("mark", name, segment, last, prev)))
            db.execute("UPDATE audit_mark SET id = ?, mac = ?, tag = ? WHERE name = ?",
                       (last, prev, tag.digest(), name))


def _sql(hub, *statements: str) -> None:
    with hub.store.write():
        for sql in statements:
            hub.store.db.execute(sql)


# --------------------------------------------------------------------------- what it records

def test_actions_are_recorded_in_order_and_the_chain_verifies(chained):
    _activity(chained)
    rep = _verify(chained)
    assert rep.ok and rep.segments == 1
    rows = _entries(chained)
    assert rep.last_id == rows[-1][0] == len(rows)
    actions = [r[3] for r in rows]
    assert actions[0] == "segment"  # made at init
    assert actions.count("post") == 3  # alice's (the report carries no reply)
    for first, then in [("add_agent", "post"), ("hello", "claim"), ("claim", "report"),
                        ("report", "ack")]:
        assert actions.index(first) < actions.index(then)
    kinds = {(r[3], r[4]) for r in rows}
    assert ("transition", "echo") in kinds and ("turn", "echo") in kinds
    turn = next(json.loads(r[5]) for r in rows if r[3] == "turn")
    assert turn["outcome"] == "ok" and turn["batch"] == 3
    moves = [(d["from"], d["to"]) for r in rows if r[3] == "transition"
             for d in [json.loads(r[5])]]
    assert moves[:3] == [("ASLEEP", "WAKING"), ("WAKING", "BUSY"), ("BUSY", "ASLEEP")]


def test_a_post_is_recorded_by_its_metadata_never_its_body(chained):
    msg = chained.post("#general", "the launch code is 0000")
    row = [r for r in _entries(chained) if r[3] == "post"][-1]
    assert row[2] == "alice" and row[4] == "#general"
    assert json.loads(row[5])["seq"] == msg.seq
    assert json.loads(row[5])["bytes"] == len(msg.body)
    assert all("launch" not in str(col) for col in row)


def test_a_refused_request_leaves_no_entry_and_an_auth_failure_leaves_one(chained):
    before = len(_entries(chained))
    chained.err(wire.Post(channel="#nowhere", body="x"))
    assert len(_entries(chained)) == before
    chained.err(wire.Post(channel="#general", body="x"), token="not-a-token")
    rows = _entries(chained)
    assert len(rows) == before + 1
    assert rows[-1][2:5] == ("-", "auth_failed", "Post")
    assert "not-a-token" not in str(rows[-1]) and _verify(chained).ok


def test_a_rolled_back_batch_takes_its_entries_and_the_head_with_it(chained):
    head = audit.read_mark(chained.store.db, "head")
    with pytest.raises(RuntimeError), chained.store.write():
        chained.handlers.handle(chained.envelope(wire.Post(channel="#general", body="x")),
                                chained.now(), [])
        raise RuntimeError("the commit never happens")
    assert audit.read_mark(chained.store.db, "head") == head
    chained.post("#general", "after")
    assert _verify(chained).ok


# --------------------------------------------------------------------------- forgeries

def test_an_edited_entry_is_caught_even_with_every_plain_hash_recomputed(chained):
    _activity(chained)
    victim = [r for r in _entries(chained) if r[3] == "post"][1][0]
    _sql(chained, f"UPDATE audit SET principal = 'mallory' WHERE id = {victim}")
    _rehash(chained, victim)
    assert _verify(chained).breaks[0].id == victim


def test_an_edit_names_the_first_bad_entry(chained):
    _activity(chained)
    victim = [r for r in _entries(chained) if r[3] == "post"][1][0]
    _sql(chained, "UPDATE audit SET detail = replace(detail, '\"tier\":0', '\"tier\":2') "
                  f"WHERE id = {victim}")
    rep = _verify(chained)
    assert not rep.ok and rep.breaks[0].id == victim
    assert "MAC does not match" in audit.describe(rep.breaks[0])


def test_a_deleted_entry_is_caught(chained):
    _activity(chained)
    _sql(chained, "DELETE FROM audit WHERE id = 4")
    rep = _verify(chained)
    assert (rep.breaks[0].id, rep.breaks[0].reason) == (4, "entry 4 is missing")


def test_a_deletion_renumbered_and_rehashed_is_caught(chained):
    _activity(chained)
    _sql(chained, "DELETE FROM audit WHERE id = 4", "UPDATE audit SET id = id - 1 WHERE id > 4")
    _rehash(chained, 4)
    assert _verify(chained).breaks[0].id == 4


def test_reordered_entries_are_caught(chained):
    _activity(chained)
    a, b = _entries(chained)[3:5]
    macs = dict(chained.store.db.execute("SELECT id, mac FROM audit").fetchall())
    with chained.store.write():
        for row, other in ((a, b), (b, a)):
            chained.store.db.execute(
                "UPDATE audit SET at = ?, principal = ?, action = ?, subject = ?, detail = ?, "
                "mac = ? WHERE id = ?", (*other[1:], macs[other[0]], row[0]))
    assert _verify(chained).breaks[0].id == a[0]
    _rehash(chained, a[0])
    assert _verify(chained).breaks[0].id == a[0]


def test_a_truncated_chain_is_caught(chained):
    _activity(chained)
    last = _entries(chained)[-1][0]
    _sql(chained, f"DELETE FROM audit WHERE id > {last - 3}")
    rep = _verify(chained)
    assert rep.breaks[0].id == last - 2
    assert rep.breaks[0].reason == f"truncated: entries {last - 2}-{last} are missing"


def test_a_truncation_with_its_head_mark_moved_is_caught(chained):
    _activity(chained)
    _sql(chained, "DELETE FROM audit WHERE id > 5",
         "UPDATE audit_mark SET id = 5, mac = (SELECT mac FROM audit WHERE id = 5) "
         "WHERE name = 'head'")
    assert "without the key" in _verify(chained).breaks[0].reason
    _rehash(chained, 6)  # (nothing past 5 to rehash: the marks alone, with plain tags)
    assert "without the key" in _verify(chained).breaks[0].reason
    _sql(chained, "DELETE FROM audit_mark WHERE name = 'head'")
    assert "head mark is missing" in _verify(chained).breaks[0].reason


def test_the_wrong_key_verifies_nothing(chained):
    _activity(chained)
    rep = _verify(chained, key=b"\x01" * audit.KEY_BYTES)
    assert rep.breaks[0].id == 1


def test_a_malformed_key_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "audit.key"
    path.write_text("not hex\n")
    with pytest.raises(audit.StoreError, match="malformed"):
        audit.read_key(path)


def test_the_key_file_is_the_owners_alone(chained):
    assert audit.key_path(chained.ws).stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- the checkpoint

def test_start_verifies_only_past_the_checkpoint(chained):
    _activity(chained)
    mark = audit.read_mark(chained.store.db, "verified")
    head = audit.read_mark(chained.store.db, "head")
    assert mark.id < head.id
    rep = audit.verify(chained.store.db, _key(chained), mark)
    assert rep.ok and rep.entries == head.id - mark.id
    with capture_logs() as logs:
        _start(chained)  # a restart: only what came after the mark is read
    assert [(e["entries"], e["since"]) for e in logs if e["event"] == "audit_verified"] == [
        (head.id - mark.id, mark.id)]
    mark = audit.read_mark(chained.store.db, "verified")  # and the mark is at the head
    assert mark.id == head.id
    assert audit.verify(chained.store.db, _key(chained), mark).entries == 0


def test_a_forged_checkpoint_is_caught(chained):
    _activity(chained)
    _sql(chained, "UPDATE audit_mark SET id = id - 1 WHERE name = 'verified'")
    mark = audit.read_mark(chained.store.db, "verified")
    assert "without the key" in audit.checkpoint_error(chained.store.db, _key(chained),
                                                       mark).reason


def test_a_break_past_the_checkpoint_is_flagged_and_a_new_segment_starts(chained):
    _activity(chained)
    victim = _entries(chained)[-2][0]
    _sql(chained, f"UPDATE audit SET subject = '#elsewhere' WHERE id = {victim}")
    before = len(_entries(chained))
    _start(chained)
    rows = _entries(chained)
    # every entry kept, then the new segment's start and the entry of the alert that flags it
    assert len(rows) == before + 2
    assert sorted(r[3] for r in rows[-2:]) == ["escalation", "segment"]
    segment = next(r for r in rows[-2:] if r[3] == "segment")
    start = json.loads(segment[5])
    assert start["segment"] == 2
    assert (start["after"]["segment"], start["after"]["entry"]) == (1, victim)
    alert = chained.read("#alerts")[-1]
    assert f"entry {victim}" in alert.body and alert.tier == 2
    chained.post("#general", "life goes on")
    rep = _verify(chained)
    assert [b.id for b in rep.breaks] == [victim] and rep.unflagged() is None
    assert "flagged" in audit.describe(rep.breaks[0], rep)
    _start(chained)  # flagged once: the next start finds nothing new
    assert _entries(chained)[-1][3] == "post"


def test_an_erased_chain_and_a_lost_key_are_flagged(chained):
    _activity(chained)
    _sql(chained, "DELETE FROM audit", "DELETE FROM audit_mark")
    _start(chained)
    assert "chain is missing" in chained.read("#alerts")[-1].body
    audit.key_path(chained.ws).unlink()
    _start(chained)
    assert "audit key" in chained.read("#alerts")[-1].body
    assert _verify(chained).unflagged() is None


def test_the_first_start_of_a_workspace_made_before_the_chain_makes_key_and_chain(hub):
    """A workspace from before the chain: no key, no entries (the migration made the tables)."""
    _sql(hub, "DELETE FROM audit", "DELETE FROM audit_mark")
    audit.key_path(hub.ws).unlink()
    alerts = len(hub.read("#alerts"))
    _start(hub)
    assert audit.key_path(hub.ws).stat().st_mode & 0o777 == 0o600
    assert [r[3] for r in _entries(hub)] == ["segment"]
    assert len(hub.read("#alerts")) == alerts  # nothing was broken: nothing to flag
    hub.post("#general", "first")
    assert _verify(hub).ok
