"""A supervisor's stop, for real: a second INT/TERM exits at once with its own code (Exit.ABORTED),
and the broker records the unfinished turn lost and redelivers its batch."""

from __future__ import annotations

import os
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


# ------------------------------------------------------------------ start-up checks

def _supervisor(fleet, path: str):
    import subprocess
    import sys

    from tests.fleet import child_env
    return subprocess.run([sys.executable, "-m", "chatbox.supervisor", "--agent", "bot"],
                          env=child_env(fleet.ws, PATH=path), cwd=fleet.root, capture_output=True,
                          text=True, timeout=60)


def test_a_missing_engine_command_is_one_line_naming_what_to_install(fleet, tmp_path):
    fleet.write_config('[agents.bot]\nengine = "gemini"\n')
    fleet.add_agent("bot", "#general")
    done = _supervisor(fleet, str(tmp_path))  # a PATH with no gemini on it
    assert done.returncode == Exit.FAILED
    assert done.stderr.count("\n") == 1, done.stderr
    assert "needs `gemini` on PATH" in done.stderr and "@google/gemini-cli" in done.stderr


def test_a_kimi_that_is_the_archived_kimi_cli_is_refused(fleet, tmp_path):
    """The archived Python kimi-cli prints a deprecation line and exits 0: it must not run turns."""
    old = tmp_path / "kimi"
    old.write_text("#!/bin/sh\necho 'kimi, version 1.49.0'\n")
    old.chmod(0o755)
    fleet.write_config('[agents.bot]\nengine = "kimi"\n')
    fleet.add_agent("bot", "#general")
    done = _supervisor(fleet, f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == Exit.FAILED and done.stderr.count("\n") == 1, done.stderr
    assert "is not Kimi Code" in done.stderr and "@moonshot-ai/kimi-code" in done.stderr


def test_auth_api_without_a_private_key_file_is_refused_at_start(fleet, tmp_path):
    claude = tmp_path / "claude"
    claude.write_text("#!/bin/sh\nexit 0\n")
    claude.chmod(0o755)
    fleet.write_config('[agents.bot]\nengine = "claude"\nauth = "api"\n')
    fleet.add_agent("bot", "#general")
    done = _supervisor(fleet, f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == Exit.FAILED and "no key file at" in done.stderr, done.stderr
    key = fleet.ws.ensure_agent_dir("bot") / "api_key"
    key.write_text("sk-x\n")
    key.chmod(0o644)
    done = _supervisor(fleet, f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == Exit.FAILED and "readable by others" in done.stderr, done.stderr
    assert "sk-x" not in done.stderr


def test_agent_login_runs_the_engines_own_login_in_the_agents_cli_home(fleet, tmp_path):
    """`chatbox agent login NAME` = `supervisor --agent NAME --login`: the CLI (a stand-in that
    prints where it would keep its login) runs with the agent's CLI home as its config dir."""
    import subprocess
    import sys

    from tests.fleet import child_env
    claude = tmp_path / "claude"
    claude.write_text('#!/bin/sh\necho "config=$CLAUDE_CONFIG_DIR args=$*"\n')
    claude.chmod(0o755)
    fleet.write_config('[agents.bot]\nengine = "claude"\n[agents.echo]\nengine = "stub"\n')
    fleet.add_agent("bot", "#general")
    fleet.add_agent("echo", "#general")
    env = child_env(fleet.ws, PATH=f"{tmp_path}:{os.environ['PATH']}")
    done = subprocess.run([sys.executable, "-m", "chatbox", "agent", "login", "bot"], env=env,
                          cwd=fleet.root, capture_output=True, text=True, timeout=60)
    home = fleet.ws.agent_home("bot")
    assert done.returncode == 0, done.stderr
    assert f"config={home / 'claude'} args=" in done.stdout and "/login" in done.stdout
    assert (home.stat().st_mode & 0o777) == 0o700
    stub = subprocess.run([sys.executable, "-m", "chatbox", "agent", "login", "echo"], env=env,
                          cwd=fleet.root, capture_output=True, text=True, timeout=60)
    assert stub.returncode == 1 and "has no login of its own" in stub.stderr
