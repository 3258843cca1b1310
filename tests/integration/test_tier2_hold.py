"""A tier-2 hold only a human lifts (DESIGN §5, issue 13): while a post is pending nothing but a
human's decision changes its status, and a decided post stays decided — against a real broker,
the agent acting through its own token as its turns would."""

from __future__ import annotations

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Refused


@pytest.mark.parametrize("action", ["close", "resolve", "unresolve"])
def test_the_author_cannot_lift_its_own_pending_post(fleet, action):
    fleet.add_agent("kim", "#general")
    kim = fleet.agent_client("kim")
    post = kim.call(wire.Post(channel="#general", kind="post", title="Deploy", body="may I deploy?",
                              type="proposal", tier=2)).message
    assert post.status == "pending"
    with pytest.raises(Refused, match="only a human's approve or deny"):
        kim.call(wire.SetFlag(seq=post.seq, action=action, resolution="done"))
    assert fleet.client().call(wire.GetPost(seq=post.seq)).post.status == "pending"
    # nor may a human lift it by closing it: only the decision does
    with pytest.raises(Refused, match="tier-2 post"):
        fleet.client().call(wire.SetFlag(seq=post.seq, action=action, resolution="x"))


def test_a_decided_post_stays_decided(fleet):
    fleet.add_agent("kim", "#general")
    kim = fleet.agent_client("kim")
    post = kim.call(wire.Post(channel="#general", kind="post", title="Deploy", body="may I deploy?",
                              type="proposal", tier=2)).message
    fleet.client().call(wire.Decide(seq=post.seq, approve=False, reason="not today"))
    for action in ("unresolve", "close", "resolve"):
        with pytest.raises(Refused, match=r"tier-2 post \(denied\)"):
            kim.call(wire.SetFlag(seq=post.seq, action=action, resolution="reopened"))
    root = fleet.client().call(wire.GetPost(seq=post.seq)).post
    assert root.status == "denied"
    # pinning is not a status: the author may still pin its post
    assert kim.call(wire.SetFlag(seq=post.seq, action="pin")).message.pinned
