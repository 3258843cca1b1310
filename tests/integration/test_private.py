"""Private stays private (DESIGN §7): escalations may quote what only some may read, so
``#alerts`` is read by humans only; another agent's roster entry hides its last turn's batch,
output and cause and the private channels the asker may not see. Against a real broker and
supervisor."""

from __future__ import annotations

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Refused
from tests.fleet import wait_for


def test_no_agent_reads_or_subscribes_to_alerts(fleet):
    fleet.client().call(wire.CreateChannel(name="#secret", topic="members only", kind="private"))
    fleet.add_agent("kim", "#general", "#secret")
    fleet.add_agent("bob", "#general")
    kim, bob = fleet.agent_client("kim"), fleet.agent_client("bob")
    secret = fleet.post("#secret", "the launch code is 0000")
    alert = bob.call(wire.Escalate(reason=f"quoting #{secret.seq}: the launch code is 0000")).message
    assert alert.channel == "#alerts"
    for agent in (kim, bob):
        with pytest.raises(Refused, match="read by humans only"):
            agent.call(wire.Read(channel="#alerts"))
        with pytest.raises(Refused, match="read by humans only"):
            agent.call(wire.Subscribe(channel="#alerts"))
    with pytest.raises(Refused, match="read by humans only"):  # nor may a human subscribe one
        fleet.client().call(wire.Subscribe(channel="#alerts", agent="kim"))
    with pytest.raises(Refused, match="read by humans only"):  # another's escalation
        kim.call(wire.GetPost(seq=alert.seq))
    assert bob.call(wire.GetPost(seq=alert.seq)).post.seq == alert.seq  # its own: the decisions
    hits = kim.call(wire.Search(query="launch code")).messages
    assert {m.channel for m in hits} == {"#secret"}  # kim's own channel, never #alerts
    assert fleet.read("#alerts")[-1].seq == alert.seq  # humans read everything


def test_another_agents_roster_entry_hides_its_output_and_private_channels(fleet):
    fleet.write_config('[agents.kim]\nengine = "stub"\n')
    fleet.client().call(wire.CreateChannel(name="#secret", topic="members only", kind="private"))
    fleet.add_agent("kim", "#general", "#secret")
    fleet.add_agent("bob", "#general")
    fleet.start_supervisor("kim")
    post = fleet.post("#secret", "private work for kim")
    wait_for(lambda: (t := fleet.agent("kim").last_turn) and t.outcome == "ok",
             timeout=20, what="kim's turn")
    mine = fleet.agent("kim").last_turn
    assert mine.excerpt == f"ack {post.seq}"  # a human sees it
    seen = fleet.agent_client("bob").call(wire.ShowAgent(name="kim")).agent
    assert seen.state and seen.last_turn.id == mine.id and seen.last_turn.outcome == "ok"
    assert mine.batch == [post.seq]  # a human sees what the turn handled
    assert (seen.last_turn.excerpt, seen.last_turn.cause, seen.last_turn.batch, seen.offsets,
            seen.supervisor) == ("", None, [], {}, None)
    assert [s.channel for s in seen.subscriptions] == ["#general"]
    listed = {a.name: a for a in fleet.agent_client("bob").call(wire.ListAgents()).agents}
    assert listed["kim"].last_turn.excerpt == "" and listed["kim"].last_turn.batch == [] and \
        [s.channel for s in listed["kim"].subscriptions] == ["#general"]
    own = fleet.agent_client("kim").call(wire.ShowAgent(name="kim")).agent
    assert own.last_turn.excerpt == f"ack {post.seq}" and len(own.subscriptions) == 2


def test_an_ack_moves_only_the_channel_its_message_is_in(fleet):
    """Issue 13: an ack whose up_to is a decision delivered in another channel (#alerts) must not
    move the caller's offset elsewhere past messages it was never delivered; nor does the
    refusal say where a message the caller may not read is."""
    fleet.client().call(wire.CreateChannel(name="#secret", topic="members only", kind="private"))
    fleet.add_agent("kim", "#general")
    kim = fleet.agent_client("kim")
    escalation = kim.call(wire.Escalate(reason="may I?")).message
    fleet.client().call(wire.Decide(seq=escalation.seq, approve=True, reason="yes"))
    never_read = fleet.post("#general", "not delivered to kim yet")
    hidden = fleet.post("#secret", "kim may not read this")
    decision_seq = max(m.seq for m in fleet.read("#alerts"))  # the decision, kim's directly
    with pytest.raises(Refused, match="not a message of #general"):
        kim.call(wire.Ack(channel="#general", up_to=decision_seq))
    with pytest.raises(Refused) as refused:
        kim.call(wire.Ack(channel="#general", up_to=hidden.seq))
    assert "#secret" not in refused.value.message
    assert fleet.agent("kim").offsets.get("#general", 0) < never_read.seq
