"""Bounded autonomy with a real fleet: stub agents built to misbehave, stopped and escalated."""

from __future__ import annotations

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Refused
from tests.fleet import Fleet, wait_event, wait_for


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


def settled(fleet: Fleet, *agents: str) -> dict[str, wire.AgentInfo]:
    """The rows of ``agents`` as of the first moment of the broker (one ListAgents) at which all
    of them are ASLEEP. A wake commits with the message that causes it (DESIGN §4.1) and only a
    turn posts, so from that moment none of them runs again until a new message arrives: what
    they did by then is final, not merely unchanged so far."""
    return wait_for(lambda: (rows := fleet.agents()) and all(
        rows[a].state == "ASLEEP" for a in agents) and rows, what=f"{agents} all asleep at once")


def first_turn_after_resume(fleet: Fleet, agent: str, listener) -> list[wire.AgentEvent]:
    """Resume ``agent`` and wait for its next BUSY event; the agent's events from the
    ``listener`` (subscribed before anything was held) up to it. A held message that had been
    dispatched while paused shows as a WAKING or BUSY event before the resume's."""
    fleet.client().call(wire.SetPaused(name=agent, paused=False))
    seen: list[wire.AgentEvent] = []
    wait_event(listener, lambda ev: isinstance(ev, wire.AgentEvent) and ev.state == "BUSY",
               timeout=15, what=f"{agent}'s turn after the resume", seen=seen.append)
    return [ev for ev in seen if isinstance(ev, wire.AgentEvent) and ev.agent == agent]


def test_two_agents_answering_each_other_stop_within_the_hop_budget(fleet):
    """DESIGN §5 hop budget: a ping-pong stops at max_hops with exactly one escalation."""
    fleet.write_config(config("max_hops = 4", ping="reply", pong="reply"))
    fleet.add_agent("ping", "#general")
    fleet.add_agent("pong", "#general")
    fleet.start_supervisor("ping")
    fleet.start_supervisor("pong")
    start = fleet.post("#general", "ping, pong: talk to each other")
    wait_for(lambda: alerts(fleet, "hop_budget"), timeout=30, what="the hop-budget escalation")
    settled(fleet, "ping", "pong")  # a ping-pong past the budget never lets both sleep at once
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
    listener = fleet.listener(wire.agent_topic("parrot"))
    held = fleet.post("#general", "are you there?")
    paused = fleet.agent("parrot")  # the post's commit has decided its wakes (DESIGN §4.1)
    assert paused.state == "ASLEEP" and paused.last_turn.id == info.last_turn.id
    resumed, *_ = first_turn_after_resume(fleet, "parrot", listener)
    assert (resumed.state, resumed.paused) == ("ASLEEP", False), "dispatched while paused"
    wait_for(lambda: (t := fleet.agent("parrot").last_turn).id != info.last_turn.id
             and held.seq in t.batch, what="the held message in the turn after the resume")


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


def test_a_crashing_agent_retries_its_batch_until_the_circuit_opens(fleet):
    """DESIGN §4.3 and §5 failures, issue 11 item 6: a crashed turn acks nothing, so its message
    comes again in the next turn, until max_consecutive_failures crashed turns pause the agent
    and escalate; the message is still unacked."""
    fleet.write_config(config("max_consecutive_failures = 3", crasher="fail"))
    fleet.add_agent("crasher", "#general")
    fleet.start_supervisor("crasher")
    msg = fleet.post("#general", "try this")
    info = wait_for(lambda: (a := fleet.agent("crasher")).paused and a.state == "ASLEEP" and a,
                    timeout=30, what="the failure circuit to open")
    assert "failure_circuit" in info.paused_reason
    assert (info.last_turn.id, info.last_turn.outcome) == (3, "failed")  # three turns, all failed
    assert info.last_turn.batch == [msg.seq]
    assert info.offsets.get("#general", 0) < msg.seq
    [alert] = alerts(fleet, "failure_circuit")
    assert alert.body.count("exit code 3") == 3


def test_a_resumed_agent_handles_what_its_failed_turns_left_unacked(fleet):
    """Issue 11 item 6: a human who resumes a paused agent finds every message it never handled
    still due; the resume wakes it, and the message is handled once."""
    fleet.write_config(config("max_consecutive_failures = 2", crasher="fail"))
    fleet.add_agent("crasher", "#general")
    first = fleet.start_supervisor("crasher")
    msg = fleet.post("#general", "please handle me")
    wait_for(lambda: (a := fleet.agent("crasher")).paused and a.state == "ASLEEP",
             timeout=30, what="the failure circuit to open")
    first.stop()
    fleet.write_config(config("max_consecutive_failures = 2", crasher="reply"))  # fixed
    fleet.start_supervisor("crasher")
    assert fleet.agent("crasher").last_turn.batch == [msg.seq]
    fleet.client().call(wire.SetPaused(name="crasher", paused=False))
    [reply] = wait_for(lambda: [m for m in fleet.read("#general") if m.author == "crasher"],
                       timeout=30, what="the crasher's reply after the resume")
    assert (reply.body, reply.in_reply_to) == (f"ack {msg.seq}", msg.seq)
    info = wait_for(lambda: (a := fleet.agent("crasher")).state == "ASLEEP" and a,
                    what="crasher asleep")
    assert info.last_turn.outcome == "ok" and not info.paused
    assert info.offsets["#general"] == msg.seq


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
    held = fleet.agent("writer")  # the post's commit has decided its wakes (DESIGN §4.1)
    assert held.state == "ASLEEP" and held.last_turn is None, "held author was dispatched"
    decision = fleet.client().call(wire.Decide(seq=proposal.seq, approve=True,
                                               reason="go ahead")).message
    assert decision.kind == "decision" and decision.in_reply_to == proposal.seq
    wait_for(lambda: fleet.agent("writer").last_turn is not None, what="the author's turn")
    wait_for(lambda: fleet.agent("writer").state == "ASLEEP", what="writer asleep")
    handled = fleet.agent("writer").last_turn.batch  # one turn, woken by the decision, has all
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
    listener = fleet.listener(wire.agent_topic("napper"))
    waiting = fleet.post("#general", "while you were paused")
    held = fleet.agent("napper")  # the post's commit has decided its wakes (DESIGN §4.1)
    assert held.state == "ASLEEP" and held.last_turn is None
    events = first_turn_after_resume(fleet, "napper", listener)
    assert [(e.state, e.paused) for e in events] == [("ASLEEP", False), ("WAKING", False),
                                                     ("BUSY", False)], "dispatched while paused"
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
