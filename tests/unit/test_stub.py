"""The built-in stub agent, run as real ``python -m supervisor.stub`` subprocesses (DESIGN §6)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from chatbox.harness import wait_for
from chatbox.runtime.config import Behaviour
from chatbox.supervisor import engines, stub as stub_module

ROOT = Path(__file__).resolve().parents[2]
BATCH = {"agent": "echo", "turn": 7,
         "messages": [{"seq": 14, "body": "c"}, {"seq": 12, "body": "a"}, {"seq": 13, "body": "b"}]}


def stub(*args: str, batch: object = BATCH, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run the stub once with ``batch`` on stdin; bounded by ``timeout``."""
    return subprocess.run([sys.executable, "-m", "chatbox.supervisor.stub", *args], cwd=ROOT,
                          input=json.dumps(batch), capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout)


def test_reply_acks_every_seq_of_the_batch_in_ascending_order():
    """behaviour reply prints ``ack`` and each seq, ascending (DESIGN §6, stub)."""
    done = stub("--behaviour", "reply")
    assert (done.returncode, done.stdout) == (0, "ack 12 13 14\n")


def test_reply_is_the_default_behaviour():
    """Without --behaviour the stub replies."""
    assert stub().stdout == "ack 12 13 14\n"


def test_fail_writes_stderr_and_exits_3():
    """behaviour fail exits 3 with a line on stderr and nothing on stdout."""
    done = stub("--behaviour", "fail")
    assert done.returncode == 3
    assert done.stdout == ""
    assert "failing on purpose" in done.stderr


def test_hang_never_answers():
    """behaviour hang is still running when the test's bound expires."""
    with pytest.raises(subprocess.TimeoutExpired):
        stub("--behaviour", "hang", timeout=1.0)


def test_repeat_prints_the_same_sentence_every_turn():
    """behaviour repeat answers identically whatever the batch, so the livelock detector trips."""
    first = stub("--behaviour", "repeat").stdout
    second = stub("--behaviour", "repeat", batch={"agent": "echo", "turn": 8,
                                                  "messages": [{"seq": 99}]}).stdout
    assert first == second == "I will look into it.\n"


def test_give_up_prints_a_give_up_phrase():
    """behaviour give-up prints the sentence the give-up detector knows."""
    assert stub("--behaviour", "give-up").stdout == "I give up: I cannot complete this task.\n"


def test_delay_waits_before_answering():
    """--delay makes the reply wait: a bound shorter than the delay expires first."""
    with pytest.raises(subprocess.TimeoutExpired):
        stub("--delay", "30", timeout=1.0)
    assert stub("--delay", "0.05").stdout == "ack 12 13 14\n"


def _writer_if_waiting(fifo: Path) -> int | None:
    """A write end of ``fifo`` if a reader is waiting at it (opening it, or holding it)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return None
        raise


def test_a_gate_holds_the_answer_until_the_gate_is_opened(tmp_path):
    """--gate: the stub waits at the FIFO with its answer unwritten, and answers once it opens."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(BATCH), encoding="utf-8")
    with open(batch, "rb") as stdin, subprocess.Popen(
            [sys.executable, "-m", "chatbox.supervisor.stub"], cwd=ROOT, stdin=stdin,
            env=dict(os.environ, CHATBOX_STUB_GATE=str(fifo)), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE) as proc:
        try:
            # a reader at the FIFO is the stub at its gate: it has read the batch, not answered
            writer = wait_for(lambda: _writer_if_waiting(fifo), timeout=10,
                              what="the stub at its gate")
            assert proc.poll() is None
            os.close(writer)  # the reader's open has returned: the gate was opened
            out, err = proc.communicate(timeout=10)
            assert (proc.returncode, out) == (0, b"ack 12 13 14\n"), err
        finally:
            proc.kill()


def test_the_stub_knows_exactly_the_configurable_behaviours():
    """config.Behaviour is the one list; the stdlib-only stub spells it out and must agree."""
    assert set(stub_module.BEHAVIOURS) == set(typing.get_args(Behaviour))


def test_an_unreadable_batch_exits_2():
    """stdin that is not a JSON object is a usage error, said on stderr."""
    done = stub(batch=[1, 2])
    assert done.returncode == 2
    assert "unreadable batch" in done.stderr


def test_an_unknown_behaviour_is_a_usage_error():
    """argparse refuses a behaviour it does not know."""
    assert stub("--behaviour", "dance").returncode == 2


def test_the_stub_imports_only_the_standard_library():
    """The stub is spawned every turn: no third-party or project import beyond itself."""
    probe = ("import sys, runpy\n"
             "before = set(sys.modules)\n"
             "import chatbox.supervisor.stub\n"
             "new = set(sys.modules) - before\n"
             "ours = sorted(m for m in new if m.split('.')[0] in {'supervisor', 'bus', 'broker', "
             "'guardrails', 'chatbox', 'msgspec', 'zmq', 'structlog'})\n"
             "print(','.join(ours))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, encoding="utf-8", timeout=10)
    assert done.stdout.strip() == "chatbox,chatbox.supervisor,chatbox.supervisor.stub"


def test_the_engine_argv_runs_the_stub():
    """build_turn('stub') gives an argv and stdin that produce the stub's reply."""
    turn = engines.build_turn("stub", engines.TurnInput(
        agent="echo", prompt="ignored", pointer="ignored", batch_json=json.dumps(BATCH).encode(),
        stub={"behaviour": "reply", "delay": 0.0}, workspace=str(ROOT), mcp=[]))
    done = subprocess.run(turn.argv, input=turn.stdin, cwd=ROOT, capture_output=True, timeout=10)
    assert (done.returncode, done.stdout, turn.reply_mode) == (0, b"ack 12 13 14\n", "stdout")
