"""bus/wire.py: every frame round-trips, frames are strict, topics are NUL-terminated."""

from __future__ import annotations

import time
import typing

import msgspec
import pytest
import zmq

from chatbox.bus import wire

MSG = wire.Message(seq=7, channel="#general", author="kim", kind="reply", body="hi @bob",
                   title=None, type="note", tier=0, in_reply_to=3, mentions=["bob"], chain=3,
                   hop=2, turn=9, pinned=True, status="closed", resolution="done",
                   created_at=1.5, redelivered=True)
SUB = wire.Subscription(channel="#general", view="digest", wake="mentions", last_read=4)
TURN = wire.TurnInfo(id=9, agent="kim", epoch=4, outcome="ok", exit_code=0, started_at=1.0,
                     ended_at=2.0, excerpt="ack 7", batch=[7])
AGENT = wire.AgentInfo(name="kim", state="BUSY", epoch=4, paused=True, paused_reason="why",
                       engine="stub", subscriptions=[SUB], offsets={"#general": 4},
                       current_turn=9, last_turn=TURN, supervisor="sup", revoked=False)
CHANNEL = wire.ChannelInfo(name="#ops", topic="ops", kind="private", created_by="kim",
                           last_seq=7, last_activity=1.0, unread=2, subscribed=True,
                           view="full", wake="all")

REQUESTS: list[wire.Request] = [
    wire.Whoami(),
    wire.Status(),
    wire.Post(channel="#general", body="b", kind="post", title="t", type="task", tier=2,
              in_reply_to=None, turn=4),
    wire.Read(channel="#general", since=3, limit=5),
    wire.GetPost(seq=3),
    wire.Ack(channel="#general", up_to=3),
    wire.Inbox(limit=7),
    wire.Subscribe(channel="#ops", view="headlines", wake="none", agent="kim"),
    wire.Unsubscribe(channel="#ops", agent="kim"),
    wire.Rooms(),
    wire.CreateChannel(name="#ops", topic="ops", kind="private"),
    wire.SetFlag(seq=3, action="close", resolution="done"),
    wire.Search(query="deploy", channel="#general", limit=3),
    wire.AddAgent(name="kim", subscribe=["#general"], wake="mentions", view="digest",
                  engine="stub"),
    wire.ListAgents(),
    wire.ShowAgent(name="kim"),
    wire.SetPaused(name="kim", paused=True, reason="why"),
    wire.Revoke(name="kim"),
    wire.Decide(seq=3, approve=False, reason="no"),
    wire.Escalate(reason="stuck", seq=3, turn=4),
    wire.Decisions(channel="#general", limit=2),
    wire.Sync(nonce="n1"),
    wire.Hello(agent="kim", supervisor="sup", pid=1, host="h", turn=4, epoch=5),
    wire.Claim(agent="kim", supervisor="sup", epoch=5),
    wire.TurnReport(agent="kim", supervisor="sup", turn=4, epoch=5, outcome="timeout",
                    exit_code=-15, digest="d", excerpt="e", output="o", reply="r",
                    engine_error=True),
]

RESULTS: list[wire.Result] = [
    wire.Done(),
    wire.PrincipalResult(name="kim", role="agent"),
    wire.MessageResult(message=MSG),
    wire.MessagesResult(messages=[MSG, MSG], last_seq=7, more=True),
    wire.ThreadResult(post=MSG, replies=[MSG]),
    wire.AckResult(channel="#general", last_read=7),
    wire.SubscriptionResult(agent="kim", subscription=SUB),
    wire.RoomsResult(channels=[CHANNEL]),
    wire.ChannelResult(channel=CHANNEL),
    wire.AgentCreated(name="kim", token="cbx_x", token_path="/x"),
    wire.AgentsResult(agents=[AGENT]),
    wire.AgentResult(agent=AGENT),
    wire.StatusResult(version="1", workspace="/w", pid=1, started_at=1.0, last_seq=7,
                      channels=3, principals=2, agents=[AGENT]),
    wire.HelloResult(state="WAKING", epoch=5, paused=False, pending=True),
    wire.ClaimResult(turn=4, epoch=6, messages=[MSG]),
    wire.ClaimResult(turn=None, epoch=6),
    wire.ReportResult(state="ASLEEP", epoch=6, acked={"#general": 7}, reply=MSG),
]

EVENTS: list[wire.Event] = [
    wire.MessageEvent(channel="#general", seq=7, author="kim", kind="chat"),
    wire.WakeEvent(agent="kim", epoch=5),
    wire.AgentEvent(agent="kim", state="BUSY", epoch=5, paused=True, turn=4, cause="claimed"),
    wire.SyncEvent(nonce="n1"),
]


def _members(union) -> set[type]:
    return set(typing.get_args(union))


def test_the_samples_cover_every_frame_type():
    """STYLE (wire): every frame is a Struct in a tagged union; each one is tested here."""
    assert {type(r) for r in REQUESTS} == _members(wire.RequestBody)
    assert {type(r) for r in RESULTS} == _members(wire.ResultBody)
    assert {type(e) for e in EVENTS} == _members(wire.EventBody)


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips_in_an_envelope(req):
    """STYLE (wire): one encoder and one typed decoder per direction."""
    env = wire.Envelope(v=wire.PROTOCOL_VERSION, rid=5, token="cbx_t", req=req, idem="k")
    assert wire.envelope_decoder.decode(wire.encode(env)) == env


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips_with_only_its_defaults(req):
    """STYLE (wire): new fields get defaults; omitted defaults decode to themselves."""
    required = {f.name: getattr(req, f.name) for f in msgspec.structs.fields(req)
                if f.required}
    bare = type(req)(**required)
    env = wire.Envelope(v=1, rid=1, token="t", req=bare)
    assert wire.envelope_decoder.decode(wire.encode(env)).req == bare


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_every_result_round_trips_in_a_reply(result):
    """STYLE (wire): replies carry a tagged result."""
    reply = wire.Reply(rid=5, result=result)
    assert wire.reply_decoder.decode(wire.encode(reply)) == reply


def test_an_error_reply_round_trips():
    """wire: a refusal is a code, a sentence, and the field at fault."""
    reply = wire.Reply(rid=5, error=wire.Error(code="invalid", message="no", field="body"))
    assert wire.reply_decoder.decode(wire.encode(reply)) == reply


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event):
    """wire: events are a tagged union decoded by one decoder."""
    assert wire.event_decoder.decode(wire.encode(event)) == event


def test_an_unknown_field_in_a_request_is_rejected():
    """STYLE (wire): frames forbid unknown fields."""
    raw = msgspec.msgpack.encode({"v": 1, "rid": 1, "token": "t",
                                  "req": {"op": "ack", "channel": "#g", "up_to": 1, "all": True}})
    with pytest.raises(msgspec.ValidationError, match="all"):
        wire.envelope_decoder.decode(raw)


def test_an_unknown_field_in_an_envelope_reply_or_event_is_rejected():
    """STYLE (wire): frames forbid unknown fields at every level."""
    env = msgspec.msgpack.encode({"v": 1, "rid": 1, "token": "t", "req": {"op": "whoami"},
                                  "sudo": True})
    reply = msgspec.msgpack.encode({"rid": 1, "result": {"kind": "done", "extra": 1}})
    event = msgspec.msgpack.encode({"ev": "wake", "agent": "kim", "epoch": 1, "extra": 1})
    for decoder, raw in ((wire.envelope_decoder, env), (wire.reply_decoder, reply),
                         (wire.event_decoder, event)):
        with pytest.raises(msgspec.ValidationError):
            decoder.decode(raw)


def test_an_unknown_op_is_rejected():
    """STYLE (wire): requests are a closed tagged union."""
    raw = msgspec.msgpack.encode({"v": 1, "rid": 1, "token": "t", "req": {"op": "drop_table"}})
    with pytest.raises(msgspec.ValidationError):
        wire.envelope_decoder.decode(raw)


def test_a_literal_field_rejects_an_unknown_value():
    """wire: wake modes, views, kinds and outcomes are closed sets."""
    raw = msgspec.msgpack.encode({"v": 1, "rid": 1, "token": "t",
                                  "req": {"op": "subscribe", "channel": "#g", "wake": "always"}})
    with pytest.raises(msgspec.ValidationError):
        wire.envelope_decoder.decode(raw)


def test_read_only_requests_are_exactly_those_that_change_nothing():
    """DESIGN §2: every request that changes state carries an idempotency key."""
    assert wire.READ_ONLY <= _members(wire.RequestBody)
    for writer in (wire.Post, wire.Ack, wire.Inbox, wire.Subscribe, wire.AddAgent, wire.Revoke,
                   wire.Hello, wire.Claim, wire.TurnReport, wire.Decide, wire.SetFlag):
        assert writer not in wire.READ_ONLY


def test_topics_end_in_nul():
    """wire: topic = b"<kind>/<name>\\0"."""
    assert wire.wake_topic("kimi") == b"wake/kimi\0"
    assert wire.channel_topic("#general") == b"chan/#general\0"
    assert wire.agent_topic("kimi") == b"agent/kimi\0"


def test_a_topic_is_never_a_prefix_of_a_longer_names_topic():
    """wire: wake/kim must not receive wake/kimi (SUB matches by prefix)."""
    assert not wire.wake_topic("kimi").startswith(wire.wake_topic("kim"))
    assert not wire.channel_topic("#gen-2").startswith(wire.channel_topic("#gen"))
    assert not wire.agent_topic("kim").startswith(wire.wake_topic("kim"))


def test_a_sub_for_kim_does_not_receive_kimis_wake():
    """wire: NUL-terminated topics make zmq's prefix match exact, on a real PUB/SUB pair."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    sub = ctx.socket(zmq.SUB)
    try:
        pub.bind("inproc://wire-test")
        sub.connect("inproc://wire-test")
        sub.setsockopt(zmq.SUBSCRIBE, wire.wake_topic("kim"))
        # The subscription reaches the PUB side asynchronously (the slow-joiner case): keep
        # publishing both wakes until kim's arrives, within a bounded deadline.
        kimi = [wire.wake_topic("kimi"), wire.encode(wire.WakeEvent(agent="kimi", epoch=1))]
        kim = [wire.wake_topic("kim"), wire.encode(wire.WakeEvent(agent="kim", epoch=2))]
        received = []
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            pub.send_multipart(kimi)
            pub.send_multipart(kim)
            while sub.poll(20, zmq.POLLIN):
                received.append(sub.recv_multipart())
        pub.send_multipart(kimi)
        pub.send_multipart(kim)
        assert sub.poll(5000, zmq.POLLIN)
        while sub.poll(50, zmq.POLLIN):
            received.append(sub.recv_multipart())
        assert received and {topic for topic, _ in received} == {wire.wake_topic("kim")}
        assert all(wire.event_decoder.decode(p) == wire.WakeEvent(agent="kim", epoch=2)
                   for _, p in received)
    finally:
        sub.close(linger=0)
        pub.close(linger=0)
        ctx.term()
