"""A supervisor's stop, for real: a second INT/TERM exits at once with its own code (Exit.ABORTED),
and the broker records the unfinished turn lost and redelivers its batch."""

from __future__ import annotations

import signal
import time

from chatbox.runtime.exits import Exit
from tests.fleet import wait_for

CONFIG = """
[agents.slow]
engine = "stub"
stub = { behaviour = "hang" }
[agents.slow.limits]
max_turn_seconds = 120
"""


def test_a_second_signal_stops_a_supervisor_at_once_and_its_turn_is_lost(fleet):
    fleet.write_config(CONFIG)
    fleet.add_agent("slow", "#general")
    sup = fleet.start_supervisor("slow")
    post = fleet.post("#general", "this turn will not finish")
    sup.wait_log("turn_spawned")
    sup.popen.send_signal(signal.SIGINT)   # first: finish the turn (it hangs for 120 s)
    sup.wait_log("turn_spawned")           # still running: the first signal does not kill it
    started = time.monotonic()
    sup.popen.send_signal(signal.SIGTERM)  # second: now
    assert sup.popen.wait(20) == Exit.ABORTED
    assert time.monotonic() - started < 15  # the kill grace, not the 120 s turn
    assert sup.wait_log("aborted")["reason"].startswith("stopped at once")
    # the broker saw the supervisor go; the turn is lost, the message is due again
    fleet.broker.wait_log("supervisor_exited")
    wait_for(lambda: fleet.agent("slow").last_turn.outcome == "lost", what="the turn recorded lost")
    assert fleet.agent("slow").state == "ASLEEP"
    again = fleet.start_supervisor("slow")
    again.wait_log("turn_start", batch=[post.seq])
