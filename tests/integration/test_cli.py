"""The `chatbox` CLI as scripts and people use it: real processes against a real broker."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
import typing
from pathlib import Path

import pytest

from chatbox.bus import wire
from chatbox.runtime.config import Engine
from chatbox.runtime.workspace import Workspace
from tests.fleet import child_env, short_tempdir, wait_for

MESSAGE_KEYS = ["seq", "channel", "author", "kind", "title", "body", "in_reply_to", "chain",
                "hop", "tier", "status", "pinned", "turn", "created_at"]
AGENT_KEYS = ["name", "state", "paused", "engine", "subscriptions", "offsets", "last_turn"]
TIMEOUT = 30


def chatbox(ws: Workspace, *args: str, input: str | None = None,
            **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatbox", *args], cwd=ws.root,
                          env=child_env(ws, **env), input=input, capture_output=True,
                          encoding="utf-8", timeout=TIMEOUT)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("chatbox: ") and "Traceback" not in proc.stderr
    return lines[0]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- init

def test_init_creates_a_private_workspace_and_refuses_a_second_init():
    """DESIGN §7: data directory 0700, token file 0600, token never printed; §6 init shape."""
    root = short_tempdir()
    try:
        ws = Workspace(root)
        first = chatbox(ws, "init", "--workspace", str(root), "--human", "carol")
        assert first.returncode == 0, first.stderr
        assert mode(ws.data) == 0o700
        assert mode(ws.admin_token_path) == 0o600
        token = ws.admin_token_path.read_text(encoding="utf-8").strip()
        assert token and token not in first.stdout + first.stderr
        assert str(ws.admin_token_path) in first.stdout
        second = chatbox(ws, "init", "--workspace", str(root))
        assert second.returncode == 1
        assert "already" in one_error_line(second)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- post and read

def test_post_and_read_round_trip_with_exactly_the_documented_json_fields(fleet):
    """DESIGN §6: `post --json` prints the stored message; `read --json` one object per line."""
    posted = chatbox(fleet.ws, "post", "#general", "hello there", "--json")
    assert posted.returncode == 0, posted.stderr
    (stored,) = json_lines(posted.stdout)
    assert list(stored) == MESSAGE_KEYS
    assert (stored["channel"], stored["author"], stored["kind"], stored["body"]) == (
        "#general", "alice", "chat", "hello there")
    titled = chatbox(fleet.ws, "post", "#general", "the plan", "--title", "Plan", "--type",
                     "proposal", "--tier", "1", "--json")
    assert titled.returncode == 0, titled.stderr
    read = chatbox(fleet.ws, "read", "#general", "--json")
    assert read.returncode == 0, read.stderr
    rows = json_lines(read.stdout)
    assert [list(r) for r in rows] == [MESSAGE_KEYS, MESSAGE_KEYS]
    assert rows[0] == stored
    assert (rows[1]["kind"], rows[1]["title"], rows[1]["tier"]) == ("post", "Plan", 1)
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)


def test_read_honours_since_and_limit_oldest_first(fleet):
    """DESIGN §6: `read CHANNEL [--since SEQ] [--limit N]` is history, oldest first."""
    seqs = [fleet.post("#general", f"m{i}").seq for i in range(5)]
    proc = chatbox(fleet.ws, "read", "#general", "--since", str(seqs[1]), "--limit", "2",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert [m["seq"] for m in json_lines(proc.stdout)] == seqs[2:4]


def test_reply_shows_indented_and_a_reply_to_a_reply_is_refused(fleet):
    """DESIGN §3: in_reply_to is one level; a reply to a reply is refused naming the field."""
    root = fleet.post("#general", "question")
    reply = chatbox(fleet.ws, "post", "#general", "answer", "--reply-to", str(root.seq))
    assert reply.returncode == 0, reply.stderr
    assert reply.stdout.startswith("  ↳ #") and f"(re #{root.seq})" in reply.stdout
    reply_seq = fleet.read("#general")[-1].seq
    nested = chatbox(fleet.ws, "post", "#general", "deeper", "--reply-to", str(reply_seq))
    assert nested.returncode == 1
    line = one_error_line(nested)
    assert "reply" in line and "in_reply_to" in line


@pytest.mark.parametrize(("channel", "body", "expect"), [
    ("general", "hi", "is invalid"),
    ("#nowhere", "hi", "no channel #nowhere"),
    ("#general", "x" * (64 * 1024 + 1), "over the limit"),
], ids=["invalid-name", "unknown-channel", "oversize-body"])
def test_bad_posts_are_refused_with_one_line_naming_the_problem(fleet, channel, body, expect):
    """DESIGN §3: violations get a clear error naming the field, never a crash (body via stdin)."""
    proc = chatbox(fleet.ws, "post", channel, "-", input=body)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert expect in line
    assert "field: " in line


def test_a_bad_token_is_refused_as_unknown_or_revoked(fleet):
    """DESIGN §7 admission: CHATBOX_TOKEN overrides the token file; a garbage one is refused."""
    proc = chatbox(fleet.ws, "read", "#general", CHATBOX_TOKEN="garbage")
    assert proc.returncode == 1
    assert "unknown or revoked token" in one_error_line(proc)


def test_a_broker_that_is_not_running_exits_3_saying_how_to_start_it(bare_fleet):
    """DESIGN §6: exit 3 means the broker is unreachable."""
    proc = chatbox(bare_fleet.ws, "post", "#general", "anyone?")
    assert proc.returncode == 3
    line = one_error_line(proc)
    assert "not running" in line and "chatbox broker" in line


def test_usage_errors_exit_2_with_one_line(fleet):
    """DESIGN §6: exit 2 is a bad command line; still one line on stderr."""
    proc = chatbox(fleet.ws, "read", "#general", "--limit", "zero")
    assert proc.returncode == 2
    assert "--limit" in one_error_line(proc)
    assert chatbox(fleet.ws, "frobnicate").returncode == 2


def test_the_turn_id_from_the_environment_is_carried_on_the_post(fleet):
    """DESIGN §5: a post made inside a turn carries its turn id; a finished turn's is refused."""
    fleet.add_agent("kimi")
    proc = chatbox(fleet.ws, "post", "#general", "late", "--as", "kimi", CHATBOX_TURN_ID="99")
    assert proc.returncode == 1
    assert "turn 99" in one_error_line(proc)


# --------------------------------------------------------------------------- agents

def test_agent_add_writes_a_private_token_and_appends_its_config_section_once(fleet):
    """DESIGN §8: agent add creates the principal and appends [agents.NAME] when none exists."""
    before = fleet.ws.config_path.read_text(encoding="utf-8")
    proc = chatbox(fleet.ws, "agent", "add", "kimi", "--engine", "kimi", "--subscribe",
                   "#general", "#dispatch", "--wake", "mentions")
    assert proc.returncode == 0, proc.stderr
    token_path = fleet.ws.agent_token_path("kimi")
    assert mode(token_path) == 0o600
    assert str(token_path) in proc.stdout
    assert token_path.read_text(encoding="utf-8").strip() not in proc.stdout
    after = fleet.ws.config_path.read_text(encoding="utf-8")
    assert after.startswith(before)  # appended, never rewritten
    assert tomllib.loads(after)["agents"]["kimi"]["engine"] == "kimi"
    again = chatbox(fleet.ws, "agent", "add", "kimi")
    assert again.returncode == 1
    assert "already exists" in one_error_line(again)
    assert fleet.ws.config_path.read_text(encoding="utf-8").splitlines().count(
        "[agents.kimi]") == 1
    shown = chatbox(fleet.ws, "agent", "show", "kimi", "--json")
    (agent,) = json_lines(shown.stdout)
    assert list(agent) == AGENT_KEYS
    assert {s["channel"]: s["wake"] for s in agent["subscriptions"]} == {
        "#general": "mentions", "#dispatch": "mentions"}


def test_an_existing_config_section_is_left_alone(fleet):
    """DESIGN §8: a section already in chatbox.toml is not duplicated or rewritten."""
    fleet.write_config('[agents.echo]\nengine = "stub"\nstub = { delay = 0.5 }\n')
    proc = chatbox(fleet.ws, "agent", "add", "echo", "--engine", "claude")
    assert proc.returncode == 0, proc.stderr
    assert fleet.ws.config_path.read_text(encoding="utf-8") == (
        '[agents.echo]\nengine = "stub"\nstub = { delay = 0.5 }\n')


def test_post_as_an_agent_is_authored_by_that_agent(fleet):
    """DESIGN §6: the CLI acts as the human unless --as names an agent whose token it can read."""
    fleet.add_agent("kimi")
    proc = chatbox(fleet.ws, "post", "#general", "hi from kimi", "--as", "kimi", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[0]["author"] == "kimi"
    nobody = chatbox(fleet.ws, "post", "#general", "hi", "--as", "ghost")
    assert nobody.returncode == 1
    assert "ghost" in one_error_line(nobody)


@pytest.mark.parametrize("name", ["kimi\n", "Kimi", "../kimi"])
def test_as_a_name_that_is_not_a_whole_valid_name_is_a_usage_error(fleet, name):
    """DESIGN §3: names match the wire's pattern as whole strings ("kimi\\n" is no name)."""
    fleet.add_agent("kimi")
    proc = chatbox(fleet.ws, "post", "#general", "hi", "--as", name)
    assert proc.returncode == 2
    assert "not a valid agent name" in one_error_line(proc)
    assert fleet.read("#general") == []


def test_agent_add_offers_the_configs_engines_and_the_wires_wake_modes(fleet):
    """Issue 12 item 4: engines and wake modes are each one Literal, not repeated by the CLI."""
    proc = chatbox(fleet.ws, "agent", "add", "--help")
    text = " ".join(proc.stdout.split())
    assert "{" + ",".join(typing.get_args(Engine)) + "}" in text
    assert "{" + ",".join(typing.get_args(wire.WakeMode)) + "}" in text


def test_agent_list_pause_resume_and_revoke(fleet):
    """DESIGN §5/§7: a human pauses and resumes; revocation takes effect at once."""
    fleet.add_agent("kimi")
    paused = chatbox(fleet.ws, "agent", "pause", "kimi", "--reason", "too chatty", "--json")
    assert paused.returncode == 0, paused.stderr
    assert json_lines(paused.stdout)[0]["paused"] is True
    listed = chatbox(fleet.ws, "agent", "list", "--json")
    assert [(a["name"], a["paused"]) for a in json_lines(listed.stdout)] == [("kimi", True)]
    assert chatbox(fleet.ws, "agent", "resume", "kimi").returncode == 0
    assert fleet.agent("kimi").paused is False
    token = fleet.ws.read_token(fleet.ws.agent_token_path("kimi"))
    assert chatbox(fleet.ws, "agent", "revoke", "kimi").returncode == 0
    old = chatbox(fleet.ws, "post", "#general", "old token?", CHATBOX_TOKEN=token)
    assert old.returncode == 1 and "unknown or revoked token" in one_error_line(old)
    after = chatbox(fleet.ws, "post", "#general", "still here?", "--as", "kimi")
    assert after.returncode == 1
    assert not fleet.ws.agent_token_path("kimi").exists()  # revocation removes the token file
    assert "no token file" in one_error_line(after)


def test_an_agent_may_not_add_agents(fleet):
    """DESIGN §7: adding principals is for a human or admin."""
    fleet.add_agent("kimi")
    proc = chatbox(fleet.ws, "agent", "add", "mallory", "--as", "kimi")
    assert proc.returncode == 1
    assert "only a human or admin" in one_error_line(proc)


# --------------------------------------------------------------------------- tail

class Tail:
    """`chatbox tail` as a child process with its output in files (no blocking reads)."""

    def __init__(self, ws: Workspace, *args: str):
        self.out_path = ws.root / "logs" / "tail.out"
        self.err_path = ws.root / "logs" / "tail.err"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "chatbox", "tail", *args],
                                      cwd=ws.root, env=child_env(ws), stdin=subprocess.DEVNULL,
                                      stdout=self._out, stderr=self._err)

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8")

    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8")

    def wait_ready(self) -> None:
        def ready():
            if self.popen.poll() is not None:
                raise AssertionError(f"tail exited {self.popen.returncode}: {self.stderr()}")
            return "tailing" in self.stderr()
        wait_for(ready, timeout=15, what="tail to subscribe")

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self._out.close()
        self._err.close()


def test_tail_shows_a_post_made_by_another_process(fleet):
    """DESIGN §4.6: live updates are pushed over the bus (subscribe, snapshot, then events)."""
    fleet.post("#general", "before the tail")
    tail = Tail(fleet.ws, "#general", "#dispatch", "--count", "2", "--json")
    try:
        tail.wait_ready()
        posted = chatbox(fleet.ws, "post", "#dispatch", "live one", "--json")
        assert posted.returncode == 0, posted.stderr
        fleet.post("#general", "live two")
        assert tail.popen.wait(timeout=15) == 0, tail.stderr()
        rows = json_lines(tail.stdout())
        assert [(r["channel"], r["body"]) for r in rows] == [
            ("#dispatch", "live one"), ("#general", "live two")]
        assert list(rows[0]) == MESSAGE_KEYS
    finally:
        tail.close()


def test_tail_since_prints_history_first(fleet):
    """DESIGN §6: `tail --since SEQ` prints the history after SEQ (in seq order), then follows."""
    first = fleet.post("#general", "old one")
    fleet.post("#general", "old two")
    fleet.post("#dispatch", "old three")
    fleet.post("#general", "old four")
    tail = Tail(fleet.ws, "#general", "#dispatch", "--since", str(first.seq), "--count", "4")
    try:
        tail.wait_ready()
        fleet.post("#dispatch", "new five")
        assert tail.popen.wait(timeout=15) == 0, tail.stderr()
        lines = tail.stdout().splitlines()
        assert [line.split(": ", 1)[1] for line in lines] == [
            "old two", "old three", "old four", "new five"]
    finally:
        tail.close()


def first_line(pipe: typing.IO[bytes], timeout: float) -> bytes:
    """The first line a child writes to ``pipe``, read the moment it comes (the pipe, not a
    polled file); :class:`AssertionError` if none within ``timeout`` seconds."""
    got, deadline = b"", time.monotonic() + timeout
    while b"\n" not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"no line within {timeout:g}s: {got!r}"
        if select.select([pipe], [], [], left)[0]:
            chunk = os.read(pipe.fileno(), 4096)
            assert chunk, f"closed before a line: {got!r}"
            got += chunk
    return got


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_tail_exits_quietly_on_interrupt(fleet, sig):
    """DESIGN §6: tail follows until interrupted; Ctrl-C (or a TERM) is a normal end, not an
    error. The poll watches the signals' descriptor: a Ctrl-C just before it blocked once
    left the tail waiting for an event that never came. The signal is sent the moment the
    "tailing" line comes, several times over: a TERM that followed the line before the
    handlers were installed once ended the tail by the default action (-15)."""
    for _ in range(8):
        tail = subprocess.Popen([sys.executable, "-m", "chatbox", "tail", "#general"],
                                cwd=fleet.ws.root, env=child_env(fleet.ws),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            line = first_line(tail.stderr, 15)
            tail.send_signal(sig)
            assert tail.wait(timeout=15) == 0
            err = (line + tail.stderr.read()).decode()
            assert "Traceback" not in err
            assert [x for x in err.splitlines() if not x.startswith("tailing")] == []
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait(5)
            tail.stderr.close()


def test_tail_of_an_unknown_channel_is_refused(fleet):
    """DESIGN §3: a channel that does not exist is a clear error, not a silent wait."""
    proc = subprocess.run([sys.executable, "-m", "chatbox", "tail", "#nowhere"], cwd=fleet.root,
                          env=child_env(fleet.ws), capture_output=True, encoding="utf-8",
                          timeout=TIMEOUT)
    assert proc.returncode == 1
    assert "no channel #nowhere" in one_error_line(proc)


# --------------------------------------------------------------------------- output safety

def test_control_characters_are_escaped_in_human_output(fleet):
    """DESIGN §6: untrusted text is made safe for the terminal; newlines stay, indented."""
    body = "clear \x1b[2J now\nsecond\rline \x07 \u202eevil"
    # a title takes no control character at all (issue 13), but a bidi override is not one
    fleet.post("#general", body, title="t\u202dit\u202ele", kind="post")
    proc = chatbox(fleet.ws, "read", "#general")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out and "\u202e" not in out
    assert "\u202d" not in out and "\\u202d" in out
    assert "\\x1b[2J" in out and "\\u202e" in out
    lines = out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("    clear") and lines[2].startswith("    ")


# --------------------------------------------------------------------------- channels

def test_channel_create_needs_a_topic(fleet):
    """DESIGN §6: `channel create CHANNEL --topic TEXT`; an ad-hoc channel needs a topic."""
    missing = chatbox(fleet.ws, "channel", "create", "#design")
    assert missing.returncode == 2
    assert "--topic" in one_error_line(missing)
    empty = chatbox(fleet.ws, "channel", "create", "#design", "--topic", " ")
    assert empty.returncode == 1
    assert "topic" in one_error_line(empty)
    made = chatbox(fleet.ws, "channel", "create", "#design", "--topic", "how it looks")
    assert made.returncode == 0, made.stderr
    fleet.post("#design", "first")
    rooms = json_lines(chatbox(fleet.ws, "channel", "list", "--json").stdout)
    design = next(r for r in rooms if r["name"] == "#design")
    assert (design["topic"], design["unread"]) == ("how it looks", 0)  # own post is not unread


def test_a_human_creates_a_standing_channel_and_an_agent_may_not(fleet):
    """`channel create --standing`: a standing channel, for humans and admins to make."""
    fleet.add_agent("kimi")
    denied = chatbox(fleet.ws, "channel", "create", "#phase-2", "--topic", "t", "--standing",
                     "--as", "kimi")
    assert denied.returncode == 1
    assert "standing" in one_error_line(denied)
    made = chatbox(fleet.ws, "channel", "create", "#phase-2", "--topic", "the second phase",
                   "--standing", "--json")
    assert made.returncode == 0, made.stderr
    assert json_lines(made.stdout)[0]["kind"] == "standing"
    both = chatbox(fleet.ws, "channel", "create", "#x", "--topic", "t", "--standing", "--private")
    assert both.returncode == 2


def test_channel_list_counts_unread_messages(fleet):
    """DESIGN §6: `channel list` shows rooms with unread counts."""
    fleet.add_agent("kimi")
    fleet.agent_client("kimi").call(wire.Post(channel="#general", body="news"))
    proc = chatbox(fleet.ws, "channel", "list")
    assert proc.returncode == 0, proc.stderr
    general = next(line for line in proc.stdout.splitlines() if "#general" in line)
    assert "1 unread" in general


# --------------------------------------------------------------------------- decisions, status

def test_a_human_approves_an_agents_tier_2_post_and_an_agent_may_not(fleet):
    """DESIGN §5 tier-2 hard stop: only a human decides; the decision is a reply in the thread."""
    fleet.add_agent("kimi")
    asked = chatbox(fleet.ws, "post", "#general", "may I deploy?", "--title", "Deploy",
                    "--tier", "2", "--as", "kimi", "--json")
    assert asked.returncode == 0, asked.stderr
    seq = str(json_lines(asked.stdout)[0]["seq"])
    by_agent = chatbox(fleet.ws, "approve", seq, "--as", "kimi")
    assert by_agent.returncode == 1
    assert "human" in one_error_line(by_agent)
    assert chatbox(fleet.ws, "deny", seq).returncode == 2  # --reason is required
    approved = chatbox(fleet.ws, "approve", seq, "--json")
    assert approved.returncode == 0, approved.stderr
    decision = json_lines(approved.stdout)[0]
    assert (decision["kind"], decision["in_reply_to"]) == ("decision", int(seq))


def test_status_json_names_the_broker_workspace_and_agents(fleet):
    """DESIGN §6: `status` shows broker pid, workspace, last seq and agents with state."""
    fleet.add_agent("kimi")
    last = fleet.post("#general", "hi").seq
    proc = chatbox(fleet.ws, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    (st,) = json_lines(proc.stdout)
    assert st["pid"] == fleet.broker.pid
    assert Path(st["workspace"]) == fleet.ws.root
    assert st["last_seq"] == last
    # the post woke kimi, and no supervisor has claimed it yet
    assert [(a["name"], a["state"]) for a in st["agents"]] == [("kimi", "WAKING")]
    assert list(st["agents"][0]) == AGENT_KEYS
    human = chatbox(fleet.ws, "status")
    assert human.returncode == 0 and str(fleet.broker.pid) in human.stdout


def test_workspace_flag_overrides_the_environment(fleet):
    """DESIGN §6: --workspace DIR beats CHATBOX_WORKSPACE."""
    env = child_env(fleet.ws, CHATBOX_WORKSPACE=os.devnull)
    proc = subprocess.run([sys.executable, "-m", "chatbox", "--workspace", str(fleet.root),
                           "status", "--json"], cwd="/", env=env, capture_output=True,
                          encoding="utf-8", timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    lost = subprocess.run([sys.executable, "-m", "chatbox", "status"], cwd="/", env=env,
                          capture_output=True, encoding="utf-8", timeout=TIMEOUT)
    assert lost.returncode == 1
    one_error_line(lost)
