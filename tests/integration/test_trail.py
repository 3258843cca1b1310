"""The dispatch trail with a real broker: after a kill -9 that tears the last line, the next
start leaves every ``#dispatch`` message and decision on file exactly once, in order, and the
bytes before the tear as they were; ``chatbox tail --trail`` follows it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from chatbox.broker.trail import read_trail, trail_path
from chatbox.bus import wire
from tests.fleet import Fleet, child_env, wait_for



def _dispatch_seqs(f: Fleet) -> list[int]:
    return [m.seq for m in f.read("#dispatch")]


def _on_file(f: Fleet) -> list[int]:
    return [e["seq"] for e in read_trail(trail_path(f.ws.root))]


def test_kill_9_mid_append_loses_no_line_and_writes_none_twice(fleet: Fleet) -> None:
    f = fleet
    f.add_agent("kim", "#general")
    kim = f.agent_client("kim")
    for i in range(3):
        f.post("#dispatch", f"order {i}")
    ask = kim.call(wire.Post(channel="#dispatch", body="may I?", kind="post", title="Deploy",
                             tier=2)).message
    f.client().call(wire.Decide(seq=ask.seq, approve=True))
    assert f.stop_broker(signal.SIGTERM) == 0
    f.start_broker()
    assert len(_on_file(f)) == 5 and _on_file(f) == _dispatch_seqs(f)

    f.post("#dispatch", "after the restart")
    f.post("#dispatch", "and one more")
    f.broker.kill()  # kill -9: no clean-up, no catch-up at stop
    path = trail_path(f.ws.root)
    data = path.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    torn = data[:len(data) - 1 - len(last) // 2]  # as if killed in the middle of that line
    path.write_bytes(torn)

    f.start_broker()
    expected = _dispatch_seqs(f)
    assert len(expected) == 7
    assert _on_file(f) == expected
    assert path.read_bytes().startswith(torn + b"\n")
    assert f.stop_broker(signal.SIGTERM) == 0
    f.start_broker()
    assert _on_file(f) == expected  # another start adds nothing


def test_each_line_is_on_file_when_its_reply_comes(fleet: Fleet) -> None:
    f = fleet
    f.post("#general", "not trailed")
    first = f.post("#dispatch", "one").seq
    assert _on_file(f) == [first]
    second = f.post("#dispatch", "two").seq
    assert _on_file(f) == [first, second]


def test_tail_trail_prints_the_trail_as_json_lines(fleet: Fleet) -> None:
    f = fleet
    seqs = [f.post("#dispatch", f"order {i}").seq for i in range(2)]
    assert f.stop_broker(signal.SIGTERM) == 0  # the trail is complete at stop, wired or not
    done = subprocess.run([sys.executable, "-m", "chatbox", "tail", "--trail", "--since", "0",
                           "--count", "2", "--json"], env=child_env(f.ws), cwd=f.root,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["seq"] for line in done.stdout.splitlines()] == seqs


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_tail_trail_ends_quietly_at_a_stop_signal(fleet: Fleet, sig: int) -> None:
    """`chatbox tail --trail` follows until Ctrl-C or a TERM, which end it with status 0 and
    nothing but its first line on stderr."""
    f = fleet
    f.post("#dispatch", "order")
    out, err = f.root / "trail-tail.out", f.root / "trail-tail.err"
    with open(out, "wb") as out_file, open(err, "wb") as err_file:
        tail = subprocess.Popen([sys.executable, "-m", "chatbox", "tail", "--trail", "--since",
                                 "0"], env=child_env(f.ws), cwd=f.root, stdin=subprocess.DEVNULL,
                                stdout=out_file, stderr=err_file)
    try:
        wait_for(lambda: "order" in out.read_text(), timeout=15, what="the trail's entry")
        tail.send_signal(sig)
        assert tail.wait(timeout=15) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait(5)
    assert [line.split(";")[0] for line in err.read_text().splitlines()] == [
        f"following {trail_path(f.ws.root)}"]
