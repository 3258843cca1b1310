"""Event-driven dispatch with a real fleet: a broker and supervisors as separate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from chatbox.broker import messages
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.store import Store
from chatbox.bus import wire
from tests.fleet import Fleet, child_env, wait_for


def stub_config(gated: tuple[str, ...] = (), **agents: str) -> str:
    """chatbox.toml with one stub agent per keyword: name=behaviour[:max_turn_seconds]. The
    ``gated`` agents pass ``CHATBOX_STUB_GATE`` to their turns: each waits at ``Fleet.gate()``."""
    out = ["[limits]", "kill_grace_seconds = 0.5", ""]
    for name, spec in agents.items():
        behaviour, _, cap = spec.partition(":")
        out += [f"[agents.{name}]", 'engine = "stub"', f'stub = {{ behaviour = "{behaviour}" }}',
                f"limits = {{ max_turn_seconds = {float(cap or 30)} }}"]
        out += ['env = ["CHATBOX_STUB_GATE"]', ""] if name in gated else [""]
    return "\n".join(out)


def acks(fleet: Fleet, agent: str, channel: str = "#general") -> list[list[int]]:
    """The seqs each of ``agent``'s stub replies acknowledged, in order."""
    return [[int(x) for x in m.body.split()[1:]] for m in fleet.read(channel)
            if m.author == agent and m.body.startswith("ack")]


def settled(fleet: Fleet, *agents: str) -> bool:
    infos = [fleet.agent(a) for a in agents]
    return all(i.state == "ASLEEP" for i in infos)


def test_one_post_wakes_exactly_the_subscribed_agents_once(fleet):
    """DESIGN §4.1: every subscribed agent whose wake mode matches is woken, once; others not."""
    fleet.write_config(stub_config(ann="reply", bob="reply", cat="reply"))
    fleet.client().call(wire.CreateChannel(name="#other", topic="elsewhere"))
    fleet.add_agent("ann", "#general", wake="mentions")
    fleet.add_agent("bob", "#general", wake="mentions")
    fleet.add_agent("cat", "#other")
    for a in ("ann", "bob", "cat"):
        fleet.start_supervisor(a)
    post = fleet.post("#general", "@ann @bob status please")
    wait_for(lambda: acks(fleet, "ann") and acks(fleet, "bob"), what="both replies")
    wait_for(lambda: settled(fleet, "ann", "bob", "cat"), what="the fleet to settle")
    assert acks(fleet, "ann") == [[post.seq]]
    assert acks(fleet, "bob") == [[post.seq]]
    assert fleet.agent("cat").last_turn is None
    replies = [m for m in fleet.read("#general") if m.author in ("ann", "bob")]
    assert all(m.in_reply_to == post.seq and m.hop == 1 and m.chain == post.chain
               for m in replies)


def test_a_burst_during_a_busy_turn_causes_exactly_one_follow_up_turn(fleet):
    """DESIGN §4.3: five messages that arrive during one turn cause one next turn draining all."""
    fleet.write_config(stub_config(slow="reply", gated=("slow",)))
    fleet.add_agent("slow", "#general")
    held = fleet.held_turn("slow", "first")
    gate, sup, first = held.gate, held.supervisor, held.post
    burst = [fleet.post("#general", f"burst {i}").seq for i in range(5)]
    gate.open()  # the first turn is held until the whole burst has arrived
    wait_for(lambda: len(acks(fleet, "slow")) >= 2, what="the follow-up turn")
    wait_for(lambda: settled(fleet, "slow"), what="slow to sleep")
    assert acks(fleet, "slow") == [[first.seq], burst]
    assert len([e for e in sup.log_events() if e["event"] == "turn"]) == 2


def test_a_backlog_is_handled_completely_in_capped_batches(bare_fleet):
    """DESIGN §4.2: a claim returns every unacked message up to the batch cap; none is lost."""
    fleet = bare_fleet
    fleet.write_config("[limits]\nmax_batch = 40\n\n[agents.busy]\nengine = \"stub\"\n")
    fleet.start_broker()
    fleet.add_agent("busy", "#general")
    seqs = [fleet.post("#general", f"backlog {i}").seq for i in range(100)]
    fleet.start_supervisor("busy")
    wait_for(lambda: sum(len(a) for a in acks(fleet, "busy")) >= 100, timeout=30,
             what="the whole backlog acknowledged")
    wait_for(lambda: settled(fleet, "busy"), what="busy to sleep")
    handled = acks(fleet, "busy")
    assert [s for batch in handled for s in batch] == seqs
    assert [len(b) for b in handled] == [40, 40, 20]
    assert fleet.agent("busy").offsets["#general"] >= seqs[-1]


def test_a_supervisor_killed_mid_turn_is_noticed_and_its_messages_redelivered_once(bare_fleet):
    """DESIGN §4.5: the turn is recorded lost, the turn's child dies too, a restart redelivers."""
    fleet = bare_fleet
    fleet.write_config(stub_config(worker="reply", gated=("worker",)))
    fleet.start_broker()
    fleet.add_agent("worker", "#general")
    held = fleet.held_turn("worker", "do the thing")  # its gate is never opened: the turn is
    sup, post, child = held.supervisor, held.post, held.spawned["pid"]  # running when sup dies
    os.kill(sup.pid, signal.SIGKILL)
    wait_for(lambda: fleet.agent("worker").state == "ASLEEP", what="the lost turn noticed")
    info = fleet.agent("worker")
    assert info.last_turn.outcome == "lost"
    wait_for(lambda: not _alive(child), what="the orphaned turn child to die with its parent")
    fleet.write_config(stub_config(worker="reply"))
    fleet.start_supervisor("worker")
    wait_for(lambda: acks(fleet, "worker"), what="the redelivered turn")
    wait_for(lambda: settled(fleet, "worker"), what="worker to sleep")
    assert acks(fleet, "worker") == [[post.seq]]
    assert fleet.agent("worker").last_turn.outcome == "ok"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hung_turn_is_killed_at_its_cap_while_other_agents_keep_working(fleet):
    """DESIGN §5 caps: wall time kills the turn's process group; other agents are untouched."""
    fleet.write_config(stub_config(stuck="hang:1.5", quick="reply"))
    fleet.add_agent("stuck", "#general", wake="mentions")
    fleet.add_agent("quick", "#general", wake="mentions")
    stuck = fleet.start_supervisor("stuck")
    fleet.start_supervisor("quick")
    fleet.post("#general", "@stuck please hang")
    stuck.wait_log("turn_spawned")
    during = fleet.post("#general", "@quick are you there?")
    wait_for(lambda: acks(fleet, "quick") == [[during.seq]], what="quick to answer meanwhile")
    assert fleet.agent("stuck").state == "BUSY"
    event = stuck.wait_log("turn", timeout=15)
    assert event["outcome"] == "timeout"
    wait_for(lambda: fleet.agent("stuck").state == "ASLEEP", what="stuck to sleep")
    assert fleet.agent("stuck").last_turn.outcome == "timeout"


def test_a_broker_restart_mid_turn_loses_nothing(fleet):
    """DESIGN §4.6: the report is retried until the restarted broker has it; no message is lost."""
    fleet.write_config(stub_config(steady="reply", gated=("steady",)))
    fleet.add_agent("steady", "#general")
    held = fleet.held_turn("steady", "survive a restart")
    gate, sup, post = held.gate, held.supervisor, held.post
    assert fleet.stop_broker() == 0
    gate.open()
    sup.wait_log("turn")  # the turn ended while the broker is down: its report has to wait
    fleet.start_broker()
    wait_for(lambda: acks(fleet, "steady") == [[post.seq]], timeout=20,
             what="the reply after the restart")
    wait_for(lambda: settled(fleet, "steady"), what="steady to sleep")
    after = fleet.post("#general", "and after it")
    wait_for(lambda: acks(fleet, "steady") == [[post.seq], [after.seq]], timeout=20,
             what="a turn for a post made after the restart")


def test_a_second_supervisor_for_the_same_agent_is_refused(fleet):
    """DESIGN §4.4: one supervisor per agent; the second exits at once with a clear message."""
    fleet.write_config(stub_config(solo="reply"))
    fleet.add_agent("solo", "#general")
    fleet.start_supervisor("solo")
    second = subprocess.run([sys.executable, "-m", "chatbox.supervisor", "--agent", "solo"],
                            env=child_env(fleet.ws), cwd=fleet.root, capture_output=True,
                            text=True, timeout=20)
    assert second.returncode == 1
    assert "already has a running supervisor" in second.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_supervisor_stops_gracefully_finishing_its_turn(fleet, sig):
    """Issue 3: the first INT/TERM finishes the running turn, reports it, and exits 0."""
    fleet.write_config(stub_config(calm="reply", gated=("calm",)))
    fleet.add_agent("calm", "#general")
    held = fleet.held_turn("calm", "finish this first")
    gate, sup, post = held.gate, held.supervisor, held.post
    sup.popen.send_signal(sig)  # delivered while the turn waits at its gate
    gate.open()
    assert sup.popen.wait(20) == 0
    assert acks(fleet, "calm") == [[post.seq]]
    assert fleet.agent("calm").state == "ASLEEP"


def test_work_posted_while_the_broker_was_down_is_picked_up_after_it_returns(fleet):
    """Issue 3: a supervisor reconnects by itself; pending work needs no new post."""
    fleet.write_config(stub_config(patient="reply"))
    fleet.add_agent("patient", "#general")
    sup = fleet.start_supervisor("patient")
    assert fleet.stop_broker() == 0
    # post straight into the stopped broker's database: as if the wake had been lost
    store = Store(fleet.ws.db_path)
    with store.write():
        msg = messages.post(Ctx(store.db, Principal(fleet.human, "admin"), time.time()),
                            wire.Post(channel="#general", body="while you were away"))
    store.close()
    connected = len([e for e in sup.log_events() if e["event"] == "connected"])
    fleet.start_broker()
    sup.wait_log("connected", count=connected + 1, timeout=15)
    wait_for(lambda: acks(fleet, "patient") == [[msg.seq]], timeout=15,
             what="the turn for the pending message")


def test_a_command_engine_gets_the_prompt_on_stdin_and_its_stdout_is_the_reply(fleet):
    """DESIGN §6 engines: any argv template, prompt on stdin, reply mode posts stdout."""
    script = ("import os, sys; p = sys.stdin.read(); "
              "print('agent', os.environ['CHATBOX_AGENT'], 'turn', os.environ['CHATBOX_TURN_ID'], "
              "'saw', 'deploy the docs' in p)")
    fleet.write_config(f'[agents.cmd]\nengine = "command"\nreply = true\n'
                       f'command = ["{sys.executable}", "-c", "{script}"]\n')
    fleet.add_agent("cmd", "#general")
    fleet.start_supervisor("cmd")
    post = fleet.post("#general", "please deploy the docs")
    reply = wait_for(lambda: [m for m in fleet.read("#general") if m.author == "cmd"],
                     what="the command's reply")[0]
    assert reply.in_reply_to == post.seq
    assert reply.body.startswith("agent cmd turn ") and reply.body.endswith("saw True")
