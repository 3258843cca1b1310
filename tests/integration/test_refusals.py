"""An error never reveals what the caller may not read (issue 13): a message in a private channel
the caller is not in, or in a thread of #alerts it did not start, is refused with one and the
same sentence whatever the request and wherever the message is — never naming its channel or
its thread. Real broker."""

from __future__ import annotations

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Refused


@pytest.fixture
def world(fleet):
    """kim, an agent of #general only; #secret, private, with a post and a reply in it; a
    human's post in #alerts."""
    fleet.client().call(wire.CreateChannel(name="#secret", topic="members only", kind="private"))
    fleet.add_agent("kim", "#general")
    post = fleet.post("#secret", "members only")
    reply = fleet.post(None, "a reply, members only", in_reply_to=post.seq)
    alert = fleet.post("#alerts", "for humans")
    return fleet.agent_client("kim"), {"post": post.seq, "reply": reply.seq, "alert": alert.seq}


def refusal(client, req: wire.Request) -> str:
    with pytest.raises(Refused) as refused:
        client.call(req)
    return refused.value.message


REQUESTS = {
    "reply": lambda seq: wire.Post(in_reply_to=seq, body="hi"),
    "reply in another channel": lambda seq: wire.Post(channel="#general", in_reply_to=seq,
                                                      body="hi"),
    "get_post": lambda seq: wire.GetPost(seq=seq),
    "pin": lambda seq: wire.SetFlag(seq=seq, action="pin"),
}


@pytest.mark.parametrize("what", sorted(REQUESTS))
@pytest.mark.parametrize("target", ["post", "reply", "alert"])
def test_a_message_the_caller_may_not_read_is_refused_in_one_sentence_naming_nothing(world, what,
                                                                                  target):
    kim, seqs = world
    seq = seqs[target]
    with pytest.raises(Refused) as refused:
        kim.call(REQUESTS[what](seq))
    assert refused.value.code == "forbidden"
    assert refused.value.message == (f"#{seq} is in a channel you may not read (private, or "
                                     "read by humans only)")


def test_what_the_caller_may_read_still_says_why(world):
    """The refusals stay precise where the caller may see the thread: its own escalation."""
    kim, _ = world
    own = kim.call(wire.Escalate(reason="may I?")).message
    reply = kim.call(wire.Post(in_reply_to=own.seq, body="more detail")).message
    said = refusal(kim, wire.Post(in_reply_to=reply.seq, body="deeper"))
    assert f"is itself a reply (to #{own.seq})" in said
    assert kim.call(wire.GetPost(seq=own.seq)).post.seq == own.seq


def test_status_shows_an_agent_no_more_of_the_others_than_the_roster_does(world, fleet):
    """Another agent's offsets, supervisor, private channels and turn output are not in an
    agent's status, as they are not in its roster."""
    kim, _ = world
    fleet.add_agent("bob", "#general", "#secret")
    fleet.agent_client("bob").call(wire.Read(channel="#secret", since=0, limit=10))
    assert fleet.agent("bob").offsets  # what a human sees
    bob = {a.name: a for a in kim.call(wire.Status()).agents}["bob"]
    assert bob.offsets == {} and bob.supervisor is None
    assert [s.channel for s in bob.subscriptions] == ["#general"]
    assert bob == {a.name: a for a in kim.call(wire.ListAgents()).agents}["bob"]
