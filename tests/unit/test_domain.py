"""Domain rules through Handlers.handle: bounds, threads, ACL, offsets, search, idempotency, auth.

Every request here is an encoded Envelope answered by ``Handlers.handle`` inside one
``Store.write()``, exactly as the server does (see ``tests/unit/conftest.py``).
"""

from __future__ import annotations

import msgspec
import pytest

from chatbox.broker.messages import COLUMNS, MAX_BODY, to_wire
from chatbox.bus import wire

# --------------------------------------------------------------------------- names and bounds


def test_an_invalid_channel_name_is_refused_naming_the_field(hub):
    """DESIGN §3: names match ^[a-z0-9][a-z0-9_.-]{0,63}$ behind a #; the error names the field."""
    err = hub.err(wire.Post(channel="#Bad!", body="hi"))
    assert (err.code, err.field) == ("invalid", "channel")
    err = hub.err(wire.CreateChannel(name="#Bad!", topic="t"))
    assert (err.code, err.field) == ("invalid", "name")
    err = hub.err(wire.CreateChannel(name="general", topic="t"))
    assert (err.code, err.field) == ("invalid", "name")


def test_an_invalid_agent_name_is_refused_naming_the_field(hub):
    """DESIGN §3: an agent name with a space or capitals is refused, naming the field."""
    err = hub.err(wire.AddAgent(name="Bad Name"))
    assert (err.code, err.field) == ("invalid", "name")
    assert "Bad Name" in err.message


def test_a_body_over_64_kib_is_refused_as_too_large(hub):
    """DESIGN §3: a body is at most 64 KiB."""
    err = hub.err(wire.Post(channel="#general", body="x" * (MAX_BODY + 1)))
    assert (err.code, err.field) == ("too_large", "body")
    assert hub.read("#general") == []


def test_a_body_of_exactly_64_kib_is_accepted(hub):
    """DESIGN §3: the bound is inclusive."""
    msg = hub.post("#general", "x" * MAX_BODY)
    assert len(hub.read("#general")[0].body) == MAX_BODY == len(msg.body)


def test_the_body_bound_counts_utf8_bytes_not_characters(hub):
    """DESIGN §3: 64 KiB is a size in bytes."""
    err = hub.err(wire.Post(channel="#general", body="é" * (MAX_BODY // 2 + 1)))
    assert (err.code, err.field) == ("too_large", "body")


def test_a_nul_in_the_body_is_refused(hub):
    """DESIGN §3: violations get a clear error naming the field, never a crash."""
    err = hub.err(wire.Post(channel="#general", body="a\x00b"))
    assert (err.code, err.field) == ("invalid", "body")


def test_a_title_over_200_characters_is_refused(hub):
    """DESIGN §3: a title is at most 200 characters."""
    err = hub.err(wire.Post(channel="#general", kind="post", title="t" * 201, body="b"))
    assert (err.code, err.field) == ("too_large", "title")
    assert hub.post("#general", "b", kind="post", title="t" * 200).title == "t" * 200


def test_a_post_needs_a_title(hub):
    """DESIGN §6: start_post(channel, title, ...)."""
    err = hub.err(wire.Post(channel="#general", kind="post", body="desc"))
    assert (err.code, err.field) == ("invalid", "title")


def test_a_tier_outside_0_to_2_is_refused(hub):
    """DESIGN §3: tier is 0/1/2."""
    for tier in (-1, 3):
        err = hub.err(wire.Post(channel="#general", kind="post", title="t", body="b", tier=tier))
        assert (err.code, err.field) == ("invalid", "tier")


def test_only_posts_carry_a_tier(hub):
    """DESIGN §6: the tier is start_post's; chat and replies carry none."""
    err = hub.err(wire.Post(channel="#general", body="b", tier=1))
    assert (err.code, err.field) == ("invalid", "tier")
    post = hub.post("#general", "b", kind="post", title="t", tier=1)
    assert post.tier == 1
    err = hub.err(wire.Post(body="r", in_reply_to=post.seq, tier=1))
    assert (err.code, err.field) == ("invalid", "tier")


def test_an_unknown_channel_is_not_found(hub):
    """DESIGN §3: a clear error naming the field."""
    err = hub.err(wire.Post(channel="#nowhere", body="hi"))
    assert (err.code, err.field) == ("not_found", "channel")
    err = hub.err(wire.Read(channel="#nowhere"))
    assert (err.code, err.field) == ("not_found", "channel")


def test_an_adhoc_channel_needs_a_topic(hub):
    """DESIGN §3: channels carry a topic; an ad-hoc one is made for one."""
    err = hub.err(wire.CreateChannel(name="#tmp", topic="  "))
    assert (err.code, err.field) == ("invalid", "topic")
    ch = hub.ok(wire.CreateChannel(name="#tmp", topic="triage")).channel
    assert (ch.name, ch.topic, ch.kind) == ("#tmp", "triage", "adhoc")


def test_creating_an_existing_channel_is_a_conflict(hub):
    """DESIGN §3: channel names are unique."""
    err = hub.err(wire.CreateChannel(name="#general", topic="again"))
    assert (err.code, err.field) == ("conflict", "name")


def test_a_taken_name_is_refused_in_one_sentence_whatever_the_channel(hub):
    """A create must refuse a taken name, but says no more: a private channel the caller is not
    in is refused in the same words as a public one, naming neither its kind nor its topic."""
    kim = hub.add_agent("kim", "#general")
    bob = hub.add_agent("bob", "#general")
    hub.ok(wire.CreateChannel(name="#secret", topic="the merger", kind="private"), kim)
    hub.ok(wire.CreateChannel(name="#open", topic="anyone"), kim)
    for name in ("#secret", "#open"):
        err = hub.err(wire.CreateChannel(name=name, topic="mine", kind="private"), bob)
        assert (err.code, err.field, err.message) == (
            "conflict", "name", f"the name {name} is taken: choose another")


# --------------------------------------------------------------------------- messages and threads


def test_mentions_are_parsed_from_the_body(hub):
    """DESIGN §3: messages carry their mentions (wake=mentions depends on them)."""
    msg = hub.post("#general", "@kimi and @codex.v2, see mail@example.com; @kimi again")
    assert msg.mentions == ["kimi", "codex.v2"]
    assert hub.read("#general")[0].mentions == ["kimi", "codex.v2"]


@pytest.mark.parametrize("body", ["thanks @kim.", "over to you @kim...", "is that you, @kim-?"])
def test_a_mention_ending_a_sentence_names_the_agent(hub, body):
    """DESIGN §3: mentions are @name; punctuation after a name is not part of it."""
    assert hub.post("#general", body).mentions == ["kim"]


def test_seq_is_global_and_monotonic_across_channels(hub):
    """DESIGN §3: one global, monotonically increasing sequence numbers every message."""
    hub.ok(wire.CreateChannel(name="#ops", topic="ops"))
    seqs = [hub.post(ch, f"m{i}").seq for i, ch in enumerate(["#general", "#ops"] * 4)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs == list(range(seqs[0], seqs[0] + 8))


def test_a_human_post_starts_a_chain_at_hop_zero(hub):
    """DESIGN §5: a human's post starts a chain at hop 0 (the chain id is its first seq)."""
    post = hub.post("#general", "start")
    assert (post.chain, post.hop) == (post.seq, 0)


def test_a_reply_lands_in_the_parents_thread_and_channel(hub):
    """DESIGN §3: in_reply_to, one level; the reply is in the parent's channel."""
    post = hub.post("#general", "b", kind="post", title="t")
    reply = hub.post(None, "r", in_reply_to=post.seq)
    assert (reply.kind, reply.channel, reply.in_reply_to) == ("reply", "#general", post.seq)
    thread = hub.ok(wire.GetPost(seq=reply.seq))
    assert thread.post.seq == post.seq
    assert [r.seq for r in thread.replies] == [reply.seq]


def test_a_reply_to_a_reply_is_refused_and_nothing_is_stored(hub):
    """DESIGN §3: in_reply_to is one level: a reply to a reply is refused."""
    post = hub.post("#general", "b", kind="post", title="t")
    reply = hub.post(None, "r", in_reply_to=post.seq)
    err = hub.err(wire.Post(body="rr", in_reply_to=reply.seq))
    assert (err.code, err.field) == ("invalid", "in_reply_to")
    assert [m.seq for m in hub.read("#general")] == [post.seq, reply.seq]


def test_a_reply_naming_another_channel_than_its_parent_is_refused(hub):
    """DESIGN §3: a thread lives in one channel."""
    hub.ok(wire.CreateChannel(name="#ops", topic="ops"))
    post = hub.post("#general", "b", kind="post", title="t")
    err = hub.err(wire.Post(channel="#ops", body="r", in_reply_to=post.seq))
    assert err.code == "invalid" and err.field in ("channel", "in_reply_to")
    assert hub.read("#ops") == []


def test_a_reply_to_a_missing_message_is_not_found(hub):
    """DESIGN §3: a clear error naming the field."""
    err = hub.err(wire.Post(body="r", in_reply_to=999))
    assert (err.code, err.field) == ("not_found", "in_reply_to")


def test_read_pages_oldest_first_after_since(hub):
    """DESIGN §6: `chatbox read CHANNEL --since SEQ --limit N`, oldest first."""
    seqs = [hub.post("#general", f"m{i}").seq for i in range(5)]
    page = hub.ok(wire.Read(channel="#general", since=seqs[1], limit=2))
    assert [m.seq for m in page.messages] == seqs[2:4]
    assert page.more is True
    assert page.last_seq == seqs[-1]



def test_each_stored_column_lands_in_its_own_field():
    """A stored message is built positionally from its columns: each value in its field."""
    names = [c.strip() for c in COLUMNS.split(",")]
    values = {name: f"value of {name}" for name in names} | {"mentions": "kim lee", "pinned": 1}
    expected = wire.Message(**{**values, "mentions": ["kim", "lee"], "pinned": True})
    assert to_wire(tuple(values[name] for name in names)) == expected



def test_pending_lists_what_waits_for_a_human_as_its_caller_may_see_it(hub):
    """What waits for a human (wire.Pending): the pending tier-2 posts, escalations among them,
    oldest first and in pages; an agent sees those of its own channels, never #alerts; a
    decided post is off the list."""
    kim = hub.add_agent("kim", "#general")
    bob = hub.add_agent("bob", "#dispatch")
    ask = hub.post("#general", "ship it?", kim, kind="post", title="Ship", tier=2)
    other = hub.post("#dispatch", "deploy?", bob, kind="post", title="Deploy", tier=2)
    alert = hub.ok(wire.Escalate(reason="stuck"), kim).message
    hub.post("#general", "only a chat")
    every = [ask.seq, other.seq, alert.seq]
    assert [m.seq for m in hub.ok(wire.Pending()).messages] == every
    assert [m.seq for m in hub.ok(wire.Pending(), kim).messages] == [ask.seq]
    assert [m.seq for m in hub.ok(wire.Pending(), bob).messages] == [other.seq]
    first = hub.ok(wire.Pending(limit=1))
    assert ([m.seq for m in first.messages], first.more) == ([ask.seq], True)
    assert [m.seq for m in hub.ok(wire.Pending(since=ask.seq)).messages] == every[1:]
    hub.ok(wire.Decide(seq=ask.seq, approve=True))
    assert [m.seq for m in hub.ok(wire.Pending()).messages] == every[1:]
    assert hub.ok(wire.Pending(), kim).messages == []


# --------------------------------------------------------------------------- ACL


def test_an_agent_cannot_read_an_unsubscribed_channel(hub):
    """DESIGN §7: history reads cover only channels the agent is subscribed to."""
    kim = hub.add_agent("kim", "#general")
    hub.post("#dispatch", "secret plans")
    err = hub.err(wire.Read(channel="#dispatch"), kim)
    assert (err.code, err.field) == ("forbidden", "channel")


def test_an_agent_may_post_to_an_unsubscribed_channel_without_subscribing(hub):
    """DESIGN §7: posting does not subscribe (it reports to #dispatch without reading it)."""
    kim = hub.add_agent("kim", "#general")
    msg = hub.post("#dispatch", "done", kim)
    assert msg.author == "kim"
    assert [s.channel for s in hub.agent("kim").subscriptions] == ["#general"]


def test_an_agent_may_get_a_post_in_an_unsubscribed_public_channel(hub):
    """DESIGN §7: get_post of one thread works in any channel that is not private."""
    kim = hub.add_agent("kim", "#general")
    post = hub.post("#dispatch", "b", kind="post", title="t")
    assert hub.ok(wire.GetPost(seq=post.seq), kim).post.seq == post.seq


def test_a_private_channel_is_invisible_to_non_members(hub):
    """DESIGN §7: private channels are for their members alone; to anyone else a private
    channel is answered exactly as one that does not exist (its name cannot be probed)."""
    kim = hub.add_agent("kim", "#general")
    bob = hub.add_agent("bob", "#general")
    hub.ok(wire.CreateChannel(name="#secret", topic="x", kind="private"), kim)
    post = hub.post("#secret", "b", kim, kind="post", title="t")
    assert "#secret" not in [c.name for c in hub.ok(wire.Rooms(), bob).channels]
    assert hub.err(wire.GetPost(seq=post.seq), bob).code == "forbidden"  # seqs are global
    assert hub.err(wire.Post(body="r", in_reply_to=post.seq), bob).code == "forbidden"
    for name in ("#secret", "#nowhere"):
        for req in (wire.Post(channel=name, body="let me in"), wire.Read(channel=name),
                    wire.Subscribe(channel=name), wire.Unsubscribe(channel=name),
                    wire.Search(query="b", channel=name), wire.Decisions(channel=name)):
            err = hub.err(req, bob)
            assert (err.code, err.field, err.message) == ("not_found", "channel",
                                                          f"no channel {name}"), req
    hits = hub.ok(wire.Search(query="b"), bob).messages
    assert post.seq not in [m.seq for m in hits]


def test_a_private_channel_is_visible_to_its_members_and_to_humans(hub):
    """DESIGN §7: humans and admins read everything."""
    kim = hub.add_agent("kim", "#general")
    hub.ok(wire.CreateChannel(name="#secret", topic="x", kind="private"), kim)
    post = hub.post("#secret", "b", kim, kind="post", title="t")
    assert "#secret" in [c.name for c in hub.ok(wire.Rooms(), kim).channels]
    assert "#secret" in [c.name for c in hub.ok(wire.Rooms()).channels]
    assert hub.ok(wire.GetPost(seq=post.seq)).post.seq == post.seq
    assert [m.seq for m in hub.read("#secret")] == [post.seq]
    hub.post(None, "a human answers", in_reply_to=post.seq)


def test_a_human_adds_members_to_a_private_channel(hub):
    """DESIGN §7: private channels are for their members; a human may add one."""
    kim = hub.add_agent("kim", "#general")
    bob = hub.add_agent("bob", "#general")
    hub.ok(wire.CreateChannel(name="#secret", topic="x", kind="private"), kim)
    hub.ok(wire.Subscribe(channel="#secret", agent="bob"))
    assert hub.post("#secret", "hi", bob).channel == "#secret"


def test_an_agent_cannot_subscribe_another_agent(hub):
    """DESIGN §7: an agent acts only as itself."""
    kim = hub.add_agent("kim", "#general")
    hub.add_agent("bob", "#general")
    err = hub.err(wire.Subscribe(channel="#dispatch", agent="bob"), kim)
    assert (err.code, err.field) == ("forbidden", "agent")


@pytest.mark.parametrize("action", ["pin", "close", "resolve", "unpin", "unresolve"])
def test_flags_on_a_post_are_its_authors_alone(hub, action):
    """DESIGN §7: pin, close and resolve are its own posts' alone."""
    kim = hub.add_agent("kim", "#general")
    bob = hub.add_agent("bob", "#general")
    post = hub.post("#general", "b", kim, kind="post", title="t")
    err = hub.err(wire.SetFlag(seq=post.seq, action=action, resolution="done"), bob)
    assert (err.code, err.field) == ("forbidden", "post_id")
    after = hub.ok(wire.SetFlag(seq=post.seq, action=action, resolution="done"), kim).message
    expected = {"pin": ("open", True), "unpin": ("open", False), "close": ("closed", False),
                "resolve": ("resolved", False), "unresolve": ("open", False)}[action]
    assert (after.status, after.pinned) == expected


def test_a_human_may_flag_any_post(hub):
    """DESIGN §7: humans are not bound by an agent's ownership rule."""
    kim = hub.add_agent("kim", "#general")
    post = hub.post("#general", "b", kim, kind="post", title="t")
    closed = hub.ok(wire.SetFlag(seq=post.seq, action="close", resolution="shipped")).message
    assert (closed.status, closed.resolution) == ("closed", "shipped")


def test_only_a_human_adds_pauses_or_revokes_agents(hub):
    """DESIGN §6/§7: agent management is the operator's."""
    kim = hub.add_agent("kim", "#general")
    assert hub.err(wire.AddAgent(name="evil"), kim).code == "forbidden"
    assert hub.err(wire.SetPaused(name="kim", paused=True), kim).code == "forbidden"
    assert hub.err(wire.Revoke(name="kim"), kim).code == "forbidden"


def test_an_agent_cannot_create_a_canary(hub):
    """DESIGN §7: a canary is a trap set by a human."""
    kim = hub.add_agent("kim", "#general")
    err = hub.err(wire.CreateChannel(name="#honey", topic="x", kind="canary"), kim)
    assert (err.code, err.field) == ("forbidden", "kind")


# --------------------------------------------------------------------------- offsets


def _delivered_to_kim(hub):
    kim = hub.add_agent("kim", "#general")
    seqs = [hub.post("#general", f"m{i}").seq for i in range(3)]
    assert [m.seq for m in hub.ok(wire.Inbox(), kim).messages] == seqs
    return kim, seqs


def test_a_new_subscriber_starts_at_the_channels_present(hub):
    """DESIGN §4: history stays readable but is no backlog for a new subscriber."""
    old = hub.post("#general", "before")
    kim = hub.add_agent("kim", "#general")
    assert hub.ok(wire.Inbox(), kim).messages == []
    assert [m.seq for m in hub.read("#general", kim)] == [old.seq]


def test_an_ack_moves_the_offset_and_drains_the_inbox(hub):
    """DESIGN §3: offsets are durable consumer offsets."""
    kim, seqs = _delivered_to_kim(hub)
    assert hub.ok(wire.Ack(channel="#general", up_to=seqs[1]), kim).last_read == seqs[1]
    assert [m.seq for m in hub.ok(wire.Inbox(), kim).messages] == [seqs[2]]
    assert hub.agent("kim").offsets["#general"] == seqs[1]


def test_an_ack_is_monotonic(hub):
    """DESIGN §3: an ack is monotonic (an older ack does not move the offset back)."""
    kim, seqs = _delivered_to_kim(hub)
    hub.ok(wire.Ack(channel="#general", up_to=seqs[2]), kim)
    assert hub.ok(wire.Ack(channel="#general", up_to=seqs[0]), kim).last_read == seqs[2]
    assert hub.agent("kim").offsets["#general"] == seqs[2]
    assert hub.ok(wire.Inbox(), kim).messages == []


def test_an_ack_only_up_to_a_seq_that_exists(hub):
    """DESIGN §3: an ack is only up to a seq that exists in that channel."""
    kim, seqs = _delivered_to_kim(hub)
    err = hub.err(wire.Ack(channel="#general", up_to=seqs[-1] + 100), kim)
    assert (err.code, err.field) == ("invalid", "up_to")


def test_an_ack_of_a_seq_in_another_channel_is_refused(hub):
    """DESIGN §3: an ack is only up to a seq that exists in that channel."""
    kim, seqs = _delivered_to_kim(hub)
    hub.ok(wire.Subscribe(channel="#dispatch"), kim)
    other = hub.post("#dispatch", "elsewhere")
    hub.ok(wire.Inbox(), kim)
    err = hub.err(wire.Ack(channel="#general", up_to=other.seq), kim)
    assert (err.code, err.field) == ("invalid", "up_to")
    assert hub.agent("kim").offsets["#general"] < seqs[0]


def test_an_ack_only_up_to_what_was_delivered(hub):
    """DESIGN §3: an ack is only up to a seq that was delivered to that agent."""
    kim = hub.add_agent("kim", "#general")
    first = hub.post("#general", "one")
    err = hub.err(wire.Ack(channel="#general", up_to=first.seq), kim)
    assert (err.code, err.field) == ("invalid", "up_to")
    hub.ok(wire.Inbox(limit=1), kim)
    second = hub.post("#general", "two")
    assert hub.ok(wire.Ack(channel="#general", up_to=first.seq), kim).last_read == first.seq
    assert hub.err(wire.Ack(channel="#general", up_to=second.seq), kim).field == "up_to"
    hub.read("#general", kim)  # a read delivers too
    assert hub.ok(wire.Ack(channel="#general", up_to=second.seq), kim).last_read == second.seq


def test_an_agent_cannot_ack_an_unsubscribed_channel(hub):
    """DESIGN §7: offsets are per subscription."""
    kim = hub.add_agent("kim", "#general")
    msg = hub.post("#dispatch", "x")
    err = hub.err(wire.Ack(channel="#dispatch", up_to=msg.seq), kim)
    assert (err.code, err.field) == ("forbidden", "channel")


def test_the_inbox_holds_only_others_messages_in_subscribed_channels(hub):
    """DESIGN §6: inbox is what is unacked for me."""
    kim = hub.add_agent("kim", "#general")
    hub.post("#general", "mine", kim)
    theirs = hub.post("#general", "theirs")
    hub.post("#dispatch", "not subscribed")
    assert [m.seq for m in hub.ok(wire.Inbox(), kim).messages] == [theirs.seq]


# --------------------------------------------------------------------------- search


def test_search_finds_words(hub):
    """DESIGN §3: a full-text index (FTS5) for search; every word must match."""
    a = hub.post("#general", "the deploy pipeline is green")
    hub.post("#general", "lunch is ready")
    b = hub.post("#general", "body", kind="post", title="deploy freeze")
    assert {m.seq for m in hub.ok(wire.Search(query="deploy")).messages} == {a.seq, b.seq}
    assert [m.seq for m in hub.ok(wire.Search(query="deploy green")).messages] == [a.seq]
    assert hub.ok(wire.Search(query="deploy lunch")).messages == []


def test_search_ranks_only_the_newest_matches(hub, monkeypatch):
    """At a million messages a common word would be ranked in every message it is in: the
    broker ranks the newest SEARCH_WINDOW matches, so the best of the oldest are not found."""
    from chatbox.broker import messages
    monkeypatch.setattr(messages, "SEARCH_WINDOW", 3)
    best_but_old = hub.post("#general", "deploy deploy deploy deploy")
    newer = [hub.post("#general", f"deploy note {i} of a longer message here") for i in range(3)]
    found = [m.seq for m in hub.ok(wire.Search(query="deploy")).messages]
    assert sorted(found) == [m.seq for m in newer]
    assert best_but_old.seq not in found
    only = hub.post("#dispatch", "deploy")
    assert [m.seq for m in hub.ok(wire.Search(query="deploy", channel="#dispatch")).messages] \
        == [only.seq]


def test_unread_counts_stop_at_the_cap(hub, monkeypatch):
    """A rooms call never counts a whole backlog: unread stops at UNREAD_CAP."""
    from chatbox.broker import channels
    monkeypatch.setattr(channels, "UNREAD_CAP", 3)
    kim = hub.add_agent("kim", "#general")
    for i in range(5):
        hub.post("#general", f"news {i}")
    general = next(c for c in hub.ok(wire.Rooms(), kim).channels if c.name == "#general")
    assert general.unread == 3
    hub.post("#dispatch", "one")
    dispatch = next(c for c in hub.ok(wire.Rooms()).channels if c.name == "#dispatch")
    assert dispatch.unread == 0  # the human's own post


def test_search_respects_the_read_acl(hub):
    """DESIGN §7: an agent only sees what it may read (its subscribed channels)."""
    kim = hub.add_agent("kim", "#general")
    seen = hub.post("#general", "rollout today")
    hidden = hub.post("#dispatch", "rollout plan")
    assert [m.seq for m in hub.ok(wire.Search(query="rollout"), kim).messages] == [seen.seq]
    assert {m.seq for m in hub.ok(wire.Search(query="rollout")).messages} == {seen.seq, hidden.seq}
    err = hub.err(wire.Search(query="rollout", channel="#dispatch"), kim)
    assert (err.code, err.field) == ("forbidden", "channel")


@pytest.mark.parametrize("query", ['rollout"', '"rollout', "rollout*", "rollout) (",
                                   "rollout ^ -", "{rollout}", "+rollout:"])
def test_search_tolerates_fts_syntax_in_the_query(hub, query):
    """DESIGN §3: violations get a clear answer, never a crash (user text is not FTS syntax)."""
    msg = hub.post("#general", "rollout today")
    reply = hub.send(wire.Search(query=query))
    assert reply.error is None, reply.error
    assert [m.seq for m in reply.result.messages] == [msg.seq]


@pytest.mark.parametrize("query", ["NEAR(rollout", "rollout AND OR NOT", "col:rollout"])
def test_search_treats_fts_operators_as_plain_words(hub, query):
    """DESIGN §3: every word must match, FTS5 keywords included; no syntax error."""
    hub.post("#general", "rollout today")
    literal = hub.post("#general", f"literally {query} here")
    reply = hub.send(wire.Search(query=query))
    assert reply.error is None, reply.error
    assert [m.seq for m in reply.result.messages] == [literal.seq]


@pytest.mark.parametrize("query", ['"', "*", "NEAR(", "   ", ""])
def test_search_without_words_is_a_clear_refusal_not_a_crash(hub, query):
    """DESIGN §3: a clear error naming the field, never a crash."""
    hub.post("#general", "rollout today")
    reply = hub.send(wire.Search(query=query))
    if reply.error is not None:
        assert (reply.error.code, reply.error.field) == ("invalid", "query")
    else:
        assert reply.result.messages == []


# --------------------------------------------------------------------------- idempotency


def test_the_same_idempotency_key_stores_one_message(hub):
    """DESIGN §2: a retry with the same key gets the first result and is never applied twice."""
    payload = hub.envelope(wire.Post(channel="#general", body="once"), idem="k1")
    first = hub.handle_raw(payload)
    second = hub.handle_raw(payload)
    assert first.result.message.seq == second.result.message.seq
    assert [m.body for m in hub.read("#general")] == ["once"]


def test_a_retry_with_the_same_key_in_the_same_batch_stores_one_message(hub):
    """DESIGN §2: a retry can land in the same group commit as the attempt it repeats."""
    payload = hub.envelope(wire.Post(channel="#general", body="once"), idem="k1")
    a, b = (wire.reply_decoder.decode(r) for r in hub.handle_many([payload, payload]))
    assert a.result.message.seq == b.result.message.seq
    assert len(hub.read("#general")) == 1


def test_an_idempotency_key_is_per_principal(hub):
    """DESIGN §2: keys are client-made, so two principals' keys never collide."""
    kim = hub.add_agent("kim", "#general")
    a = hub.ok(wire.Post(channel="#general", body="from alice"), idem="k1").message
    b = hub.ok(wire.Post(channel="#general", body="from kim"), kim, idem="k1").message
    assert a.seq != b.seq
    assert [m.body for m in hub.read("#general")] == ["from alice", "from kim"]


def test_a_refused_request_does_not_burn_its_idempotency_key(hub):
    """DESIGN §2: only an applied request is remembered; a corrected retry may use the key."""
    err = hub.err(wire.Post(channel="#general", body="a\x00"), idem="k9")
    assert err.code == "invalid"
    assert hub.ok(wire.Post(channel="#general", body="fixed"), idem="k9").message.body == "fixed"


def test_an_agent_token_is_never_stored_in_plaintext_on_disk(hub):
    """DESIGN §7: a token is shown once and stored as a hash."""
    res = hub.ok(wire.AddAgent(name="kim", subscribe=["#general"]), idem="add-kim")
    hub.store.close()
    raw = hub.ws.db_path.read_bytes()
    for extra in ("-wal",):
        wal = hub.ws.db_path.with_name(hub.ws.db_path.name + extra)
        if wal.exists():
            raw += wal.read_bytes()
    hub.store = type(hub.store)(hub.ws.db_path)
    assert res.token.encode() not in raw


def test_an_agent_token_is_never_stored_in_plaintext(hub):
    """DESIGN §7: a token is shown once and stored as a hash (idempotent replies included)."""
    res = hub.ok(wire.AddAgent(name="kim", subscribe=["#general"]), idem="add-kim")
    db = hub.store.db
    for table, in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table' "
                             "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%fts%'").fetchall():
        for row in db.execute(f"SELECT * FROM {table}"):
            assert not any(isinstance(v, (str, bytes)) and res.token.encode() in (
                v if isinstance(v, bytes) else v.encode()) for v in row), table


def test_an_add_agent_retried_with_its_key_adds_once_and_names_the_token_file(hub):
    """DESIGN §2 + §7: the retry is answered with the first result, minus the token."""
    payload = hub.envelope(wire.AddAgent(name="kim", subscribe=["#general"]), idem="add-kim")
    first = hub.handle_raw(payload).result
    again = hub.handle_raw(payload).result
    assert first.token and again.token != first.token
    assert again.token_path == first.token_path
    assert hub.ws.read_token(hub.ws.agent_token_path("kim")) == first.token
    assert [a.name for a in hub.ok(wire.ListAgents()).agents] == ["kim"]
    assert hub.ok(wire.Whoami(), first.token).name == "kim"


# --------------------------------------------------------------------------- admission and frames


def test_an_unknown_token_is_unauthorized(hub):
    """DESIGN §7: every principal has its own token."""
    err = hub.err(wire.Whoami(), "cbx_not-a-token")
    assert err.code == "unauthorized"
    assert "cbx_not-a-token" not in err.message


def test_a_revoked_agent_is_refused_at_once(hub):
    """DESIGN §7: revocation takes effect at once."""
    kim = hub.add_agent("kim", "#general")
    assert hub.ok(wire.Whoami(), kim).name == "kim"
    hub.ok(wire.Revoke(name="kim"))
    assert hub.err(wire.Whoami(), kim).code == "unauthorized"
    assert hub.err(wire.Post(channel="#general", body="still here?"), kim).code == "unauthorized"
    assert hub.agent("kim").revoked is True


def test_a_revoked_agent_is_not_woken(hub):
    """DESIGN §7: a revoked principal takes no further part."""
    hub.add_agent("kim", "#general")
    hub.ok(wire.Revoke(name="kim"))
    hub.post("#general", "anyone?")
    assert hub.woken() == []


def test_a_protocol_version_mismatch_is_refused(hub):
    """wire: the envelope carries the protocol version; another version is refused."""
    reply = hub.send(wire.Whoami(), v=wire.PROTOCOL_VERSION + 1)
    assert reply.error is not None and reply.error.code == "version"
    assert str(wire.PROTOCOL_VERSION) in reply.error.message


@pytest.mark.parametrize("payload", [b"", b"garbage", b"\xc1", msgspec.msgpack.encode([1, 2]),
                                     msgspec.msgpack.encode({"v": 1, "rid": 7})])
def test_an_undecodable_frame_gets_a_bad_frame_reply(hub, payload):
    """DESIGN §3: never a crash: a bad frame is answered with an error."""
    reply = hub.handle_raw(payload)
    assert reply.result is None
    assert reply.error.code == "bad_frame"


def test_a_bad_frame_reply_keeps_the_rid_when_it_can(hub):
    """wire: a reply carries the rid of its request so the client can match it."""
    payload = msgspec.msgpack.encode({"v": 1, "rid": 42, "token": hub.admin,
                                      "req": {"op": "post", "body": 5}})
    reply = hub.handle_raw(payload)
    assert (reply.rid, reply.error.code) == (42, "bad_frame")


def test_an_unknown_request_field_is_a_bad_frame(hub):
    """STYLE (wire): frames are strict Structs; unknown fields are refused."""
    payload = msgspec.msgpack.encode({"v": 1, "rid": 3, "token": hub.admin,
                                      "req": {"op": "whoami", "sudo": True}})
    reply = hub.handle_raw(payload)
    assert (reply.rid, reply.error.code) == (3, "bad_frame")


def test_whoami_names_the_principal_and_its_role(hub):
    """DESIGN §7: each principal acts only as itself."""
    kim = hub.add_agent("kim", "#general")
    assert hub.ok(wire.Whoami(), kim) == wire.PrincipalResult(name="kim", role="agent")
    assert hub.ok(wire.Whoami()) == wire.PrincipalResult(name="alice", role="admin")
