"""Faults around a turn, for real (issue 8): a full disk, a revoked agent. Nothing wedges: the
supervisor retries a transient refusal with the same idempotency key until it lands, and a
revoked agent's turn ends and its supervisor exits with one line.

The full disk is a small tmpfs mounted on the workspace's data directory (the logs stay on the
ordinary disk), filled to the last byte by a file the test then deletes; without the right to
mount, those tests are skipped with the reason."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatbox.bus import wire
from chatbox.runtime.exits import Exit
from tests.fleet import Fleet, child_env, short_tempdir, wait_for

CONFIG = """
[limits]
kill_grace_seconds = 0.5
[agents.worker]
engine = "stub"
stub = { behaviour = "reply" }
env = ["CHATBOX_STUB_GATE"]
limits = { max_turn_seconds = 60.0 }
"""


@pytest.fixture
def small_disk():
    """A fleet (no process started) whose data directory is an 8 MiB tmpfs."""
    root = short_tempdir()
    data = root / ".chatbox"
    data.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs",
                              str(data)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot mount a small tmpfs for a full disk: {mounted.stderr.strip()}")
    fleet = None
    try:
        fleet = Fleet(root)
        yield fleet
    finally:
        try:
            if fleet is not None:
                fleet.close()
        finally:
            subprocess.run(["umount", "-l", str(data)], check=False)
            shutil.rmtree(root, ignore_errors=True)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of ``directory``'s file system."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def replies(fleet: Fleet, agent: str) -> list[wire.Message]:
    return [m for m in fleet.read("#general") if m.author == agent]


def test_a_report_refused_while_the_disk_is_full_is_retried_until_it_lands(small_disk):
    fleet = small_disk
    fleet.write_config(CONFIG)
    fleet.start_broker()
    fleet.add_agent("worker", "#general")
    held = fleet.held_turn("worker", "answer me once")
    gate, sup, post = held.gate, held.supervisor, held.post
    filler = fill(fleet.ws.data)
    gate.open()  # the turn ends while nothing can be stored: its report is refused `store`
    fleet.broker.wait_log("commit_failed")
    retry = sup.wait_log("retrying", code="store")
    assert retry["what"].startswith("turn ")
    filler.unlink()  # space returns: the same report lands, once
    wait_for(lambda: fleet.agent("worker").state == "ASLEEP", timeout=15,
             what="the report to land once the disk has room")
    info = fleet.agent("worker")
    assert info.last_turn.outcome == "ok" and info.last_turn.batch == [post.seq]
    assert len(replies(fleet, "worker")) == 1
    assert sup.returncode is None  # still serving


def test_a_supervisor_started_on_a_full_disk_waits_for_room_then_runs_the_turn(small_disk):
    """Its Hello is refused `store`; it says hello again until it lands, then claims."""
    fleet = small_disk
    fleet.write_config(CONFIG)
    fleet.start_broker()
    fleet.add_agent("worker", "#general")
    post = fleet.post("#general", "waiting for a supervisor")
    filler = fill(fleet.ws.data)
    gate, env = fleet.gate()
    gate.open()
    sup = fleet.spawn_supervisor("worker", env=env)
    assert sup.wait_log("retrying", code="store")["what"] == "hello"
    filler.unlink()
    sup.wait_ready()
    wait_for(lambda: len(replies(fleet, "worker")) == 1, timeout=15, what="the turn's reply")
    wait_for(lambda: fleet.agent("worker").state == "ASLEEP", what="worker to sleep")
    assert fleet.agent("worker").last_turn.batch == [post.seq]


def test_revoking_an_agent_mid_turn_ends_the_turn_and_its_supervisor_exits_with_one_line(fleet):
    fleet.write_config(CONFIG)
    fleet.stop_broker()
    fleet.start_broker()  # reads the config above
    fleet.add_agent("worker", "#general")
    held = fleet.held_turn("worker", "a turn that will not be reported")
    gate, sup = held.gate, held.supervisor
    fleet.client().call(wire.Revoke(name="worker"))
    info = fleet.agent("worker")
    assert info.revoked and info.state == "ASLEEP" and info.supervisor is None
    assert (info.last_turn.outcome, info.last_turn.cause) == ("lost", "revoked")
    gate.open()  # the turn ends; its report is refused `unauthorized`
    assert sup.popen.wait(20) == Exit.FAILED
    said = [line for line in sup.log_text().splitlines() if line.startswith("supervisor: ")]
    assert len(said) == 1 and "revoked" in said[0], said
    assert replies(fleet, "worker") == []


# ------------------------------------------------------------------ a read-only workspace

def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount for a read-only workspace: {done.stderr.strip()}")


def _one_line(text: str, prog: str) -> str:
    said = [line for line in text.splitlines() if line.startswith(f"{prog}: ")]
    assert len(said) == 1 and "Traceback" not in text, text
    return said[0]


def test_a_broker_on_a_read_only_workspace_is_one_line_and_exit_failed(small_disk):
    fleet = small_disk
    _mount("-o", "remount,ro", str(fleet.ws.data))
    done = subprocess.run([sys.executable, "-m", "chatbox.broker"], env=child_env(fleet.ws),
                          cwd=fleet.root, capture_output=True, text=True, timeout=60)
    assert done.returncode == Exit.FAILED, done.stderr
    assert "Read-only file system" in _one_line(done.stderr, "broker")


def test_agent_add_where_tokens_cannot_be_written_is_a_refusal_not_an_internal_error(fleet):
    agents = fleet.ws.data / "agents"
    _mount("-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(agents))
    try:
        done = subprocess.run([sys.executable, "-m", "chatbox", "agent", "add", "bob"],
                              env=child_env(fleet.ws), cwd=fleet.root, capture_output=True,
                              text=True, timeout=60)
    finally:
        subprocess.run(["umount", "-l", str(agents)], check=False)
    assert done.returncode == Exit.FAILED, done.stderr
    line = _one_line(done.stderr, "chatbox")
    assert "internal error" not in line and "Read-only file system" in line, line
    assert "bob" not in fleet.agents()  # refused whole: no agent without its token


def test_a_socket_file_that_cannot_be_removed_at_stop_is_one_line(bare_fleet):
    fleet = bare_fleet
    socks = fleet.root / "socks"
    socks.mkdir(mode=0o700)
    _mount("-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(socks))
    try:
        fleet.write_config(f'[bus]\nrequest = "ipc://{socks}/r.sock"\n'
                           f'events = "ipc://{socks}/e.sock"\n')
        broker = fleet.start_broker()
        _mount("-o", "remount,ro", str(socks))
        assert broker.stop() == Exit.FAILED
        assert "Read-only file system" in _one_line(broker.log_text(), "broker")
    finally:
        subprocess.run(["umount", "-l", str(socks)], check=False)
