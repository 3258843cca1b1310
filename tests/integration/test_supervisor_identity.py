"""One supervisor per agent across broker restarts (issue 8): the broker keeps who supervises each
agent (host, pid, start time) in ``agent_state`` and, after its own restart, checks that process
before it accepts another supervisor's Hello for the same agent."""

from __future__ import annotations

import os

import pytest

from chatbox.bus import wire
from chatbox.broker.liveness import start_time
from chatbox.runtime.exits import Exit
from tests.fleet import Fleet, wait_for

CONFIG = """
[limits]
kill_grace_seconds = 0.5
[agents.worker]
engine = "stub"
stub = { behaviour = "reply" }
env = ["CHATBOX_STUB_GATE"]
limits = { max_turn_seconds = 60.0 }
"""


def replies(fleet: Fleet) -> list[wire.Message]:
    return [m for m in fleet.read("#general") if m.author == "worker"]


@pytest.fixture
def busy(bare_fleet):
    """A broker, and worker's supervisor in the middle of a turn held at a closed gate."""
    fleet = bare_fleet
    fleet.write_config(CONFIG)
    fleet.start_broker()
    fleet.add_agent("worker", "#general")
    held = fleet.held_turn("worker", "run me once")
    return fleet, held.gate, held.env, held.supervisor, held.post


def test_after_a_broker_restart_a_second_supervisor_is_refused_while_the_first_runs(busy):
    fleet, gate, env, first, post = busy
    fleet.stop_broker()
    fleet.start_broker()
    second = fleet.spawn_supervisor("worker", env=env)
    assert second.popen.wait(30) == Exit.FAILED
    assert "already has a running supervisor" in second.log_text()
    assert fleet.agent("worker").state == "BUSY"  # the first's turn is not lost
    gate.open()
    wait_for(lambda: fleet.agent("worker").state == "ASLEEP", what="the first's report")
    info = fleet.agent("worker")
    assert info.last_turn.outcome == "ok" and info.last_turn.batch == [post.seq]
    assert len(replies(fleet)) == 1  # the message ran once
    # the restarted broker watches the first supervisor again: its exit is noticed at once
    first.kill()
    fleet.broker.wait_log("supervisor_exited")
    wait_for(lambda: fleet.agent("worker").supervisor is None, what="the first forgotten")
    fleet.start_supervisor("worker", env=env)


def test_a_supervisor_that_died_while_the_broker_was_down_loses_its_turn_at_restart(busy):
    fleet, gate, env, first, post = busy
    fleet.stop_broker()
    first.kill()
    fleet.start_broker()
    info = fleet.agent("worker")  # before any other supervisor said hello
    assert info.state == "ASLEEP" and info.supervisor is None
    assert info.last_turn.outcome == "lost"
    gate.open()
    fleet.start_supervisor("worker", env=env)
    wait_for(lambda: len(replies(fleet)) == 1, what="the redelivered turn")
    wait_for(lambda: fleet.agent("worker").last_turn.outcome == "ok", what="the second turn")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="no /proc on this platform")
def test_start_time_is_field_22_of_proc_stat():
    mine = start_time(os.getpid())
    assert isinstance(mine, int) and mine > 0
    assert start_time(os.getpid()) == mine
    assert start_time(2 ** 22 + 12345) is None  # above pid_max: no such process
