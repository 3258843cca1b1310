"""A turn acts only as its agent (DESIGN §7, issue 13): every turn runs in bubblewrap. A real
`command` turn, an attacker's script, tries what the issue found it could do: read the admin
token and another agent's, rewrite chatbox.toml, and leave a `setsid` grandchild behind a
`kill -9` of its supervisor — against a real broker and supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from chatbox.runtime.exits import Exit
from tests.fleet import child_env, wait_for

PROBE = r'''
import json, os, sys
ws = os.environ["CHATBOX_WORKSPACE"]
def can_read(path):
    try:
        open(os.path.join(ws, path)).read()
        return True
    except OSError as exc:
        return exc.__class__.__name__
def can_write(path):
    try:
        with open(os.path.join(ws, path), "a") as fh:
            fh.write("\nmax_hops = 100\n")
        return True
    except OSError as exc:
        return exc.__class__.__name__
print(json.dumps({"admin": can_read(".chatbox/token"), "other": can_read(".chatbox/agents/bob.token"),
                  "db": can_read(".chatbox/chatbox.db"), "own": can_read(".chatbox/agents/eve.token"),
                  "toml": can_write("chatbox.toml"), "work": can_write("notes.txt"),
                  "trail": can_write("dispatch_comms.jsonl"),
                  "pid": os.getpid()}))
'''


def config(command: list[str], **extra: str) -> str:
    lines = ['[agents.eve]', 'engine = "command"', 'reply = true',
             "command = [" + ", ".join(f'"{a}"' for a in command) + "]"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def test_a_turn_cannot_read_the_admin_token_or_rewrite_the_config_or_the_trail(fleet):
    script = Path(fleet.root) / "probe.py"
    script.write_text(PROBE)
    fleet.write_config(config([sys.executable, "-I", "-S", str(script)]))
    fleet.add_agent("eve", "#general")
    fleet.add_agent("bob", "#general")
    fleet.start_supervisor("eve")
    before = fleet.ws.config_path.read_text()
    fleet.post("#general", "@eve look around")
    reply = wait_for(lambda: next((m for m in fleet.read("#general") if m.author == "eve"), None),
                     timeout=30, what="eve's report")
    import json
    seen = json.loads(reply.body)
    assert seen["admin"] == "FileNotFoundError" and seen["other"] == "FileNotFoundError"
    assert seen["db"] == "FileNotFoundError"
    assert seen["own"] is True            # its own token, read-only
    assert seen["toml"] == "OSError"      # read-only file system
    assert seen["trail"] == "OSError"     # the dispatch trail is the broker's to write
    assert seen["work"] is True           # the workspace is the agent's to work on
    assert seen["pid"] < 10               # its own PID namespace
    assert fleet.ws.config_path.read_text() == before
    assert "max_hops = 100" in (Path(fleet.root) / "notes.txt").read_text()


def processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def test_nothing_a_turn_started_outlives_a_kill_9_of_its_supervisor(fleet):
    marker = "314159"
    script = Path(fleet.root) / "escape.sh"
    script.write_text(f"#!/bin/sh\nsetsid sleep {marker} </dev/null >/dev/null 2>&1 &\n"
                      "echo started > \"$CHATBOX_WORKSPACE/escaped\"\nexec sleep 600\n")
    script.chmod(0o755)
    fleet.write_config(config([str(script)]))
    fleet.add_agent("eve", "#general")
    sup = fleet.start_supervisor("eve")
    fleet.post("#general", "@eve run away")
    wait_for(lambda: (Path(fleet.root) / "escaped").exists(), timeout=30, what="the turn")

    assert wait_for(lambda: processes_with(marker), timeout=10, what="the setsid grandchild")
    os.kill(sup.pid, signal.SIGKILL)
    wait_for(lambda: not processes_with(marker), timeout=15,
             what="the grandchild to die with the sandbox")


# a supervisor's turn start, through the supervisor's own builder and runner, by a process that
# is SIGKILLed the moment the turn's process exists: before bubblewrap has set anything up
DIES_AS_THE_TURN_STARTS = r'''
import os, signal, sys
from chatbox.runtime.config import load
from chatbox.runtime.workspace import Workspace
from chatbox.supervisor.capped import run_capped
from chatbox.supervisor.turn import TurnRunner
ws = Workspace.find(sys.argv[1])
config = load(ws.config_path)
spec, _ = TurnRunner("eve", config.agent("eve"), config.limits_for("eve"), ws).build(1, [])
run_capped(spec, on_start=lambda pid: os.kill(os.getpid(), signal.SIGKILL))
'''


def test_nothing_outlives_a_supervisor_killed_while_the_sandbox_is_set_up(fleet):
    marker = f"sandbox-set-up-{Path(fleet.root).name}"  # this run's alone
    fleet.write_config(config([sys.executable, "-I", "-S", "-c", "import signal; signal.pause()",
                               marker]))
    fleet.add_agent("eve", "#general")
    for _ in range(5):  # each time the supervisor dies as bubblewrap starts
        died = subprocess.run([sys.executable, "-c", DIES_AS_THE_TURN_STARTS, str(fleet.root)],
                              env=child_env(fleet.ws), capture_output=True, text=True,
                              timeout=60)
        assert died.returncode == -signal.SIGKILL, died.stderr
        wait_for(lambda: not processes_with(marker), timeout=15,
                 what="the sandbox and its turn to end with their supervisor")


def test_without_a_sandbox_the_supervisor_refuses_to_run_turns(fleet, tmp_path):
    fleet.write_config('[agents.eve]\nengine = "stub"\n')
    fleet.add_agent("eve", "#general")
    done = subprocess.run([sys.executable, "-m", "chatbox.supervisor", "--agent", "eve"],
                          env=child_env(fleet.ws, PATH=str(tmp_path)), cwd=fleet.root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == Exit.FAILED and done.stderr.count("\n") == 1, done.stderr
    assert "the turn sandbox needs bubblewrap" in done.stderr


def test_sandbox_none_is_a_deliberate_opt_out_logged_at_start(fleet):
    fleet.write_config('[agents.eve]\nengine = "stub"\nsandbox = "none"\n')
    fleet.add_agent("eve", "#general")
    sup = fleet.start_supervisor("eve")
    assert "unconfined" in sup.wait_log("sandbox_disabled")["hint"]


ATTACK = r'''
import json, os, subprocess, sys
chatbox = sys.argv[1]
def run(*args):
    return subprocess.run([chatbox, *args], capture_output=True, text=True)
posted = run("post", "--as", "eve", "--json", "#general", "may I deploy?", "--title", "Deploy",
             "--type", "proposal", "--tier", "2")
seq = json.loads(posted.stdout)["seq"] if posted.returncode == 0 else None
approved = run("approve", str(seq)) if seq else None
print(json.dumps({"posted": seq, "approve_exit": approved and approved.returncode,
                  "approve_said": approved and approved.stderr.strip()}))
'''


def test_a_turn_cannot_approve_its_own_tier2_post(fleet):
    """The issue's attack: a command turn posted a tier-2 post and ran `chatbox approve` on it
    with the admin token it read. In the sandbox the CLI finds only the agent's own token: it
    may post as itself, and its approve is refused."""
    chatbox = os.path.join(os.path.dirname(sys.executable), "chatbox")
    script = Path(fleet.root) / "attack.py"
    script.write_text(ATTACK)
    fleet.write_config(config([sys.executable, "-I", "-S", str(script), chatbox],
                              env='["PATH"]'))
    fleet.add_agent("eve", "#general")
    fleet.start_supervisor("eve")
    fleet.post("#general", "@eve go ahead and try")
    import json
    reply = wait_for(lambda: next((m for m in fleet.read("#general")
                                   if m.author == "eve" and m.kind == "reply"), None),
                     timeout=30, what="eve's report")
    seen = json.loads(reply.body)
    assert seen["posted"] and seen["approve_exit"] == 1, seen
    assert "token" in seen["approve_said"], seen
    from chatbox.bus import wire
    post = fleet.client().call(wire.GetPost(seq=seen["posted"])).post
    assert (post.author, post.status) == ("eve", "pending")


def test_a_cli_home_outside_the_workspace_is_writable_in_the_sandbox(fleet, tmp_path):
    """`home` may point anywhere: the sandbox binds it writable (it is the agent's own)."""
    home = tmp_path / "eve-home"
    fleet.write_config(config([sys.executable, "-I", "-S", "-c",
                               "import os; p = os.path.join(os.environ['HOME'], 'kept'); "
                               "open(p, 'w').write('ok'); print(os.environ['HOME'])"],
                              home=f'"{home}"'))
    fleet.add_agent("eve", "#general")
    fleet.start_supervisor("eve")
    fleet.post("#general", "@eve write at home")
    reply = wait_for(lambda: next((m for m in fleet.read("#general") if m.author == "eve"), None),
                     timeout=30, what="eve's reply")
    assert reply.body == str(home) and (home / "kept").read_text() == "ok"


SECRETS = r'''
import json, os, sys
def can_read(path):
    try:
        with open(path) as fh:
            fh.read()
        return True
    except OSError as exc:
        return exc.__class__.__name__
ws = os.environ["CHATBOX_WORKSPACE"]
with open(os.path.join(ws, "mine.txt"), "w") as fh:
    fh.write("kept")
print(json.dumps({"other_token": can_read(sys.argv[1]), "home_key": can_read(sys.argv[2]),
                  "home_listed": os.path.isdir(os.path.dirname(sys.argv[2])),
                  "mine": can_read(os.path.join(ws, "mine.txt")),
                  "own": can_read(os.path.join(ws, ".chatbox/agents/eve.token")),
                  "tmp_writable": os.access("/tmp", os.W_OK)}))
'''


def test_a_turn_cannot_read_another_workspace_or_the_operators_home(fleet, tmp_path):
    """The rest of the file system is not the turn's: a second workspace on this host (its
    admin token acts as that workspace's human) and the operator's home (~/.ssh) are not there;
    the system, the Python that runs the turn and its own workspace are."""
    from chatbox.broker.bootstrap import init_workspace
    from chatbox.runtime.workspace import Workspace

    other = Workspace(tmp_path / "other")
    init_workspace(other, "mallory")
    operator = tmp_path / "operator"
    key = operator / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True, mode=0o700)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    script = Path(fleet.root) / "look_further.py"
    script.write_text(SECRETS)
    fleet.write_config(config([sys.executable, "-I", "-S", str(script),
                               str(other.data / "token"), str(key)]))
    fleet.add_agent("eve", "#general")
    fleet.start_supervisor("eve", env=child_env(fleet.ws, HOME=str(operator)))
    fleet.post("#general", "@eve look further")
    reply = wait_for(lambda: next((m for m in fleet.read("#general") if m.author == "eve"), None),
                     timeout=30, what="eve's report")
    import json
    seen = json.loads(reply.body)
    assert seen["other_token"] == "FileNotFoundError", seen
    assert seen["home_key"] == "FileNotFoundError" and seen["home_listed"] is False, seen
    assert seen["mine"] is True and seen["own"] is True, seen
    assert seen["tmp_writable"] is True, seen   # an empty /tmp of its own
    assert (Path(fleet.root) / "mine.txt").read_text() == "kept"


def test_a_program_installed_outside_the_system_runs_from_its_install_tree(fleet, tmp_path):
    """An engine found through PATH, by a symlink, into a prefix outside the system (as
    deploy/engines/install.sh lays one out: PREFIX/bin/NAME runs PREFIX/lib/...): its tree is
    bound back, and what lies beside it is not."""
    prefix = tmp_path / "tools"
    (prefix / "lib").mkdir(parents=True)
    (prefix / "lib" / "tool.py").write_text(
        "import os, sys\n"
        "print(open(os.path.join(os.path.dirname(__file__), 'answer')).read(),\n"
        "      os.path.exists(sys.argv[1]))\n")
    (prefix / "lib" / "answer").write_text("42")
    (prefix / "bin").mkdir()
    tool = prefix / "bin" / "tool"
    tool.write_text('#!/bin/sh\nroot=$(dirname -- "$(dirname -- "$(readlink -f -- "$0")")")\n'
                    f'exec {sys.executable} -I -S "$root/lib/tool.py" "$@"\n')
    tool.chmod(0o755)
    on_path = tmp_path / "path"
    on_path.mkdir()
    (on_path / "tool").symlink_to(tool)
    beside = tmp_path / "beside.txt"
    beside.write_text("not the turn's")
    fleet.write_config(config(["tool", str(beside)]))
    fleet.add_agent("eve", "#general")
    fleet.start_supervisor("eve", env=child_env(
        fleet.ws, PATH=f"{on_path}:{os.environ.get('PATH', '/usr/bin:/bin')}"))
    fleet.post("#general", "@eve use your tool")
    reply = wait_for(lambda: next((m for m in fleet.read("#general") if m.author == "eve"), None),
                     timeout=30, what="eve's reply")
    assert reply.body == "42 False", reply.body


def test_paths_the_config_opens_are_bound_read_only(fleet, tmp_path):
    """``sandbox_paths`` shows a directory outside the workspace, read-only; without it the
    directory is not there. The supervisor's own builder and runner, real bubblewrap."""
    from chatbox.runtime.config import load
    from chatbox.supervisor.capped import run_capped
    from chatbox.supervisor.turn import TurnRunner

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes").write_text("shared notes")
    look = [sys.executable, "-I", "-S", "-c",
            "import sys; print(open(sys.argv[1]).read())\n"
            "try:\n    open(sys.argv[1], 'a')\nexcept OSError as exc:\n"
            "    print(exc.__class__.__name__)", str(shared / "notes")]
    fleet.add_agent("eve", "#general")

    def run(paths: list[Path]):
        fleet.write_config(config([a.replace("\n", "\\n") for a in look],
                                  sandbox_paths=json.dumps([str(p) for p in paths])))
        cfg = load(fleet.ws.config_path)
        spec, _ = TurnRunner("eve", cfg.agent("eve"), cfg.limits_for("eve"), fleet.ws).build(1, [])
        return run_capped(spec)

    opened = run([shared])
    assert opened.output.split("\n")[:2] == ["shared notes", "OSError"], opened
    closed = run([])
    assert closed.exit_code == 1 and "FileNotFoundError" in closed.stderr_tail, closed
