"""The turn runner: real subprocesses under small caps (DESIGN §5 "Caps per turn", §7 "Turns")."""

from __future__ import annotations

import hashlib
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatbox.supervisor.capped import TurnSpec, run_capped
from chatbox.supervisor.turn_env import DEFAULT_ALLOW, allowed_env
from tests.fleet import wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")


def spec(argv: list[str], **kw) -> TurnSpec:
    kw.setdefault("env", ENV)
    kw.setdefault("cwd", str(ROOT))
    kw.setdefault("max_seconds", 10.0)
    kw.setdefault("max_output_bytes", 1 << 20)
    kw.setdefault("kill_grace_seconds", 0.2)
    return TurnSpec(argv=argv, **kw)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_command_that_exits_zero_is_ok():
    """Exit 0 is outcome ok, with stdout, its digest and a stripped excerpt."""
    started = []
    result = run_capped(spec(["sh", "-c", "echo hello; echo note >&2"]), on_start=started.append)
    assert result.outcome == "ok"
    assert result.exit_code == 0
    assert result.output == "hello\n"
    assert result.digest == hashlib.sha256(b"hello\n").hexdigest()
    assert result.excerpt == "hello"
    assert result.stderr_tail == "note\n"
    assert started == [result.pid]
    assert result.started_at <= result.ended_at


def test_a_non_zero_exit_is_failed_with_its_code_and_stderr():
    """A non-zero exit is outcome failed and keeps the exit code and stderr."""
    result = run_capped(spec(["sh", "-c", "echo oops >&2; exit 3"]))
    assert (result.outcome, result.exit_code) == ("failed", 3)
    assert "oops" in result.stderr_tail


def test_a_missing_program_is_failed_not_an_exception():
    """A spawn error is outcome failed with no exit code and the error in stderr_tail."""
    result = run_capped(spec(["/nonexistent/chatbox-turn"]))
    assert (result.outcome, result.exit_code, result.pid) == ("failed", None, None)
    assert "/nonexistent/chatbox-turn" in result.stderr_tail


def test_a_program_without_execute_permission_is_failed(tmp_path):
    """PermissionError at spawn is outcome failed, never raised."""
    program = tmp_path / "turn"
    program.write_text("#!/bin/sh\necho no\n", encoding="utf-8")
    program.chmod(0o644)
    result = run_capped(spec([str(program)]))
    assert (result.outcome, result.exit_code) == ("failed", None)
    assert "ermission" in result.stderr_tail


def test_a_missing_working_directory_is_failed(tmp_path):
    """A cwd that does not exist is a spawn error, outcome failed."""
    result = run_capped(spec(["true"], cwd=str(tmp_path / "gone")))
    assert (result.outcome, result.exit_code) == ("failed", None)


def test_an_empty_command_is_failed():
    """An empty argv is refused as a failed turn, not an IndexError."""
    assert run_capped(spec([])).outcome == "failed"


def test_the_wall_cap_kills_the_child_and_its_grandchild():
    """On the wall cap the whole process group gets SIGTERM: the background sleep dies too."""
    result = run_capped(spec(["sh", "-c", "sleep 100 & echo $!; wait"], max_seconds=0.5))
    assert result.outcome == "timeout"
    assert result.exit_code == -signal.SIGTERM
    grandchild = int(result.output.split()[0])
    wait_for(lambda: not alive(grandchild), timeout=5, what="the grandchild to die")
    assert not alive(result.pid)


def test_a_child_ignoring_sigterm_gets_sigkill_after_the_grace():
    """SIGTERM ignored (inherited by the sleep too): SIGKILL follows after kill_grace_seconds."""
    result = run_capped(spec(["sh", "-c", "trap '' TERM; echo ready; sleep 100"],
                           max_seconds=0.3, kill_grace_seconds=0.2))
    assert result.outcome == "timeout"
    assert result.exit_code == -signal.SIGKILL
    assert result.output == "ready\n"


def test_a_grandchild_holding_the_pipes_is_killed_when_the_child_exits():
    """The child exits 0 but leaves a sleep holding stdout: the turn ends, the sleep dies."""
    result = run_capped(spec(["sh", "-c", "sleep 100 & echo $!"]))
    assert (result.outcome, result.exit_code) == ("ok", 0)
    grandchild = int(result.output.split()[0])
    wait_for(lambda: not alive(grandchild), timeout=5, what="the grandchild to die")


def test_the_output_cap_stops_the_turn_and_keeps_exactly_the_cap():
    """More stdout than max_output_bytes: outcome capped, output cut at the cap."""
    result = run_capped(spec(["yes"], max_output_bytes=1000))
    assert result.outcome == "capped"
    assert len(result.output) == 1000
    assert result.digest == hashlib.sha256(b"y\n" * 500).hexdigest()
    assert result.exit_code == -signal.SIGTERM


def test_output_up_to_the_cap_is_not_capped():
    """Exactly max_output_bytes of stdout is still ok."""
    result = run_capped(spec(["printf", "abcd"], max_output_bytes=4))
    assert (result.outcome, result.output) == ("ok", "abcd")


def test_stdin_is_delivered_and_closed():
    """The spec's stdin reaches the child, then EOF (cat ends)."""
    result = run_capped(spec(["cat"], stdin=b"hello\n"))
    assert (result.outcome, result.output) == ("ok", "hello\n")


def test_a_large_stdin_round_trip_does_not_deadlock():
    """Megabytes through cat: writing and reading go through one selector, never blocking."""
    data = os.urandom(1 << 20).hex().encode()  # 2 MiB, more than any pipe buffer
    result = run_capped(spec(["cat"], stdin=data, max_output_bytes=len(data)))
    assert result.outcome == "ok"
    assert result.digest == hashlib.sha256(data).hexdigest()


def test_a_child_that_never_reads_stdin_does_not_block_the_runner():
    """A child that exits without reading a large stdin: the broken pipe is not an error."""
    result = run_capped(spec(["sh", "-c", "echo done"], stdin=b"x" * (1 << 20)))
    assert (result.outcome, result.output) == ("ok", "done\n")


def test_empty_stdin_is_dev_null():
    """No stdin bytes: the child reads EOF at once."""
    result = run_capped(spec(["cat"]))
    assert (result.outcome, result.output) == ("ok", "")


def test_the_environment_is_exactly_the_one_given(monkeypatch):
    """Nothing of the supervisor's environment leaks into the turn."""
    monkeypatch.setenv("CHATBOX_LEAK_PROBE", "secret")
    result = run_capped(spec(["env"], env={**ENV, "CHATBOX_AGENT": "echo"}))
    assert result.outcome == "ok"
    assert sorted(result.output.splitlines()) == sorted([f"PATH={ENV['PATH']}", "CHATBOX_AGENT=echo"])


def test_the_working_directory_is_honoured(tmp_path):
    """The child runs in spec.cwd."""
    result = run_capped(spec(["pwd"], cwd=str(tmp_path)))
    assert os.path.realpath(result.output.strip()) == os.path.realpath(tmp_path)


def test_a_cancel_request_on_the_pipe_stops_the_turn():
    """cancel_fd readable and is_cancelled() true: the group is stopped, outcome cancelled."""
    r, w = os.pipe()
    try:
        result = run_capped(spec(["sleep", "100"]), cancel_fd=r, is_cancelled=lambda: True,
                          on_start=lambda pid: os.write(w, b"x"))
        assert (result.outcome, result.exit_code) == ("cancelled", -signal.SIGTERM)
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):  # the wake-up byte was drained
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)


def test_a_wake_on_the_cancel_pipe_without_a_cancel_lets_the_turn_finish():
    """cancel_fd readable but is_cancelled() false: the turn goes on to its own end."""
    r, w = os.pipe()
    asked = []
    try:
        result = run_capped(spec(["sh", "-c", "sleep 0.2; echo fine"]), cancel_fd=r,
                          is_cancelled=lambda: asked.append(1) or False,
                          on_start=lambda pid: os.write(w, b"x"))
    finally:
        os.close(r)
        os.close(w)
    assert (result.outcome, result.output) == ("ok", "fine\n")
    assert asked


def test_a_closed_cancel_pipe_is_ignored():
    """The writer end closed: EOF on cancel_fd stops neither the turn nor the loop."""
    r, w = os.pipe()
    os.close(w)
    try:
        result = run_capped(spec(["sh", "-c", "sleep 0.1; echo fine"]), cancel_fd=r)
    finally:
        os.close(r)
    assert (result.outcome, result.output) == ("ok", "fine\n")


def test_stderr_keeps_only_its_tail():
    """Long stderr: the last ~4 KiB are kept."""
    result = run_capped(spec(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done"]))
    assert len(result.stderr_tail) <= 4096
    assert result.stderr_tail.endswith("line1999\n")


def test_invalid_utf8_output_is_replaced_not_raised():
    """Bytes that are not UTF-8 decode with replacement characters."""
    result = run_capped(spec(["printf", "\\377ok"]))
    assert result.output == "\ufffdok"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_turn_dies_with_its_supervisor():
    """SIGKILL the process running run_capped: the turn's child gets SIGKILL from the kernel."""
    script = ("import sys\n"
              "from chatbox.supervisor.capped import TurnSpec, run_capped\n"
              "run_capped(TurnSpec(argv=['sleep', '100'], env={'PATH': %r}, cwd='.', max_seconds=60),\n"
              "         on_start=lambda pid: print(pid, flush=True))\n" % ENV["PATH"])
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              env={**ENV, "PYTHONPATH": str(ROOT)})
    child = None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(parent.stdout, selectors.EVENT_READ)
            assert sel.select(10), "the runner never reported its child"
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(timeout=5)
        wait_for(lambda: not alive(child), timeout=5, what="the child to die")
    finally:
        parent.kill()
        parent.wait(timeout=5)
        parent.stdout.close()
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)


def test_allowed_env_keeps_only_allowed_names_and_adds_extras():
    """The allow-list filters the base environment; extras are laid over it."""
    base = {"PATH": "/bin", "HOME": "/home/a", "ANTHROPIC_API_KEY": "sk", "SECRET": "x",
            "TZ": "UTC", "MY_TOOL_HOME": "/opt"}
    env = allowed_env(base, {"CHATBOX_TURN_ID": "7", "HOME": "/ws"})
    assert env == {"PATH": "/bin", "HOME": "/ws", "TZ": "UTC", "CHATBOX_TURN_ID": "7"}


def test_allowed_env_allow_adds_names_and_prefixes():
    """Names in allow are added to the defaults; NAME_* allows a prefix."""
    base = {"PATH": "/bin", "MY_TOOL_HOME": "/opt", "KIMI_MODEL_NAME": "k", "KIMI_X": "no"}
    env = allowed_env(base, {}, ["MY_TOOL_HOME", "KIMI_MODEL_*"])
    assert env == {"PATH": "/bin", "MY_TOOL_HOME": "/opt", "KIMI_MODEL_NAME": "k"}
    assert "PATH" in DEFAULT_ALLOW and "XDG_CONFIG_HOME" in DEFAULT_ALLOW
