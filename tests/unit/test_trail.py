"""The dispatch trail (broker/trail.py) against a real Store: what it keeps, a torn last line,
catching up after a crash, and never a line twice. ``hub`` answers requests as the server
does, and ``Trail.record`` gets the batch's events as the server's loop gives them."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from chatbox.broker import trail
from chatbox.broker.trail import Trail, last_seq, parse_line, read_trail
from chatbox.bus import wire
from chatbox.cli.trail import Reader, Rewritten, follow


def _trail(hub) -> Trail:
    return Trail(trail.trail_path(hub.ws.root))


def _seqs(hub) -> list[int]:
    return [e["seq"] for e in read_trail(trail.trail_path(hub.ws.root))]


def _post(hub, t: Trail | None, channel: str, body: str, token: str | None = None,
          **kw) -> wire.Message:
    msg = hub.post(channel, body, token, **kw)
    if t is not None:
        t.record(hub.store.db, hub.events)
    return msg


def _decide(hub, t: Trail | None, seq: int, approve: bool, reason: str | None = None) -> int:
    decision = hub.ok(wire.Decide(seq=seq, approve=approve, reason=reason)).message
    if t is not None:
        t.record(hub.store.db, hub.events)
    return decision.seq


def test_dispatch_posts_and_every_decision_are_kept_once_each(hub) -> None:
    kim = hub.add_agent("kim", "#general")
    t = _trail(hub)
    _post(hub, t, "#general", "not for the trail")
    order = _post(hub, t, "#dispatch", "build the release")
    ask = _post(hub, t, "#dispatch", "ship it?", kim, kind="post", title="Ship 1.0", tier=2)
    approved = _decide(hub, t, ask.seq, True)
    elsewhere = _post(hub, t, "#general", "drop the table?", kim, kind="post", title="Drop",
                      tier=2)
    denied = _decide(hub, t, elsewhere.seq, False, "no: keep the data")
    t.record(hub.store.db, hub.events)  # the same batch again: nothing twice
    entries = list(read_trail(t.path))
    assert [e["seq"] for e in entries] == [order.seq, ask.seq, approved, denied]
    assert entries[0]["event"] == "post"
    assert entries[0]["body"] == "build the release" and entries[0]["author"] == "alice"
    assert entries[1]["title"] == "Ship 1.0" and entries[1]["tier"] == 2
    assert {k: entries[2][k] for k in ("event", "decision", "post", "decided_by", "channel")} == \
        {"event": "decision", "decision": "approve", "post": ask.seq, "decided_by": "alice",
         "channel": "#dispatch"}
    assert {k: entries[3][k] for k in ("decision", "post", "reason", "channel")} == \
        {"decision": "deny", "post": elsewhere.seq, "reason": "no: keep the data",
         "channel": "#general"}
    assert (t.path.stat().st_mode & 0o777) == 0o600


def test_a_private_channels_decisions_stay_in_the_database(hub) -> None:
    kim = hub.add_agent("kim", "#general")
    hub.ok(wire.CreateChannel(name="#board", kind="private"))
    hub.ok(wire.Subscribe(channel="#board", agent="kim"))
    t = _trail(hub)
    secret = _post(hub, t, "#board", "merge the two?", kim, kind="post", title="Merge", tier=2)
    _decide(hub, t, secret.seq, False, "the other party must not know")
    assert _seqs(hub) == []


def test_the_trail_exists_from_the_first_catch_up(hub) -> None:
    t = _trail(hub)
    assert t.catch_up(hub.store.db) == 0
    assert t.path.read_bytes() == b"" and (t.path.stat().st_mode & 0o777) == 0o600


def test_catch_up_appends_what_a_crash_kept_out_and_nothing_twice(hub) -> None:
    t = _trail(hub)
    first = [_post(hub, t, "#dispatch", f"before {i}").seq for i in range(3)]
    # committed, then the broker died before appending: the database has them, the file not
    missed = [_post(hub, None, "#dispatch", f"lost {i}").seq for i in range(4)]
    before = t.path.read_bytes()
    restarted = _trail(hub)
    assert restarted.catch_up(hub.store.db) == 4
    assert _seqs(hub) == first + missed
    assert t.path.read_bytes().startswith(before)  # appended, never rewritten
    assert _trail(hub).catch_up(hub.store.db) == 0
    assert restarted.catch_up(hub.store.db) == 0
    assert _seqs(hub) == first + missed


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_fresh(hub) -> None:
    t = _trail(hub)
    seqs = [_post(hub, t, "#dispatch", f"order {i}").seq for i in range(3)]
    whole = t.path.read_bytes()
    torn = whole[:-20]  # kill -9 in the middle of the last line
    t.path.write_bytes(torn)
    assert _seqs(hub) == seqs[:2]  # the reader skips the torn line
    assert last_seq(t.path) == seqs[1]
    restarted = _trail(hub)
    assert restarted.catch_up(hub.store.db) == 1  # the torn one, again, from the database
    later = _post(hub, restarted, "#dispatch", "after the crash").seq
    data = t.path.read_bytes()
    assert data.startswith(torn + b"\n")  # the fragment ended where it was, ours on a new line
    assert _seqs(hub) == seqs + [later]
    assert [parse_line(line) for line in data.splitlines()].count(None) == 1


def test_a_last_line_missing_only_its_newline_is_not_written_twice(hub) -> None:
    t = _trail(hub)
    seqs = [_post(hub, t, "#dispatch", f"order {i}").seq for i in range(2)]
    t.path.write_bytes(t.path.read_bytes()[:-1])
    assert _seqs(hub) == seqs[:1]  # not yet whole for a reader: it may still be being written
    assert last_seq(t.path) == seqs[1]  # but the writer knows nobody else writes it
    restarted = _trail(hub)
    later = _post(hub, restarted, "#dispatch", "next").seq
    assert _seqs(hub) == seqs + [later]


def test_last_seq_reads_back_across_blocks_past_a_long_torn_line(hub) -> None:
    t = _trail(hub)
    big = "\x01" * 20_000  # \u0001 on file: each line longer than the block read back at once
    seqs = [_post(hub, t, "#dispatch", f"{i} {big}").seq for i in range(3)]
    data = t.path.read_bytes()
    last_line = len(data.splitlines()[-1]) + 1
    for left in (10, 30_000, 80_000):  # the torn fragment: shorter, and longer, than a block
        t.path.write_bytes(data[:len(data) - last_line + left])
        assert last_seq(t.path) == seqs[1], left
    t.path.write_bytes(data)
    assert last_seq(t.path) == seqs[2]


def test_foreign_and_broken_lines_are_not_entries() -> None:
    for line in (b"", b"[]", b'{"seq": "1"}', b'{"seq": 1.5}', b"\x00\x00\x00", b'{"seq": 1',
                 b"\xff\xfe", b'{"seq": true}'):
        assert parse_line(line) is None, line
    assert parse_line(b'{"seq": 7, "event": "post"}\n') == {"seq": 7, "event": "post"}


def test_a_trail_that_cannot_be_written_never_fails_and_catches_up_later(hub,
                                                                        tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()  # a directory where the file should be: every open fails
    t = Trail(blocked)
    msg = _post(hub, t, "#dispatch", "kept in the database")
    assert t.catch_up(hub.store.db) == 0
    t.path = tmp_path / "trail.jsonl"  # the disk is back
    assert t.catch_up(hub.store.db) == 1
    assert [e["seq"] for e in read_trail(t.path)] == [msg.seq]


def test_follow_prints_each_entry_as_it_is_appended_and_skips_a_torn_line(hub) -> None:
    t = _trail(hub)
    old = _post(hub, t, "#dispatch", "already there").seq
    t.path.write_bytes(t.path.read_bytes() + b'{"seq": 99, "bo')  # a torn tail
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []
    reader = threading.Thread(target=lambda: result.append(follow(
        t.path, since=0, count=3, as_json=False, out=out, err=err, timeout=10)), daemon=True)
    reader.start()
    restarted = _trail(hub)
    new = [_post(hub, restarted, "#dispatch", f"live {i}\n\x1b[2Jline two").seq for i in range(2)]
    reader.join(15)
    assert result == [3], (out.getvalue(), err.getvalue())
    lines = [line for line in out.getvalue().splitlines() if line.startswith("20")]
    assert [int(line.split()[2].lstrip("#")) for line in lines] == [old, *new]
    assert "\x1b" not in out.getvalue() and "\\x1b[2J" in out.getvalue()
    assert "skipped a torn line" in err.getvalue()


def test_following_from_now_starts_after_the_last_whole_line(hub) -> None:
    t = _trail(hub)
    _post(hub, t, "#dispatch", "history")
    t.path.write_bytes(t.path.read_bytes() + b'{"seq": 99, "bo')  # a torn tail
    err = io.StringIO()
    reader = Reader(t.path, err)
    try:
        assert reader.read(at_end=True) == []
        msg = _post(hub, _trail(hub), "#dispatch", "next")
        assert [e["seq"] for e in reader.read()] == [msg.seq]
        assert "skipped a torn line" in err.getvalue()  # the fragment, ended by the append
    finally:
        reader.close()


def test_a_rewritten_trail_ends_the_follow(hub) -> None:
    t = _trail(hub)
    _post(hub, t, "#dispatch", "one")
    _post(hub, t, "#dispatch", "two")
    reader = Reader(t.path, io.StringIO())
    try:
        assert len(reader.read()) == 2
        t.path.write_bytes(t.path.read_bytes().splitlines(keepends=True)[0])
        with pytest.raises(Rewritten):
            reader.read()
    finally:
        reader.close()
