"""The marks reads make while the disk refuses writes (``messages.HeldMarks``), on a real store:
a Read and an Attach answered in a transaction that is rolled back leave nothing in the
database, are kept in memory, and are laid into the next transaction, whose commit stores them.
The server's side of it (a failed commit, a full tmpfs) is tests/integration/test_full_disk.py."""

from __future__ import annotations

from chatbox.broker.context import Ctx, Principal
from chatbox.broker.messages import HeldMarks
from chatbox.bus import wire

BROKER = Principal("broker", "admin")


def _unstored(hub, requests: list[tuple], held: HeldMarks) -> list[wire.Reply]:
    """What the server does after a failed commit: answer in a transaction rolled back. Each
    request is (request, token) or (request, token, idempotency key)."""
    now = hub.now()
    db = hub.store.db
    db.execute("BEGIN")
    try:
        replies = [hub.handlers.handle(hub.envelope(req, token, idem=idem[0] if idem else None),
                                       now, [], unstored="the disk is full")
                   for req, token, *idem in requests]
        held.collect(Ctx(db, BROKER, now))
    finally:
        db.execute("ROLLBACK")
    return [wire.reply_decoder.decode(r) for r in replies]


def test_marks_of_reads_answered_unstored_are_held_then_written(hub):
    kim = hub.add_agent("kim", "#general")
    posted = [hub.post("#general", f"m{i}") for i in range(3)]
    hello = hub.hello("kim", "sup")
    claim = hub.claim("kim", "sup", hello.epoch)
    held = HeldMarks()
    read, attach, post = _unstored(hub, [
        (wire.Read(channel="#general", since=0, limit=10), kim),
        (wire.Attach(turn=claim.turn), kim),
        (wire.Post(channel="#general", body="no room"), kim),
    ], held)
    assert [m.seq for m in read.result.messages] == [p.seq for p in posted]
    assert attach.error is None
    assert post.error.code == "store" and post.error.message == "the disk is full"
    db = hub.store.db
    assert db.execute("SELECT connected_at FROM turns WHERE id = ?", (claim.turn,)).get is None
    assert held.delivered == {("kim", "#general"): posted[-1].seq}
    assert list(held.connected) == [claim.turn]

    with hub.store.write():  # the next commit that succeeds
        held.apply(Ctx(db, BROKER, hub.now()))
    held.clear()
    assert db.execute("SELECT delivered FROM offsets WHERE principal = 'kim' AND "
                      "channel = '#general'").get == posted[-1].seq
    assert db.execute("SELECT connected_at FROM turns WHERE id = ?", (claim.turn,)).get


def test_a_write_stored_before_gets_its_first_answer_even_unstored(hub):
    """A write whose first answer was lost, sent again while the disk is full, is told what
    was stored then — not refused as if it had never landed."""
    kim = hub.add_agent("kim", "#general")
    first = hub.ok(wire.Post(channel="#general", body="landed"), kim, idem="key-1")
    again, fresh = _unstored(hub, [
        (wire.Post(channel="#general", body="landed"), kim, "key-1"),
        (wire.Post(channel="#general", body="new"), kim, "key-2"),
    ], HeldMarks())
    assert again.result.message.seq == first.message.seq
    assert fresh.error.code == "store"
