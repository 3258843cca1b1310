"""Bounded autonomy with a real fleet: stub agents built to misbehave, stopped and escalated."""

from __future__ import annotations

import time

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Refused
from tests.fleet import Fleet, wait_for


def config(limits: str = "", **agents: str) -> str:
    out = ["[limits]", "kill_grace_seconds = 0.5", limits, ""]
    for name, behaviour in agents.items():
        out += [f"[agents.{name}]", 'engine = "stub"', f'stub = {{ behaviour = "{behaviour}" }}',
                ""]
    return "\n".join(out)


def alerts(fleet: Fleet, guardrail: str | None = None) -> list[wire.Message]:
    """Escalations in #alerts (optionally of one guardrail, named in the title)."""
    return [m for m in fleet.read("#alerts") if m.kind == "escalation"
            and (guardrail is None or guardrail.replace("_", " ") in (m.title or ""))]


def turn_count(fleet: Fleet, agent: str) -> int:
    return sum(1 for m in fleet.read("#general") if m.author == agent)


def stays(predicate, seconds: float = 1.0) -> bool:
    """True if ``predicate`` holds throughout a bounded observation window."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        wait_for(lambda: True, timeout=0.05)
    return True


def test_two_agents_answering_each_other_stop_within_the_hop_budget(fleet):
    """DESIGN §5 hop budget: a ping-pong stops at max_hops with exactly one escalation."""
    fleet.write_config(config("max_hops = 4", ping="reply", pong="reply"))
    fleet.add_agent("ping", "#general")
    fleet.add_agent("pong", "#general")
    fleet.start_supervisor("ping")
    fleet.start_supervisor("pong")
    start = fleet.post("#general", "ping, pong: talk to each other")
    wait_for(lambda: alerts(fleet, "hop_budget"), timeout=30, what="the hop-budget escalation")
    wait_for(lambda: fleet.agent("ping").state == fleet.agent("pong").state == "ASLEEP",
             what="both agents asleep")
    before = len(fleet.read("#general"))
    assert stays(lambda: len(fleet.read("#general")) == before), "turns went on past the budget"
    chain = [m for m in fleet.read("#general") if m.chain == start.chain]
    assert max(m.hop for m in chain) == 4
    escalations = alerts(fleet, "hop_budget")
    assert len(escalations) == 1
    assert escalations[0].tier == 2 and escalations[0].chain == start.chain
    assert "chain" in escalations[0].body


def test_an_agent_that_repeats_itself_is_paused_across_separate_wakes(fleet):
    """DESIGN §5 livelock: repeat_threshold same outputs in a row, over separate wakes, pause it."""
    fleet.write_config(config(parrot="repeat"))
    fleet.add_agent("parrot", "#general")
    fleet.start_supervisor("parrot")
    for i in range(3):
        fleet.post("#general", f"question {i}")
        wait_for(lambda i=i: turn_count(fleet, "parrot") == i + 1 or fleet.agent("parrot").paused,
                 what=f"turn {i + 1}")
        wait_for(lambda: fleet.agent("parrot").state == "ASLEEP", what="parrot asleep")
    info = fleet.agent("parrot")
    assert info.paused and "livelock" in info.paused_reason
    assert info.last_turn.outcome == "livelock"
    assert turn_count(fleet, "parrot") == 2  # the third, repeated output is not posted
    [alert] = alerts(fleet, "livelock")
    assert alert.body.count("look into it") == 3
    fleet.post("#general", "are you there?")
    assert stays(lambda: fleet.agent("parrot").state == "ASLEEP")


def test_a_give_up_phrase_escalates_and_a_normal_answer_does_not(fleet):
    """DESIGN §5 give-up: the phrase pauses and escalates; an ordinary reply does neither."""
    fleet.write_config(config(quitter="give-up", worker="reply"))
    fleet.add_agent("quitter", "#general", wake="mentions")
    fleet.add_agent("worker", "#general", wake="mentions")
    fleet.start_supervisor("quitter")
    fleet.start_supervisor("worker")
    fleet.post("#general", "@quitter @worker please fix the build")
    wait_for(lambda: fleet.agent("quitter").paused, what="quitter paused")
    wait_for(lambda: turn_count(fleet, "worker") == 1, what="worker's answer")
    [alert] = alerts(fleet)
    assert "give up" in alert.title and "quitter" in alert.body and "i give up" in alert.body
    assert fleet.agent("quitter").last_turn.outcome == "gave_up"
    assert not fleet.agent("worker").paused


def test_a_crashing_agent_opens_the_failure_circuit(fleet):
    """DESIGN §5 failures: max_consecutive_failures crashed turns pause it and escalate."""
    fleet.write_config(config("max_consecutive_failures = 3", crasher="fail"))
    fleet.add_agent("crasher", "#general")
    fleet.start_supervisor("crasher")
    seen = 0
    for i in range(3):
        assert not fleet.agent("crasher").paused
        fleet.post("#general", f"try {i}")
        info = wait_for(lambda: (a := fleet.agent("crasher")).last_turn is not None
                        and a.last_turn.id > seen and a.state == "ASLEEP" and a,
                        what=f"failed turn {i + 1}")
        assert info.last_turn.outcome == "failed"
        seen = info.last_turn.id
    info = fleet.agent("crasher")
    assert info.paused
    assert "failure_circuit" in info.paused_reason
    [alert] = alerts(fleet, "failure_circuit")
    assert "exit" in alert.body


def test_tier_two_posts_are_decided_by_humans_only_and_the_decision_wakes_the_author(fleet):
    """DESIGN §5 tier-2 hard stop: agents and authors cannot decide; the decision wakes the author."""
    fleet.write_config(config(writer="reply", other="reply"))
    fleet.add_agent("writer", "#general")
    fleet.add_agent("other", "#general", wake="none")
    writer = fleet.agent_client("writer")
    proposal = writer.call(wire.Post(channel="#general", kind="post", title="Deploy to prod?",
                                     body="shall I?", tier=2)).message
    assert proposal.status == "pending"
    with pytest.raises(Refused) as refused:
        fleet.agent_client("other").call(wire.Decide(seq=proposal.seq, approve=True))
    assert refused.value.code == "forbidden"
    with pytest.raises(Refused):
        writer.call(wire.Decide(seq=proposal.seq, approve=True))
    human_post = fleet.post("#general", "a tier-2 of my own", kind="post", title="Mine", tier=2)
    with pytest.raises(Refused) as own:
        fleet.client().call(wire.Decide(seq=human_post.seq, approve=True))
    assert "author" in own.value.message
    fleet.start_supervisor("writer")
    chatter = fleet.post("#general", "meanwhile, chatter")
    assert stays(lambda: fleet.agent("writer").last_turn is None), "held author was dispatched"
    decision = fleet.client().call(wire.Decide(seq=proposal.seq, approve=True,
                                               reason="go ahead")).message
    assert decision.kind == "decision" and decision.in_reply_to == proposal.seq
    wait_for(lambda: fleet.agent("writer").last_turn is not None, what="the author's turn")
    wait_for(lambda: fleet.agent("writer").state == "ASLEEP", what="writer asleep")
    handled = fleet.agent("writer").last_turn.batch
    assert decision.seq in handled and chatter.seq in handled
    with pytest.raises(Refused) as again:
        fleet.client().call(wire.Decide(seq=proposal.seq, approve=False, reason="changed mind"))
    assert again.value.code == "conflict"
    thread = fleet.client().call(wire.GetPost(seq=proposal.seq))
    assert thread.post.status == "approved"


def test_a_paused_agent_wakes_again_only_after_resume(fleet):
    """DESIGN §5: nothing is dispatched to a paused agent until a human resumes it."""
    fleet.write_config(config(napper="reply"))
    fleet.add_agent("napper", "#general")
    fleet.start_supervisor("napper")
    fleet.client().call(wire.SetPaused(name="napper", paused=True, reason="testing"))
    waiting = fleet.post("#general", "while you were paused")
    assert stays(lambda: fleet.agent("napper").last_turn is None)
    fleet.client().call(wire.SetPaused(name="napper", paused=False))
    wait_for(lambda: (t := fleet.agent("napper").last_turn) and t.batch == [waiting.seq],
             what="the turn after resume")


def test_an_agent_trying_to_approve_is_refused_and_logged(fleet):
    """Issue 4: an agent's approval is refused with a clear error and leaves a trace."""
    fleet.add_agent("sneaky", "#general")
    post = fleet.post("#general", "needs a human", kind="post", title="Big change", tier=2)
    with pytest.raises(Refused) as refused:
        fleet.agent_client("sneaky").call(wire.Decide(seq=post.seq, approve=True))
    assert refused.value.code == "forbidden" and "human" in refused.value.message
    fleet.broker.wait_log("refused", op="Decide", principal="sneaky", code="forbidden")
    assert fleet.client().call(wire.GetPost(seq=post.seq)).post.status == "pending"
