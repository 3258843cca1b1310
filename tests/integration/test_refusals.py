"""An error never reveals what the caller may not read: a message in a private channel the caller
is not in, or in a thread of #alerts it did not start, is refused with one and the same sentence
whatever the request and wherever the message is — never naming its channel or its thread; a
private or canary channel it is not in is answered word for word as a channel that does not
exist, so its name cannot be probed. Real broker."""

from __future__ import annotations

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Refused


@pytest.fixture
def world(fleet):
    """kim, an agent of #general only; #secret, private, with a post and a reply in it; #honey,
    a canary; a human's post in #alerts."""
    fleet.client().call(wire.CreateChannel(name="#secret", topic="members only", kind="private"))
    fleet.client().call(wire.CreateChannel(name="#honey", topic="a trap", kind="canary"))
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
    "escalate about it": lambda seq: wire.Escalate(reason="look at this", seq=seq),
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


def test_an_escalation_about_a_readable_message_takes_its_chain(world, fleet):
    """What an agent may read it may escalate about; what it may not, no escalation is made of
    (the refusal above stores nothing in #alerts)."""
    kim, seqs = world
    before = fleet.read("#alerts")[-1].seq
    with pytest.raises(Refused):
        kim.call(wire.Escalate(reason="what is this chain?", seq=seqs["reply"]))
    assert fleet.read("#alerts")[-1].seq == before
    public = fleet.post("#general", "a plan")
    escalation = kim.call(wire.Escalate(reason="this plan worries me", seq=public.seq)).message
    assert (escalation.channel, escalation.chain) == ("#alerts", public.chain)


CHANNEL_REQUESTS = [
    pytest.param(lambda ch: wire.Post(channel=ch, body="let me in"), id="post"),
    pytest.param(lambda ch: wire.Read(channel=ch), id="read"),
    pytest.param(lambda ch: wire.Subscribe(channel=ch), id="subscribe"),
    pytest.param(lambda ch: wire.Unsubscribe(channel=ch), id="unsubscribe"),
    pytest.param(lambda ch: wire.Search(query="members", channel=ch), id="search in it"),
    pytest.param(lambda ch: wire.Decisions(channel=ch), id="decisions in it"),
    pytest.param(lambda ch: wire.Ack(channel=ch, up_to=1), id="ack"),
]


@pytest.mark.parametrize("request_for", CHANNEL_REQUESTS)
@pytest.mark.parametrize("channel", ["#secret", "#honey"])
def test_a_channel_the_caller_may_not_see_is_answered_as_a_missing_one(world, request_for,
                                                                      channel):
    kim, _ = world
    answers = {}
    for name in (channel, "#nowhere"):
        with pytest.raises(Refused) as refused:
            kim.call(request_for(name))
        exc = refused.value
        answers[name] = (exc.code, exc.field, exc.message.replace(name, "#x"))
    assert answers[channel] == answers["#nowhere"] == ("not_found", "channel", "no channel #x")


def test_a_member_and_a_human_still_get_the_channel(world, fleet):
    """The other side of the same rule: a member reads, posts, unsubscribes; a human adds it."""
    kim, _ = world
    fleet.client().call(wire.Subscribe(channel="#secret", agent="kim"))
    assert kim.call(wire.Post(channel="#secret", body="in at last")).message.channel == "#secret"
    assert kim.call(wire.Read(channel="#secret")).messages[-1].body == "in at last"
    kim.call(wire.Unsubscribe(channel="#secret"))
    with pytest.raises(Refused, match="^no channel #secret$"):
        kim.call(wire.Read(channel="#secret"))


def test_creating_a_taken_name_says_only_that_it_is_taken(world):
    kim, _ = world
    said = {name: refusal(kim, wire.CreateChannel(name=name, topic="mine", kind="private"))
            for name in ("#secret", "#honey", "#general")}
    assert said == {name: f"the name {name} is taken: choose another" for name in said}
