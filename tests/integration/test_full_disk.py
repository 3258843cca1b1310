"""Reads keep working on a full disk (issue 8): against the real broker on a small tmpfs data
directory filled to the last byte, a read, an inbox, a thread, the rooms and a search are all
answered; every write is refused as transient, saying the disk is full and where; what the reads
delivered meanwhile is written at the next commit that succeeds (an ack up to it is accepted,
after a restart too), and everything resumes once space returns."""

from __future__ import annotations

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Transient
from tests.integration import test_faults
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
