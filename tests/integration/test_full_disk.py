"""Reads keep working on a full disk (issue 8): against the real broker on a small tmpfs data
directory filled to the last byte, a read, an inbox, a thread, the rooms and a search are all
answered; every write is refused as transient, saying the disk is full and where; what the reads
delivered meanwhile is written at the next commit that succeeds (an ack up to it is accepted,
after a restart too), and everything resumes once space returns. A broker *started* on the full
disk cannot open its database (SQLite's WAL index must be written first): it says so in one line
naming the full disk, and starts once space returns."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Transient
from tests.integration import test_faults
from chatbox.runtime.exits import Exit
from tests.fleet import child_env
from tests.integration.test_faults import CONFIG, fill

small_disk = test_faults.small_disk  # the fixture: an 8 MiB tmpfs data directory


def test_reads_are_answered_while_the_disk_is_full_and_their_marks_kept(small_disk):
    fleet = small_disk
    fleet.write_config(CONFIG)
    fleet.start_broker()
    fleet.add_agent("reader", "#general")
    posted = [fleet.post("#general", f"message {i}") for i in range(3)]
    reader = fleet.agent_client("reader")
    filler = fill(fleet.ws.data)

    got = reader.call(wire.Read(channel="#general", since=0, limit=2))
    assert [m.seq for m in got.messages] == [p.seq for p in posted[:2]] and got.more
    inbox = reader.call(wire.Inbox(limit=10))
    assert [m.seq for m in inbox.messages] == [p.seq for p in posted]
    assert reader.call(wire.GetPost(seq=posted[0].seq)).post.body == "message 0"
    assert "#general" in [c.name for c in reader.call(wire.Rooms()).channels]
    assert [m.seq for m in reader.call(wire.Search(query="message", limit=10)).messages]

    for write in (wire.Post(channel="#general", body="no room"),
                  wire.Ack(channel="#general", up_to=posted[0].seq)):
        with pytest.raises(Transient) as refused:
            reader.call(write)
        assert refused.value.code == "store"
        assert "disk" in refused.value.message and "full" in refused.value.message
        assert str(fleet.ws.data) in refused.value.message
    fleet.broker.wait_log("commit_failed")

    filler.unlink()  # space returns: the next commit writes what the reads delivered
    assert fleet.post("#general", "room again").seq
    assert fleet.broker.wait_log("commit_recovered")["failed"] >= 2
    assert len([e for e in fleet.broker.log_events() if e.get("event") == "commit_failed"]) == 1
    assert fleet.stop_broker() == 0
    fleet.start_broker()
    reader = fleet.agent_client("reader")
    acked = reader.call(wire.Ack(channel="#general", up_to=posted[-1].seq))
    assert acked.last_read == posted[-1].seq  # delivered by the inbox read on the full disk
    assert [m.body for m in reader.call(wire.Inbox(limit=10)).messages] == ["room again"]


@pytest.mark.parametrize("ended", ["stopped", "killed"])
def test_a_broker_started_on_a_full_disk_says_so_in_one_line_and_starts_once_space_returns(
        small_disk, ended):
    """Stopped cleanly, the database has no WAL index and opening must write one; killed, the
    WAL left behind must be recovered. Either way SQLite says only "disk I/O error" or "disk
    is full"; the broker's line names the full disk and what to do, and SQLite's own log lines
    are JSON like the broker's."""
    fleet = small_disk
    fleet.write_config(CONFIG)
    fleet.start_broker()
    posted = [fleet.post("#general", f"message {i}") for i in range(3)]
    if ended == "stopped":
        assert fleet.stop_broker() == 0
    else:
        fleet.broker.kill()
    filler = fill(fleet.ws.data)

    done = subprocess.run([sys.executable, "-m", "chatbox.broker"], env=child_env(fleet.ws),
                          cwd=fleet.root, capture_output=True, text=True, timeout=60)
    assert done.returncode == Exit.FAILED, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("broker: ")]
    assert len(said) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"the disk holding {fleet.ws.data} is full" in said[0], said
    assert "free space" in said[0]
    logged = [json.loads(line) for line in done.stderr.splitlines() if line not in said]
    assert all(entry["component"] == "broker" for entry in logged), logged

    filler.unlink()
    fleet.start_broker()
    assert [m.seq for m in fleet.read("#general")][-3:] == [p.seq for p in posted]
