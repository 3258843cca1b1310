"""bus/wire.py: every frame round-trips, frames are strict, bounds are the wire's, topics are
NUL-terminated, and every request is classified as reading or writing — truthfully."""

from __future__ import annotations

import time
import typing

import msgspec
import pytest
import zmq

from chatbox.broker import errors as broker_errors
from chatbox.broker.store import index_messages
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
    wire.Attach(turn=1),
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
    wire.Pending(since=3, limit=2),
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


def _sent(env: wire.Envelope) -> tuple[wire.EnvelopeHead, wire.Request]:
    """What the broker reads of an envelope: the head, then the request."""
    head = wire.envelope_decoder.decode(wire.encode(env))
    return head, wire.request_decoder.decode(head.req)


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips_in_an_envelope(req):
    """STYLE (wire): one encoder and one typed decoder per direction."""
    env = wire.Envelope(v=wire.PROTOCOL_VERSION, rid=5, token="cbx_t", req=req, idem="k")
    head, got = _sent(env)
    assert (head.v, head.rid, head.token, head.idem, got) == (env.v, 5, "cbx_t", "k", req)


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips_with_only_its_defaults(req):
    """STYLE (wire): new fields get defaults; omitted defaults decode to themselves."""
    required = {f.name: getattr(req, f.name) for f in msgspec.structs.fields(req)
                if f.required}
    bare = type(req)(**required)
    env = wire.Envelope(v=1, rid=1, token="t", req=bare)
    assert _sent(env)[1] == bare


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_every_result_round_trips_in_a_reply(result):
    """STYLE (wire): replies carry a tagged result."""
    reply = wire.ResultReply(rid=5, result=result)
    got = wire.reply_decoder.decode(wire.encode(reply))
    assert got == reply and got.error is None


def test_an_error_reply_round_trips():
    """wire: a refusal is a code, a sentence, and the field at fault."""
    reply = wire.ErrorReply(rid=5, error=wire.Error(code="invalid", message="no", field="body"))
    got = wire.reply_decoder.decode(wire.encode(reply))
    assert got == reply and got.result is None


@pytest.mark.parametrize("frame", [
    {"rid": 1},
    {"rid": 1, "result": None, "error": None},
    {"reply": "result", "rid": 1},
    {"reply": "error", "rid": 1},
    {"reply": "result", "rid": 1, "result": {"kind": "done"},
     "error": {"code": "invalid", "message": "x"}},
], ids=["untagged", "both-null", "result-without-result", "error-without-error", "both"])
def test_a_reply_is_a_result_or_an_error_never_neither_nor_both(frame):
    """Issue 12 item 4: a reply is a result or an error, never neither."""
    with pytest.raises(msgspec.ValidationError):
        wire.reply_decoder.decode(msgspec.msgpack.encode(frame))


def test_every_code_the_broker_produces_is_a_wire_error_code():
    """Issue 12 item 4: error codes are one Literal; an unknown code fails to decode."""
    classes = [broker_errors.BrokerError, *broker_errors.BrokerError.__subclasses__()]
    classes += [c for k in list(classes) for c in k.__subclasses__()]
    assert {c.code for c in classes} <= wire.ERROR_CODES
    raw = msgspec.msgpack.encode({"reply": "error", "rid": 1,
                                  "error": {"code": "oops", "message": "x"}})
    with pytest.raises(msgspec.ValidationError):
        wire.reply_decoder.decode(raw)


def test_an_unknown_field_in_a_request_is_rejected():
    """STYLE (wire): frames forbid unknown fields."""
    raw = msgspec.msgpack.encode({"op": "ack", "channel": "#g", "up_to": 1, "all": True})
    with pytest.raises(msgspec.ValidationError, match="all"):
        wire.request_decoder.decode(raw)


def test_an_unknown_field_in_an_envelope_reply_or_event_is_rejected():
    """STYLE (wire): frames forbid unknown fields at every level."""
    env = msgspec.msgpack.encode({"v": 1, "rid": 1, "token": "t", "req": {"op": "whoami"},
                                  "sudo": True})
    reply = msgspec.msgpack.encode({"reply": "result", "rid": 1,
                                    "result": {"kind": "done", "extra": 1}})
    event = msgspec.msgpack.encode({"ev": "wake", "agent": "kim", "epoch": 1, "extra": 1})
    for decoder, raw in ((wire.envelope_decoder, env), (wire.reply_decoder, reply),
                         (wire.event_decoder, event)):
        with pytest.raises(msgspec.ValidationError):
            decoder.decode(raw)


def test_an_unknown_op_is_rejected():
    """STYLE (wire): requests are a closed tagged union."""
    with pytest.raises(msgspec.ValidationError):
        wire.request_decoder.decode(msgspec.msgpack.encode({"op": "drop_table"}))


def test_a_literal_field_rejects_an_unknown_value():
    """wire: wake modes, views, kinds and outcomes are closed sets."""
    raw = msgspec.msgpack.encode({"op": "subscribe", "channel": "#g", "wake": "always"})
    with pytest.raises(msgspec.ValidationError):
        wire.request_decoder.decode(raw)


# --------------------------------------------------------------------------- bounds

def _decodes(req: wire.Request) -> bool:
    try:
        wire.request_decoder.decode(wire.encode(req))
    except msgspec.ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", ["bob\n", "Bob", "", "-bob", "b" * 65, "bo b", "bob\n\n"])
def test_a_name_must_match_as_a_whole_string(name):
    """DESIGN §3: names match ^[a-z0-9][a-z0-9_.-]{0,63}$ — the whole string, no trailing \\n."""
    assert not wire.is_name(name) and not wire.NAME_RE.match(name)
    assert not _decodes(wire.AddAgent(name=name))
    assert not wire.is_channel("#" + name) and not _decodes(wire.Read(channel="#" + name))


@pytest.mark.parametrize("name", ["bob", "b", "bot.v2", "a_b-c", "0" + "x" * 63])
def test_a_good_name_passes_everywhere(name):
    """DESIGN §3: 1-64 of a-z 0-9 _ . - starting with a letter or digit."""
    assert wire.is_name(name) and _decodes(wire.AddAgent(name=name, subscribe=["#" + name]))


def test_body_and_title_bounds_are_inclusive():
    """DESIGN §3: a body is at most 64 KiB, a title 200 characters."""
    assert _decodes(wire.Post(channel="#g", body="x" * wire.MAX_BODY, title="t" * wire.MAX_TITLE))
    assert not _decodes(wire.Post(channel="#g", body="x" * (wire.MAX_BODY + 1)))
    assert not _decodes(wire.Post(channel="#g", body="b", title="t" * (wire.MAX_TITLE + 1)))


@pytest.mark.parametrize(("req", "code", "field", "words"), [
    (wire.Post(channel="#g", body="x" * (64 * 1024 + 1)), "too_large", "body",
     "over the limit of 65536"),
    (wire.Post(channel="#Bad!"), "invalid", "channel", "#general"),
    (wire.Post(channel="#g", tier=3), "invalid", "tier", "0, 1, 2"),
    (wire.AddAgent(name="bob\n"), "invalid", "name", "a-z 0-9"),
    (wire.AddAgent(name="bob", subscribe=["#ok", "nope"]), "invalid", "subscribe", "'nope'"),
    (wire.Read(channel="#g", limit=0), "invalid", "limit", "at least 1"),
], ids=["body", "channel", "tier", "name", "subscribe", "limit"])
def test_a_bound_violation_is_explained_naming_the_field(req, code, field, words):
    """DESIGN §3: violations get a clear error naming the field, never a crash."""
    raw = wire.encode(req)
    with pytest.raises(msgspec.ValidationError) as info:
        wire.request_decoder.decode(raw)
    kind, err = wire.refusal(info.value, raw)
    assert kind is type(req) and (err.code, err.field) == (code, field)
    assert words in err.message and len(err.message) < 200


def test_the_broker_refuses_a_bound_violation_naming_the_field_after_the_token(hub):
    """DESIGN §3, §7: "bob\\n" is refused naming the field — but only to a known token of this
    protocol version; a stranger learns no more than that its token is unknown."""
    err = hub.err(wire.AddAgent(name="bob\n"))
    assert (err.code, err.field) == ("invalid", "name") and "'bob\\n'" in err.message
    assert hub.err(wire.AddAgent(name="bob\n"), "cbx_unknown").code == "unauthorized"
    assert hub.send(wire.AddAgent(name="bob\n"), v=wire.PROTOCOL_VERSION + 1).error.code == \
        "version"
    assert hub.ok(wire.ListAgents()).agents == []


def test_a_malformed_request_is_not_explained_as_a_bound():
    """wire: a value of the wrong type is a bad frame, not a bound violation."""
    raw = msgspec.msgpack.encode({"op": "post", "body": ["not", "text"]})
    with pytest.raises(msgspec.ValidationError) as info:
        wire.request_decoder.decode(raw)
    assert wire.refusal(info.value, raw) is None


# --------------------------------------------------------------------------- effects

def test_every_request_type_is_classified_once():
    """DESIGN §2: every request that changes state carries an idempotency key."""
    assert set(wire.EFFECTS) == _members(wire.RequestBody)
    assert wire.READ_ONLY == {t for t, e in wire.EFFECTS.items() if e in ("reads", "marks")}
    assert all(wire.keyed(t) == (t not in wire.READ_ONLY) for t in wire.EFFECTS)


def _state(hub) -> dict[str, list[tuple]]:
    """Every stored row, table by table (the full-text index is derived: fed, then left out)."""
    with hub.store.write():
        index_messages(hub.store.db)
    db = hub.store.db
    tables = [t for (t,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE 'messages_fts%' ORDER BY name")]
    return {t: sorted(map(tuple, db.execute(f"SELECT * FROM {t}")), key=repr) for t in tables}


def _world(hub) -> tuple[dict[str, str], dict[type, wire.Request]]:
    """A workspace with an agent, a thread and a decision, and one sample request of each kind
    that succeeds there."""
    kim = hub.add_agent("kim", "#general")
    post = hub.post("#general", "deploy question", kim, kind="post", title="T", tier=2)
    hub.post(None, "deploy answer", in_reply_to=post.seq)
    hub.ok(wire.Decide(seq=post.seq, approve=True, reason="fine"))
    samples = {type(r): r for r in REQUESTS}
    samples[wire.GetPost] = wire.GetPost(seq=post.seq)
    samples[wire.Read] = wire.Read(channel="#general")
    # kim is woken by the decision on its post: a turn in flight, for Attach to mark connected
    hello = hub.ok(wire.Hello(agent="kim", supervisor="sup"), kim)
    claim = hub.ok(wire.Claim(agent="kim", supervisor="sup", epoch=hello.epoch), kim)
    samples[wire.Attach] = wire.Attach(turn=claim.turn)
    return {"alice": hub.admin, "kim": kim}, samples


@pytest.mark.parametrize("who", ["alice", "kim"])
def test_requests_classified_as_reads_change_nothing_stored(hub, who):
    """DESIGN §2: a request without an idempotency key must not change state; checked on a real
    store, for every request the wire classifies as a read."""
    tokens, samples = _world(hub)
    reads = [t for t, e in wire.EFFECTS.items() if e == "reads"]
    for kind in reads:
        before = _state(hub)
        reply = hub.send(samples[kind], tokens[who])
        if who == "alice":  # the admin may do every read
            assert reply.error is None, (kind.__name__, reply.error)
        assert _state(hub) == before, f"{kind.__name__} changed the store"


def _without(state: dict[str, list[tuple]], hub, drop: dict[str, tuple[str, ...]]):
    """``state`` with the columns ``drop`` names (table -> columns) left out."""
    out = dict(state)
    for table, columns in drop.items():
        cols = [c[1] for c in hub.store.db.execute(f"PRAGMA table_info({table})")]
        keep = [i for i, c in enumerate(cols) if c not in columns]
        out[table] = sorted((tuple(r[i] for i in keep) for r in state[table]), key=repr)
    return out


# what a "marks" request may change: the reader's delivery marks, and its turn's connection
MARKS = {"offsets": ("delivered", "updated_at"), "turns": ("connected_at",)}


def test_a_request_classified_as_marks_only_moves_marks_and_repeats_harmlessly(hub):
    """DESIGN §2: Read marks what it shows as delivered, Attach marks a turn's agent connected —
    the writes a retry may repeat without a key, since applying one again changes nothing more."""
    tokens, samples = _world(hub)
    for kind in (t for t, e in wire.EFFECTS.items() if e == "marks"):
        before = _state(hub)
        hub.ok(samples[kind], tokens["kim"])
        once = _state(hub)
        assert once != before, f"{kind.__name__} marks nothing: classify it as a read"
        assert _without(once, hub, MARKS) == _without(before, hub, MARKS), kind.__name__
        hub.ok(samples[kind], tokens["kim"])
        assert _without(_state(hub), hub, {"offsets": ("updated_at",)}) == \
            _without(once, hub, {"offsets": ("updated_at",)}), kind.__name__


def test_an_inbox_keeps_no_copy_of_what_it_showed(hub):
    """An inbox only marks what it shows as delivered, like a read: its answer (up to a whole
    batch of bodies) is not stored for a replay, even when a client sends a key with it, and
    the inbox asked again shows what is unacked then."""
    kim = hub.add_agent("kim", "#general")
    for i in range(3):
        hub.post("#general", f"note {i}")
    stored = "SELECT count(*) FROM requests"
    before = hub.store.db.execute(stored).get
    first = hub.ok(wire.Inbox(limit=2), kim, idem="inbox-1")
    again = hub.ok(wire.Inbox(limit=5), kim, idem="inbox-1")  # the same key: not replayed
    assert hub.store.db.execute(stored).get == before
    assert [m.body for m in first.messages] == ["note 0", "note 1"]
    assert [m.body for m in again.messages] == ["note 0", "note 1", "note 2"]


def test_requests_classified_as_writes_carry_a_key_from_the_client():
    """DESIGN §2: the client keys exactly the requests the wire classifies as writes."""
    for req in REQUESTS:
        assert wire.keyed(req) == (wire.EFFECTS[type(req)] == "writes")


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
