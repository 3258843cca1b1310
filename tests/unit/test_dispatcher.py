"""The dispatcher FSM, in process, through Handlers.handle with agent tokens (DESIGN §4)."""

from __future__ import annotations

import ast
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chatbox.broker import states
from chatbox.bus import wire
from tests.unit.conftest import Hub


def _waking(hub, agent: str, sup: str = "sup-1") -> wire.HelloResult:
    """Hello from ``sup`` (not pid-watched); the agent must then be WAKING with work pending."""
    res = hub.hello(agent, sup)
    assert res.state == "WAKING" and res.pending
    return res


def _busy(hub, agent: str, *bodies: str, sup: str = "sup-1", channel: str = "#general"):
    """Post ``bodies`` as alice, then hello and claim: the agent is BUSY with them."""
    posted = [hub.post(channel, b) for b in bodies]
    res = _waking(hub, agent, sup)
    claimed = hub.claim(agent, sup, res.epoch)
    assert [m.seq for m in claimed.messages] == [m.seq for m in posted]
    return posted, claimed


# --------------------------------------------------------------------------- waking


def test_a_post_wakes_a_sleeping_subscriber_after_the_request(hub):
    """DESIGN §4.1: ASLEEP -> WAKING and wake/A is published after the commit."""
    hub.add_agent("kim", "#general")
    assert hub.state("kim") == "ASLEEP"
    epoch = hub.agent("kim").epoch
    hub.post("#general", "hello kim")
    wakes = hub.wakes()
    assert [(w.agent, w.epoch) for w in wakes] == [("kim", epoch + 1)]
    topics = [t for t, ev in hub.events if isinstance(ev, wire.WakeEvent)]
    assert topics == [wire.wake_topic("kim")]
    info = hub.agent("kim")
    assert (info.state, info.epoch) == ("WAKING", epoch + 1)


def test_the_wake_follows_the_message_event_in_the_outbox(hub):
    """DESIGN §4.1: the wake names a committed message; the channel event comes first."""
    hub.add_agent("kim", "#general")
    hub.post("#general", "hello")
    kinds = [type(ev).__name__ for _, ev in hub.events]
    assert kinds.index("MessageEvent") < kinds.index("WakeEvent")


def test_the_author_is_never_woken_by_its_own_post(hub):
    """DESIGN §4.1: A ≠ author."""
    kim = hub.add_agent("kim", "#general")
    hub.add_agent("bob", "#general")
    hub.post("#general", "my own words", kim)
    assert hub.woken() == ["bob"]
    assert hub.state("kim") == "ASLEEP"


def test_an_unsubscribed_agent_is_not_woken(hub):
    """DESIGN §4.1: only agents subscribed to C."""
    hub.add_agent("kim", "#dispatch")
    hub.post("#general", "@kim look")
    assert hub.woken() == []


def test_wake_mentions_wakes_only_on_a_mention(hub):
    """DESIGN §3: wake=mentions = only @name mentions and replies to my posts."""
    hub.add_agent("kim", "#general", wake="mentions")
    hub.post("#general", "nothing for kim here")
    hub.post("#general", "kimi is someone else: @kimi")
    assert hub.woken() == [] and hub.state("kim") == "ASLEEP"
    hub.post("#general", "@kim please look")
    assert hub.woken() == ["kim"]


def test_wake_mentions_wakes_on_a_mention_ending_a_sentence(hub):
    """DESIGN §3: wake=mentions = @name mentions; a full stop after the name is still one."""
    hub.add_agent("kim", "#general", wake="mentions")
    hub.post("#general", "Please review the deploy, @kim.")
    assert hub.woken() == ["kim"]


def test_wake_mentions_wakes_on_a_reply_to_its_post(hub):
    """DESIGN §3: wake=mentions = only @name mentions and replies to my posts."""
    kim = hub.add_agent("kim", "#general", wake="mentions")
    post = hub.post("#general", "b", kim, kind="post", title="kim's question")
    other = hub.post("#general", "b", kind="post", title="alice's question")
    hub.post(None, "an answer to alice", in_reply_to=other.seq)
    assert hub.woken() == []
    hub.post(None, "an answer to kim", in_reply_to=post.seq)
    assert hub.woken() == ["kim"]


def test_a_mentions_batch_holds_only_what_is_due(hub):
    """DESIGN §4.2: the batch is what the wake mode says is for A."""
    hub.add_agent("kim", "#general", wake="mentions")
    hub.post("#general", "chatter")
    due = hub.post("#general", "@kim this one")
    claimed = hub.claim("kim", "sup-1", _waking(hub, "kim").epoch)
    assert [m.seq for m in claimed.messages] == [due.seq]


def test_wake_none_never_wakes(hub):
    """DESIGN §3: wake=none = read only."""
    kim = hub.add_agent("kim", "#general", wake="none")
    post = hub.post("#general", "b", kim, kind="post", title="t")
    hub.post("#general", "@kim hey")
    hub.post(None, "reply to kim", in_reply_to=post.seq)
    assert hub.woken() == []
    assert hub.state("kim") == "ASLEEP"
    res = hub.hello("kim", "sup-1")
    assert (res.state, res.pending) == ("ASLEEP", False)


def test_a_paused_agent_is_not_woken(hub):
    """DESIGN §4.1: A not paused."""
    hub.add_agent("kim", "#general")
    hub.ok(wire.SetPaused(name="kim", paused=True, reason="testing"))
    hub.post("#general", "@kim wake up")
    assert hub.woken() == []
    assert hub.state("kim") == "ASLEEP"
    assert hub.hello("kim", "sup-1").pending is False


def test_resuming_a_paused_agent_with_work_waiting_wakes_it(hub):
    """DESIGN §5: a human resumes a paused agent; what waited in the log is then due."""
    hub.add_agent("kim", "#general")
    hub.ok(wire.SetPaused(name="kim", paused=True))
    hub.post("#general", "waiting")
    hub.ok(wire.SetPaused(name="kim", paused=False))
    assert hub.woken() == ["kim"]
    assert hub.state("kim") == "WAKING"


def test_a_waking_agent_is_not_woken_again(hub):
    """DESIGN §4.1: if A is WAKING nothing is published; the message waits in the log."""
    hub.add_agent("kim", "#general")
    hub.post("#general", "one")
    epoch = hub.agent("kim").epoch
    hub.post("#general", "two")
    assert hub.woken() == []
    assert (hub.state("kim"), hub.agent("kim").epoch) == ("WAKING", epoch)


def test_a_busy_agent_is_not_woken_again(hub):
    """DESIGN §4.1: if A is BUSY nothing is published; the message waits in the log."""
    hub.add_agent("kim", "#general")
    _busy(hub, "kim", "one")
    hub.post("#general", "two")
    assert hub.woken() == []
    assert hub.state("kim") == "BUSY"


# --------------------------------------------------------------------------- hello and claim


def test_hello_registers_the_supervisor_and_reports_pending_work(hub):
    """DESIGN §4.6: the broker answers Hello with A's state and any pending work."""
    hub.add_agent("kim", "#general")
    res = hub.hello("kim", "sup-1")
    assert (res.state, res.pending, res.paused) == ("ASLEEP", False, False)
    assert hub.agent("kim").supervisor == "sup-1"
    hub.post("#general", "work")
    res = hub.hello("kim", "sup-1")
    assert (res.state, res.pending) == ("WAKING", True)
    assert res.epoch == hub.agent("kim").epoch


def test_hello_finds_work_that_arrived_while_no_supervisor_listened(hub):
    """DESIGN §4.6: a wake lost to a slow joiner costs nothing."""
    hub.add_agent("kim", "#general")
    hub.post("#general", "nobody heard the wake")
    res = hub.hello("kim", "sup-1")
    assert (res.state, res.pending) == ("WAKING", True)
    assert hub.claim("kim", "sup-1", res.epoch).turn is not None


def test_an_agent_may_not_be_the_supervisor_of_another(hub):
    """DESIGN §7: an agent acts only as itself."""
    hub.add_agent("kim", "#general")
    bob = hub.add_agent("bob", "#general")
    err = hub.err(wire.Hello(agent="kim", supervisor="evil"), bob)
    assert (err.code, err.field) == ("forbidden", "agent")


def test_a_claim_with_a_stale_epoch_is_refused(hub):
    """DESIGN §4.4: claims carry the epoch (a fencing token)."""
    hub.add_agent("kim", "#general")
    hub.post("#general", "work")
    res = _waking(hub, "kim")
    err = hub.err(wire.Claim(agent="kim", supervisor="sup-1", epoch=res.epoch - 1),
                  hub.tokens["kim"])
    assert (err.code, err.field) == ("conflict", "epoch")
    assert hub.state("kim") == "WAKING"


def test_a_claim_from_an_unregistered_supervisor_is_refused(hub):
    """DESIGN §4.4: exactly one supervisor per agent; it says hello first."""
    hub.add_agent("kim", "#general")
    hub.post("#general", "work")
    res = _waking(hub, "kim")
    err = hub.err(wire.Claim(agent="kim", supervisor="sup-2", epoch=res.epoch), hub.tokens["kim"])
    assert (err.code, err.field) == ("conflict", "supervisor")


def test_a_claim_retried_with_its_key_gets_its_batch_again_not_a_second_turn(hub):
    """DESIGN §2: a claim's retry is answered as the claim was, the batch included (rebuilt
    from its turn, redelivery marks with it), and opens no second turn; what is stored for
    the retry does not copy the batch's bodies."""
    hub.add_agent("kim", "#general")
    _busy(hub, "kim", "one", "two")
    hub.post("#general", "x" * 5000)
    res = hub.hello("kim", "sup-2")  # the first turn is lost: one and two come again
    payload = hub.envelope(wire.Claim(agent="kim", supervisor="sup-2", epoch=res.epoch),
                           hub.tokens["kim"], idem="claim-1")
    first = hub.handle_raw(payload).result
    again = hub.handle_raw(payload).result
    assert first.turn is not None and again == first
    assert [(m.body[:3], m.redelivered) for m in first.messages] == \
        [("one", True), ("two", True), ("xxx", False)]
    assert hub.state("kim") == "BUSY"
    stored = hub.store.db.execute("SELECT reply FROM requests WHERE key = 'claim-1'").get
    assert len(stored) < 200
    assert hub.store.db.execute("SELECT count(*) FROM turns WHERE agent = 'kim'").get == 2


def test_a_claim_returns_the_unacked_due_messages_oldest_first_and_moves_to_busy(hub):
    """DESIGN §4.2: WAKING -> BUSY; the batch is every unacked message, oldest first."""
    hub.add_agent("kim", "#general", "#dispatch")
    kim = hub.tokens["kim"]
    before = hub.post("#general", "acked already")
    hub.ok(wire.Inbox(), kim)
    hub.ok(wire.Ack(channel="#general", up_to=before.seq), kim)
    a = hub.post("#general", "a")
    hub.post("#general", "kim's own", kim)
    b = hub.post("#dispatch", "b")
    c = hub.post("#general", "c")
    res = _waking(hub, "kim")
    claimed = hub.claim("kim", "sup-1", res.epoch)
    assert [m.seq for m in claimed.messages] == [a.seq, b.seq, c.seq]
    assert not any(m.redelivered for m in claimed.messages)
    info = hub.agent("kim")
    assert (info.state, info.current_turn, info.epoch) == ("BUSY", claimed.turn, claimed.epoch)
    assert claimed.epoch > res.epoch


def test_a_claim_caps_the_batch_at_max_batch(hub):
    """DESIGN §4.2: the batch is oldest first, up to a cap; the rest waits for the next turn."""
    hub.limits.max_batch = 2
    hub.add_agent("kim", "#general")
    posted = [hub.post("#general", f"m{i}") for i in range(3)]
    claimed = hub.claim("kim", "sup-1", _waking(hub, "kim").epoch)
    assert [m.seq for m in claimed.messages] == [m.seq for m in posted[:2]]
    rep = hub.report("kim", "sup-1", claimed)
    assert rep.state == "WAKING"
    claimed = hub.claim("kim", "sup-1", rep.epoch)
    assert [m.seq for m in claimed.messages] == [posted[2].seq]


def test_an_empty_claim_returns_the_agent_to_asleep(hub):
    """DESIGN §4.2: an empty batch returns A to ASLEEP."""
    hub.add_agent("kim", "#general")
    hub.post("#general", "work")
    res = _waking(hub, "kim")
    hub.ok(wire.Inbox(), hub.tokens["kim"])
    hub.ok(wire.Ack(channel="#general", up_to=hub.read("#general")[-1].seq), hub.tokens["kim"])
    claimed = hub.claim("kim", "sup-1", res.epoch)
    assert (claimed.turn, claimed.messages) == (None, [])
    assert hub.state("kim") == "ASLEEP"


# --------------------------------------------------------------------------- reports


def test_a_report_with_a_stale_epoch_or_turn_is_refused(hub):
    """DESIGN §4.4: a stale report is refused."""
    hub.add_agent("kim", "#general")
    _, claimed = _busy(hub, "kim", "work")
    kim = hub.tokens["kim"]
    for turn, epoch in ((claimed.turn, claimed.epoch - 1), (claimed.turn + 1, claimed.epoch)):
        err = hub.err(wire.TurnReport(agent="kim", supervisor="sup-1", turn=turn, epoch=epoch,
                                      outcome="ok"), kim)
        assert err.code == "conflict"
    assert hub.state("kim") == "BUSY"
    assert hub.agent("kim").offsets["#general"] < claimed.messages[0].seq


def test_a_report_acks_exactly_the_batch_and_returns_to_asleep(hub):
    """DESIGN §4.3: the broker acks exactly the delivered batch and moves BUSY -> ASLEEP."""
    hub.add_agent("kim", "#general", "#dispatch")
    hub.post("#general", "g1")
    hub.post("#dispatch", "d1")
    g2 = hub.post("#general", "g2")
    res = _waking(hub, "kim")
    claimed = hub.claim("kim", "sup-1", res.epoch)
    d = [m for m in claimed.messages if m.channel == "#dispatch"][-1]
    rep = hub.report("kim", "sup-1", claimed)
    assert rep.acked == {"#general": g2.seq, "#dispatch": d.seq}
    assert rep.state == "ASLEEP" and hub.state("kim") == "ASLEEP"
    assert hub.agent("kim").offsets == {"#general": g2.seq, "#dispatch": d.seq}
    assert hub.agent("kim").last_turn.outcome == "ok"
    assert hub.wakes() == []


def test_messages_that_arrive_during_a_turn_stay_unacked_and_cause_one_next_turn(hub):
    """DESIGN §4.3: never ack past the batch; five arrivals cause exactly one next turn."""
    hub.add_agent("kim", "#general")
    posted, claimed = _busy(hub, "kim", "first")
    during = [hub.post("#general", f"during {i}") for i in range(5)]
    assert hub.woken() == []
    rep = hub.report("kim", "sup-1", claimed)
    assert rep.acked == {"#general": posted[0].seq}
    assert rep.state == "WAKING"
    assert [(w.agent, w.epoch) for w in hub.wakes()] == [("kim", rep.epoch)]
    assert hub.agent("kim").offsets["#general"] == posted[0].seq
    nxt = hub.claim("kim", "sup-1", rep.epoch)
    assert [m.seq for m in nxt.messages] == [m.seq for m in during]
    assert hub.report("kim", "sup-1", nxt).state == "ASLEEP"


def test_a_report_reply_is_stored_in_the_thread_of_the_newest_message_one_hop_further(hub):
    """DESIGN §5/§6: the reply joins the newest batch message's thread at trigger hop + 1."""
    hub.add_agent("kim", "#general")
    hub.post("#general", "older")
    post = hub.post("#general", "b", kind="post", title="question")
    reply_in_thread = hub.post(None, "context", in_reply_to=post.seq)
    res = _waking(hub, "kim")
    claimed = hub.claim("kim", "sup-1", res.epoch)
    assert claimed.messages[-1].seq == reply_in_thread.seq
    rep = hub.report("kim", "sup-1", claimed, reply="ack 1 2 3")
    msg = rep.reply
    assert msg is not None
    assert (msg.author, msg.kind, msg.in_reply_to, msg.channel) == ("kim", "reply", post.seq,
                                                                    "#general")
    assert (msg.chain, msg.hop, msg.turn) == (reply_in_thread.chain, reply_in_thread.hop + 1,
                                              claimed.turn)
    assert msg.seq in [r.seq for r in hub.ok(wire.GetPost(seq=post.seq)).replies]


def test_a_report_reply_does_not_wake_its_author(hub):
    """DESIGN §4.1: A ≠ author, so a turn's own reply never causes the next turn."""
    hub.add_agent("kim", "#general")
    _, claimed = _busy(hub, "kim", "question")
    rep = hub.report("kim", "sup-1", claimed, reply="kim answers")
    assert rep.reply is not None
    assert (rep.state, hub.woken()) == ("ASLEEP", [])


def test_a_report_reply_wakes_a_sleeping_peer(hub):
    """DESIGN §4.1: a turn's reply wakes every sleeping subscriber but its author."""
    hub.add_agent("kim", "#general")
    hub.add_agent("bob", "#dispatch")
    hub.ok(wire.Subscribe(channel="#general", agent="bob"))
    _, claimed = _busy(hub, "kim", "question")
    bob = hub.agent("bob")
    assert bob.state == "WAKING"  # woken by alice's question too: finish that first
    bob_claim = hub.claim("bob", "sup-b", hub.hello("bob", "sup-b").epoch)
    assert hub.report("bob", "sup-b", bob_claim).state == "ASLEEP"
    rep = hub.report("kim", "sup-1", claimed, reply="kim answers")
    assert hub.woken() == ["bob"]
    assert hub.state("kim") == "ASLEEP"
    nxt = hub.claim("bob", "sup-b", hub.agent("bob").epoch)
    assert [m.seq for m in nxt.messages] == [rep.reply.seq]
    assert nxt.messages[0].hop == 1


def test_a_long_multibyte_reply_does_not_block_the_report(hub):
    """DESIGN §4.3: the report acks the batch and records the turn; the reply is bounded (§3)."""
    hub.add_agent("kim", "#general")
    _, claimed = _busy(hub, "kim", "write me an essay")
    rep = hub.report("kim", "sup-1", claimed, reply="é" * 40_000)
    assert rep.state == "ASLEEP"
    assert len(rep.reply.body.encode()) <= 64 * 1024


def test_a_reply_with_a_nul_does_not_block_the_report(hub):
    """DESIGN §4.3: the report acks the batch and records the turn whatever the reply holds."""
    hub.add_agent("kim", "#general")
    _, claimed = _busy(hub, "kim", "question")
    rep = hub.report("kim", "sup-1", claimed, reply="binary\x00junk")
    assert rep.state == "ASLEEP"
    assert "\x00" not in rep.reply.body


def test_only_the_agents_own_token_may_supervise_it(hub):
    """DESIGN §7: an agent acts only as itself; its turns' replies are its own, never an admin's."""
    hub.add_agent("kim", "#general")
    hub.post("#general", "question")
    for req in (wire.Hello(agent="kim", supervisor="admin-sup"),
                wire.Claim(agent="kim", supervisor="admin-sup", epoch=1),
                wire.TurnReport(agent="kim", supervisor="admin-sup", turn=1, epoch=1,
                                outcome="ok", reply="answer")):
        err = hub.err(req)
        assert (err.code, err.field) == ("forbidden", "agent")
    assert hub.state("kim") == "WAKING"


# --------------------------------------------------------------------------- supervisors


def test_a_second_supervisor_is_refused_while_the_first_is_alive(hub):
    """DESIGN §4.4: a second supervisor for the same agent is refused."""
    hub.add_agent("kim", "#general")
    hub.hello("kim", "sup-1", live=True)
    err = hub.err(wire.Hello(agent="kim", supervisor="sup-2", pid=12345, host="elsewhere"),
                  hub.tokens["kim"])
    assert (err.code, err.field) == ("conflict", "agent")
    assert hub.agent("kim").supervisor == "sup-1"


def test_the_same_supervisor_may_say_hello_again(hub):
    """DESIGN §4.6: a supervisor says Hello again after a reconnect."""
    hub.add_agent("kim", "#general")
    hub.hello("kim", "sup-1", live=True)
    assert hub.hello("kim", "sup-1", live=True).state == "ASLEEP"


def test_a_supervisor_that_exits_mid_turn_loses_its_turn(hub):
    """DESIGN §4.5: a supervisor that dies mid-turn is noticed (pidfd) and its turn is lost."""
    hub.add_agent("kim", "#general")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        hub.post("#general", "work")
        res = hub.hello("kim", "sup-child", pid=child.pid, host=socket.gethostname())
        claimed = hub.claim("kim", "sup-child", res.epoch)
        [fd] = hub.dispatcher.liveness.fds()
    finally:
        child.stdin.close()
        child.wait(10)
    assert select.select([fd], [], [], 10)[0] == [fd]
    with hub.store.write():
        events = hub.handlers.on_supervisor_exit(fd, hub.now())
    info = hub.agent("kim")
    assert (info.state, info.supervisor, info.last_turn.outcome) == ("ASLEEP", None, "lost")
    assert info.last_turn.id == claimed.turn
    assert any(isinstance(ev, wire.AgentEvent) and ev.state == "ASLEEP" for _, ev in events)
    res = hub.hello("kim", "sup-new")
    assert res.pending
    assert all(m.redelivered for m in hub.claim("kim", "sup-new", res.epoch).messages)


def test_a_fresh_hello_while_busy_loses_the_turn_and_redelivers(hub):
    """DESIGN §4.5: the turn is recorded lost, A returns to ASLEEP, its messages are redelivered."""
    hub.add_agent("kim", "#general")
    posted, claimed = _busy(hub, "kim", "one", "two")
    res = hub.hello("kim", "sup-2")
    info = hub.agent("kim")
    assert info.last_turn.id == claimed.turn and info.last_turn.outcome == "lost"
    assert (res.state, res.pending) == ("WAKING", True)  # ASLEEP, then woken by pending work
    assert info.offsets["#general"] < posted[0].seq
    again = hub.claim("kim", "sup-2", res.epoch)
    assert [m.seq for m in again.messages] == [m.seq for m in posted]
    assert all(m.redelivered for m in again.messages)
    late = hub.err(wire.TurnReport(agent="kim", supervisor="sup-1", turn=claimed.turn,
                                   epoch=claimed.epoch, outcome="ok"), hub.tokens["kim"])
    assert late.code == "conflict"
    rep = hub.report("kim", "sup-2", again)
    assert rep.acked == {"#general": posted[-1].seq}


def test_a_redelivered_flag_clears_once_a_turn_reports(hub):
    """DESIGN §4.5: only messages of a lost turn are marked redelivered."""
    hub.add_agent("kim", "#general")
    _busy(hub, "kim", "one")
    res = hub.hello("kim", "sup-2")
    hub.report("kim", "sup-2", hub.claim("kim", "sup-2", res.epoch))
    hub.post("#general", "two")
    claimed = hub.claim("kim", "sup-2", hub.agent("kim").epoch)
    assert [m.redelivered for m in claimed.messages] == [False]


def test_a_post_carrying_a_turn_not_in_flight_is_refused(hub):
    """DESIGN §4.5: anything a lost turn still sends — a post carrying its turn id — is refused."""
    hub.add_agent("kim", "#general")
    kim = hub.tokens["kim"]
    _, claimed = _busy(hub, "kim", "one")
    in_turn = hub.post("#general", "from inside the turn", kim, turn=claimed.turn)
    assert (in_turn.hop, in_turn.turn) == (1, claimed.turn)
    hub.hello("kim", "sup-2")  # the turn is lost
    err = hub.err(wire.Post(channel="#general", body="too late", turn=claimed.turn), kim)
    assert (err.code, err.field) == ("conflict", "turn")
    err = hub.err(wire.Post(channel="#general", body="made up", turn=9999), kim)
    assert (err.code, err.field) == ("conflict", "turn")


def test_a_post_inside_a_turn_continues_the_triggers_chain(hub):
    """DESIGN §5: a post made inside a turn gets the chain of the turn's trigger and hop + 1."""
    hub.add_agent("kim", "#general")
    posted, claimed = _busy(hub, "kim", "trigger")
    msg = hub.post("#dispatch", "report", hub.tokens["kim"], turn=claimed.turn)
    assert (msg.chain, msg.hop) == (posted[0].chain, posted[0].hop + 1)


# --------------------------------------------------------------------------- property


class DispatchMachine(RuleBasedStateMachine):
    """Random interleavings of posts, hellos (supervisor restarts), claims, reports and broker
    restarts (DESIGN §9)."""

    AGENTS = {"kim": ("#general",), "bob": ("#general", "#dispatch"), "mia": ("#general",)}
    WAKE = {"kim": "all", "bob": "all", "mia": "mentions"}

    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="cbx-prop")
        self.hub = Hub(self.root)
        self.hub.limits.max_turns_per_hour = 100_000
        self.hub.limits.repeat_threshold = 100_000
        self.hub.limits.max_batch = 3
        self.hub.limits.max_redeliveries = 100_000
        for name, chans in self.AGENTS.items():
            self.hub.add_agent(name, *chans, wake=self.WAKE[name])
        self.sup: dict[str, str | None] = dict.fromkeys(self.AGENTS)
        self.claims: dict[str, wire.ClaimResult | None] = dict.fromkeys(self.AGENTS)
        self.stale: list[tuple[str, str, int, int]] = []
        self.handled: dict[str, list[int]] = {a: [] for a in self.AGENTS}
        self.restarts = 0

    @rule(author=st.sampled_from(["alice", "kim", "bob", "mia"]),
          channel=st.sampled_from(["#general", "#dispatch"]), mention=st.booleans())
    def post(self, author, channel, mention):
        self.hub.post(channel, f"from {author}" + (" @mia" if mention else ""),
                      self.hub.tokens[author])

    @rule(agent=st.sampled_from(sorted(AGENTS)), paused=st.booleans())
    def pause_or_resume(self, agent, paused):
        self.hub.ok(wire.SetPaused(name=agent, paused=paused))

    @rule(agent=st.sampled_from(sorted(AGENTS)))
    def supervisor_restarts(self, agent):
        """A fresh supervisor says hello (the old one died, unnoticed until now)."""
        self.restarts += 1
        if self.claims[agent] is not None:
            c = self.claims[agent]
            self.stale.append((agent, self.sup[agent], c.turn, c.epoch))
            self.claims[agent] = None
        self.sup[agent] = f"sup-{self.restarts}"
        self.hub.hello(agent, self.sup[agent])

    @rule()
    def broker_restarts(self):
        """The broker restarts: only the database survives; supervisors keep their turns."""
        self.hub.restart_broker()
        for agent, sup in self.sup.items():
            if sup is not None:  # each reconnected supervisor says hello again, with its turn
                c = self.claims[agent]
                self.hub.ok(wire.Hello(agent=agent, supervisor=sup, turn=c and c.turn,
                                       epoch=c and c.epoch), self.hub.tokens[agent])

    @rule(agent=st.sampled_from(sorted(AGENTS)))
    def claim(self, agent):
        info = self.hub.agent(agent)
        if info.state != "WAKING" or self.sup[agent] is None:
            return
        c = self.hub.claim(agent, self.sup[agent], info.epoch)
        if c.turn is not None:
            assert c.messages, "a turn never opens on an empty batch"
            self.claims[agent] = c

    @rule(agent=st.sampled_from(sorted(AGENTS)), reply=st.booleans(), failed=st.booleans())
    def report(self, agent, reply, failed):
        """A turn ends ok (its batch is handled) or failed (its batch must come again)."""
        c = self.claims[agent]
        if c is None:
            return
        self.hub.report(agent, self.sup[agent], c, output=f"turn {c.turn}",
                        outcome="failed" if failed else "ok",
                        reply=f"ack {c.turn}" if reply and not failed else None)
        if not failed:
            self.handled[agent].extend(m.seq for m in c.messages)
        self.stale.append((agent, self.sup[agent], c.turn, c.epoch))
        self.claims[agent] = None

    @rule(data=st.data())
    def stale_report_is_refused(self, data):
        if not self.stale:
            return
        agent, sup, turn, epoch = data.draw(st.sampled_from(self.stale))
        err = self.hub.err(wire.TurnReport(agent=agent, supervisor=sup, turn=turn, epoch=epoch,
                                           outcome="ok", reply="late"), self.hub.tokens[agent])
        assert err.code == "conflict"

    @invariant()
    def at_most_one_turn_in_flight_per_agent(self):
        db = self.hub.store.db
        for agent in self.AGENTS:
            open_turns = [t for (t,) in db.execute(
                "SELECT id FROM turns WHERE agent = ? AND ended_at IS NULL", (agent,))]
            state, current = db.execute("SELECT state, current_turn FROM agent_state "
                                        "WHERE agent = ?", (agent,)).fetchone()
            assert len(open_turns) <= 1
            assert (state == "BUSY") == bool(open_turns)
            if open_turns:
                assert current == open_turns[0]

    @invariant()
    def every_transition_written_is_in_the_table(self):
        rows = self.hub.store.db.execute("SELECT from_state, to_state FROM transitions")
        assert {tuple(r) for r in rows} <= set(states.TRANSITIONS)

    @invariant()
    def nothing_is_acked_past_what_was_delivered(self):
        for who, ch, acked, delivered in self.hub.store.db.execute(
                "SELECT principal, channel, acked, delivered FROM offsets"):
            assert acked <= delivered, (who, ch, acked, delivered)

    @invariant()
    def no_message_is_handled_twice(self):
        for agent, seqs in self.handled.items():
            assert len(seqs) == len(set(seqs)), agent

    def teardown(self):
        try:
            self._drain_and_check()
        finally:
            self.hub.close()
            shutil.rmtree(self.root, ignore_errors=True)

    def _drain_and_check(self):
        """Let every agent finish: each message of another in its channels was handled once."""
        hub = self.hub
        for agent, chans in self.AGENTS.items():
            hub.ok(wire.SetPaused(name=agent, paused=False))
            self.sup[agent] = f"drain-{agent}"
            res = hub.hello(agent, self.sup[agent])
            for _ in range(100):
                if res.state != "WAKING":
                    break
                c = hub.claim(agent, self.sup[agent], res.epoch)
                if c.turn is None:
                    break
                rep = hub.report(agent, self.sup[agent], c, output=f"turn {c.turn}")
                self.handled[agent].extend(m.seq for m in c.messages)
                res = wire.HelloResult(state=rep.state, epoch=rep.epoch, paused=False,
                                       pending=rep.state == "WAKING")
            assert hub.state(agent) == "ASLEEP"
            due = "" if self.WAKE[agent] == "all" else (
                " AND (instr(' ' || m.mentions || ' ', ' ' || ?1 || ' ') OR EXISTS (SELECT 1 "
                "FROM messages p WHERE p.seq = m.in_reply_to AND p.author = ?1))")
            expected = [seq for (seq,) in hub.store.db.execute(
                "SELECT seq FROM messages m WHERE author != ?1 AND channel IN (%s)%s ORDER BY seq"
                % (",".join("?" * len(chans)), due), (agent, *chans))]
            assert sorted(set(self.handled[agent])) == expected, agent
            assert len(self.handled[agent]) == len(set(self.handled[agent])), agent


DispatchMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25,
                                             deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
test_dispatcher_state_machine = DispatchMachine.TestCase


def test_a_message_over_the_hop_budget_is_escalated_even_while_its_reader_is_busy(hub):
    """DESIGN §5: a message at max_hops wakes nobody and produces one escalation for its chain."""
    hub.limits.max_hops = 1
    hub.add_agent("kim", "#general")
    hub.add_agent("bob", "#general")
    _, claim = _busy(hub, "kim", "start a chain")
    assert hub.state("bob") == "WAKING"  # bob is not asleep: no wake would go to anyone
    hub.report("kim", "sup-1", claim, output="x", reply="over the budget")
    alerts = [m for m in hub.ok(wire.Read(channel="#alerts")).messages
              if m.kind == "escalation"]
    assert len(alerts) == 1 and "hop" in alerts[0].title


# --------------------------------------------------------------------------- the machine itself


def test_the_states_module_is_a_leaf():
    """STYLE "Leaf modules for states": broker/states.py imports nothing of ours."""
    tree = ast.parse(Path(states.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.split(".")[0] in ("chatbox", "broker")}


def test_every_change_of_state_pause_and_resume_is_one_transition_row(hub):
    """STYLE "One writer for each state machine": pauses and resumes are recorded like moves."""
    hub.add_agent("kim", "#general")
    hub.ok(wire.SetPaused(name="kim", paused=True, reason="lunch"))
    hub.post("#general", "waiting")
    hub.ok(wire.SetPaused(name="kim", paused=False))
    rows = hub.store.db.execute("SELECT from_state, to_state, cause FROM transitions "
                                "WHERE agent = 'kim' ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("ASLEEP", "ASLEEP", "paused by alice"),
                                        ("ASLEEP", "ASLEEP", "resumed by alice"),
                                        ("ASLEEP", "WAKING", "resumed by alice")]
    assert hub.woken() == ["kim"]


def test_a_move_not_in_the_table_is_refused(hub):
    """DESIGN §4: only the transitions of the table happen; ASLEEP -> BUSY is none of them."""
    from chatbox.broker import fsm
    from chatbox.broker.context import Ctx, Principal
    from chatbox.broker.errors import Conflict

    hub.add_agent("kim", "#general")
    with hub.store.write():
        ctx = Ctx(hub.store.db, Principal("broker", "admin"), hub.now())
        with pytest.raises(Conflict):
            fsm.transition(ctx, "kim", "BUSY", "no claim")
        with pytest.raises(Conflict):
            fsm.transition(ctx, "kim", "ASLEEP", "standing still is no move")
    assert hub.state("kim") == "ASLEEP"


def _lose(hub, agent: str, n: int) -> None:
    """Post, claim, and lose the turn to a fresh Hello, ``n`` times."""
    for i in range(n):
        hub.post("#general", f"work {i}")
        res = hub.hello(agent, f"sup-{i}")
        if res.state == "WAKING":
            assert hub.claim(agent, f"sup-{i}", res.epoch).turn is not None
    hub.hello(agent, "sup-last")


def test_lost_turns_count_toward_the_failure_circuit(hub):
    """DESIGN §5 / issue 12: a lost turn is a failed turn; max_consecutive_failures of them pause
    the agent and escalate (before, four lost turns left the circuit closed)."""
    hub.limits.max_consecutive_failures = 3
    hub.add_agent("kim", "#general")
    _lose(hub, "kim", 3)
    info = hub.agent("kim")
    assert info.paused and "failure_circuit" in info.paused_reason
    assert info.last_turn.outcome == "lost"
    alerts = [m for m in hub.read("#alerts") if m.kind == "escalation"]
    assert len(alerts) == 1 and "failure circuit" in alerts[0].title
    assert "lost, no exit code" in alerts[0].body


def test_a_turn_that_reports_ok_ends_the_run_of_lost_turns(hub):
    """DESIGN §5: failures count in a row; an ok turn between them closes the run."""
    hub.limits.max_consecutive_failures = 3
    hub.add_agent("kim", "#general")
    _lose(hub, "kim", 2)
    res = hub.hello("kim", "sup-ok")
    hub.report("kim", "sup-ok", hub.claim("kim", "sup-ok", res.epoch))
    _lose(hub, "kim", 2)
    assert not hub.agent("kim").paused


def _turns(hub, agent: str, n: int, output: str) -> None:
    """``n`` turns of ``agent`` one after the other, each on one new post, all reporting ok."""
    for i in range(n):
        hub.post("#general", f"work {i}")
        claimed = hub.claim(agent, "sup-1", hub.agent(agent).epoch)
        assert claimed.turn is not None, f"turn {i + 1} of {n} was refused"
        hub.report(agent, "sup-1", claimed, output=output.format(i=i))


@pytest.mark.parametrize("budget", [3, 70])
def test_the_turn_budget_refuses_the_turn_past_it_however_large(hub, budget):
    """DESIGN §5: at most max_turns_per_hour turns an hour (the broker once showed the
    guardrails only the last 64 turns, so a budget over 64 never refused one)."""
    hub.limits.max_turns_per_hour = budget
    hub.limits.repeat_threshold = 1000
    hub.add_agent("kim", "#general")
    hub.hello("kim", "sup-1")
    _turns(hub, "kim", budget, "handled {i}")
    hub.post("#general", "one too many")
    assert hub.claim("kim", "sup-1", hub.agent("kim").epoch).turn is None
    info = hub.agent("kim")
    assert info.paused and "turn_budget" in info.paused_reason


@pytest.mark.parametrize("threshold", [3, 70])
def test_a_livelock_trips_at_its_threshold_however_large(hub, threshold):
    """DESIGN §5: repeat_threshold near-duplicate outputs in a row pause the agent, not one
    fewer (the livelock detector too was once shown only the last 64 outputs)."""
    hub.limits.repeat_threshold = threshold
    hub.limits.max_turns_per_hour = 1000
    hub.add_agent("kim", "#general")
    hub.hello("kim", "sup-1")
    _turns(hub, "kim", threshold - 1, "the same words")
    assert not hub.agent("kim").paused
    _turns(hub, "kim", 1, "the same words")
    info = hub.agent("kim")
    assert info.paused and "livelock" in info.paused_reason


def test_one_policy_per_agent_rebuilt_when_its_limits_change(hub):
    """Issue 12: the guardrails are built once per agent, not per claim, and follow its config."""
    hub.add_agent("kim", "#general")
    d = hub.dispatcher
    first = d.policy("kim")
    _, claimed = _busy(hub, "kim", "one")
    hub.report("kim", "sup-1", claimed)
    assert d.policy("kim") is first
    hub.limits.max_hops = 1
    second = d.policy("kim")
    assert second is not first and second.limits.max_hops == 1
    assert d.policy("kim") is second
    hub.add_agent("bob", "#general")
    _, claimed = _busy(hub, "bob", "two")
    rep = hub.report("bob", "sup-1", claimed, reply="at hop 1")
    assert rep.reply.hop == 1
    [alert] = [m for m in hub.read("#alerts") if m.kind == "escalation"]
    assert "hop budget" in alert.title and "agent: kim" in alert.body  # kim's new budget


def test_the_post_path_takes_its_hops_from_the_policy(hub):
    """DESIGN §5: a post outside a turn starts a chain at hop 0; one inside a turn continues the
    trigger's chain at next_hop, and is refused once the turn is over."""
    from chatbox.broker.context import Ctx, Principal
    from chatbox.broker.errors import Conflict

    hub.add_agent("kim", "#general")
    posted, claimed = _busy(hub, "kim", "trigger")
    with hub.store.write():
        ctx = Ctx(hub.store.db, Principal("kim", "agent"), hub.now())
        inside = hub.dispatcher.post(ctx, wire.Post(channel="#dispatch", body="in the turn",
                                                    turn=claimed.turn))
        outside = hub.dispatcher.post(ctx, wire.Post(channel="#dispatch", body="on my own"))
    assert (inside.chain, inside.hop, inside.turn) == (posted[0].chain, 1, claimed.turn)
    assert (outside.chain, outside.hop) == (outside.seq, 0)
    hub.report("kim", "sup-1", claimed)
    with hub.store.write():
        ctx = Ctx(hub.store.db, Principal("kim", "agent"), hub.now())
        with pytest.raises(Conflict):
            hub.dispatcher.post(ctx, wire.Post(channel="#general", body="late",
                                               turn=claimed.turn))


# --------------------------------------------------------------------------- unhandled batches


def _alerts(hub, guardrail: str) -> list[wire.Message]:
    return [m for m in hub.read("#alerts")
            if m.kind == "escalation" and guardrail.replace("_", " ") in (m.title or "")]


@pytest.mark.parametrize("outcome", ["failed", "timeout"])
def test_a_failed_turn_acks_nothing_and_its_batch_comes_again_marked_redelivered(hub, outcome):
    """DESIGN §4.3 / issue 11 item 6: a failed or timed-out turn acks nothing; its messages are
    due again at once, marked redelivered, in one next turn with what arrived meanwhile."""
    hub.add_agent("kim", "#general")
    posted, claimed = _busy(hub, "kim", "one", "two")
    during = hub.post("#general", "three")
    rep = hub.report("kim", "sup-1", claimed, outcome=outcome, exit_code=3)
    assert (rep.acked, rep.state, hub.woken()) == ({}, "WAKING", ["kim"])
    assert hub.agent("kim").offsets["#general"] < posted[0].seq
    again = hub.claim("kim", "sup-1", rep.epoch)
    assert [(m.seq, m.redelivered) for m in again.messages] == [
        (posted[0].seq, True), (posted[1].seq, True), (during.seq, False)]
    rep = hub.report("kim", "sup-1", again, reply="handled")
    assert rep.acked == {"#general": during.seq} and rep.state == "ASLEEP"


def test_the_failure_circuit_bounds_the_retries_and_a_resume_finds_the_batch_due(hub):
    """Issue 11 item 6: failed turns retry their batch until the circuit opens; a human who
    resumes the agent finds every message it never handled still due, and it is woken."""
    hub.limits.max_consecutive_failures = 3
    hub.add_agent("kim", "#general")
    posted, claimed = _busy(hub, "kim", "one")
    for n in range(3):
        rep = hub.report("kim", "sup-1", claimed, outcome="failed", exit_code=3)
        if n < 2:
            assert rep.state == "WAKING"
            claimed = hub.claim("kim", "sup-1", rep.epoch)
            assert [m.seq for m in claimed.messages] == [posted[0].seq]
    info = hub.agent("kim")
    assert (rep.state, info.paused) == ("ASLEEP", True)
    assert "failure_circuit" in info.paused_reason
    assert info.offsets["#general"] < posted[0].seq
    assert len(_alerts(hub, "failure_circuit")) == 1
    hub.ok(wire.SetPaused(name="kim", paused=False))
    assert hub.woken() == ["kim"] and hub.state("kim") == "WAKING"
    again = hub.claim("kim", "sup-1", hub.agent("kim").epoch)
    assert [(m.seq, m.redelivered) for m in again.messages] == [(posted[0].seq, True)]
    assert hub.report("kim", "sup-1", again).acked == {"#general": posted[0].seq}


def test_a_lost_turn_acks_nothing_and_counts_as_a_failure(hub):
    """Issue 11 item 6: a lost turn leaves its batch due and counts toward the circuit."""
    hub.limits.max_consecutive_failures = 2
    hub.add_agent("kim", "#general")
    posted, claimed = _busy(hub, "kim", "one")
    rep = hub.report("kim", "sup-1", claimed, outcome="failed")
    hub.claim("kim", "sup-1", rep.epoch)
    res = hub.hello("kim", "sup-2")  # the second turn is lost: two failures in a row
    info = hub.agent("kim")
    assert info.last_turn.outcome == "lost" and info.paused and not res.pending
    assert info.offsets["#general"] < posted[0].seq


def test_a_message_no_turn_handles_is_escalated_after_max_redeliveries(hub):
    """DESIGN §4.5: redelivered more than max_redeliveries times, a message is escalated and
    skipped instead of retried, and the agent goes back to sleep."""
    hub.limits.max_consecutive_failures = 100
    hub.limits.max_redeliveries = 1
    hub.add_agent("kim", "#general")
    posted, claimed = _busy(hub, "kim", "poison")
    for _ in range(2):
        rep = hub.report("kim", "sup-1", claimed, outcome="failed")
        assert rep.state == "WAKING"
        claimed = hub.claim("kim", "sup-1", rep.epoch)
    assert (claimed.turn, hub.state("kim")) == (None, "ASLEEP")
    [alert] = _alerts(hub, "redelivery")
    assert f"#{posted[0].seq}" in alert.body
    assert hub.agent("kim").offsets["#general"] == posted[0].seq


@pytest.mark.parametrize("output,engine_error,acks", [
    ("I give up.", False, True),     # the agent's deliberate give-up: handled, acked
    ("error: not logged in", True, False),  # the engine's error result: not handled
    ("the same words", False, False),  # a livelock: its reply is dropped, the batch stays due
])
def test_only_ok_and_a_deliberate_give_up_ack_the_batch(hub, output, engine_error, acks):
    """Issue 11 item 6: only ok and a deliberate give-up ack; a guardrail's stop leaves it due."""
    hub.limits.repeat_threshold = 2
    hub.add_agent("kim", "#general")
    if output == "the same words":  # one earlier identical output makes this turn a livelock
        _, first = _busy(hub, "kim", "earlier")
        hub.report("kim", "sup-1", first, output=output)
    posted, claimed = _busy(hub, "kim", "work")
    rep = hub.report("kim", "sup-1", claimed, output=output, engine_error=engine_error,
                     reply=output)
    info = hub.agent("kim")
    assert info.paused and rep.reply is None
    assert (info.offsets["#general"] == posted[0].seq) is acks
    hub.ok(wire.SetPaused(name="kim", paused=False))
    assert hub.woken() == ([] if acks else ["kim"])
