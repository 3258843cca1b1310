"""``chatbox demo``: a real multi-process conversation on a temporary workspace, then a clean stop.

It starts a broker, two stub supervisors and the web console (``chatbox serve``) as separate
processes, prints the console's URL and the human's login token, posts as the human, and shows
what happens as it happens — wakes, turns, replies — from the bus's own events. Act two posts a
burst while an agent is busy: the burst causes exactly one follow-up turn, which handles it all.
Run from a terminal (or with ``--hold``) it then keeps everything running for the console until
Ctrl-C; otherwise it stops at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from chatbox import harness
from chatbox.broker import entry as broker
from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.runtime import env as runtime_env
from chatbox.runtime.workspace import Workspace

CONFIG = """\
[limits]
max_turn_seconds = 20

[agents.echo]
engine = "stub"
stub = { delay = 0.3, behaviour = "reply" }

[agents.scribe]
engine = "stub"
stub = { delay = 0.0, behaviour = "reply" }
"""


def _safe(text: str) -> str:
    """Untrusted text for a terminal: no control characters, one line."""
    return "".join(c if c.isprintable() else " " for c in text.replace("\n", " ⏎ "))


class Demo:
    def __init__(self, root: Path, out=sys.stdout):
        self.root = root
        self.ws = Workspace(root)
        self.out = out
        self.t0 = time.monotonic()
        self.procs: list[harness.Process] = []
        self.logs = root / "logs"
        self.states = {"echo": "ASLEEP", "scribe": "ASLEEP"}

    def say(self, who: str, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}s] {who:<8} {text}", file=self.out, flush=True)

    def spawn(self, name: str, argv: list[str]) -> dict:
        """Start ``argv`` through the process harness; return its "ready" line."""
        env = dict(os.environ, **{runtime_env.WORKSPACE: str(self.root)})
        proc = harness.Process(name, argv, log_path=self.logs / f"{name}.log", cwd=self.root,
                               env=env)
        self.procs.append(proc)
        ready = proc.wait_ready(20)
        self.say(name, f"started (pid {proc.pid})")
        return ready

    def console(self, token: str, port: int) -> None:
        """``chatbox serve`` on ``port`` (any free one if that is taken), checked with the
        human's token, its URL and the token printed for a browser."""
        argv = [sys.executable, "-m", "chatbox", "serve", "--port", str(port)]
        try:
            ready = self.spawn("console", argv)
        except harness.Exited:
            self.procs.pop()
            ready = self.spawn("console", argv[:-1] + ["0"])
        url = ready["url"]
        req = urllib.request.Request(url + "v1/me", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as answer:
            me = json.loads(answer.read())
        self.say("console", f"{url}  (you are {me['name']}, {me['role']}; log in with the token "
                 "below)")
        self.say("console", f"token {token}")

    def run(self, port: int = 8765) -> int:
        self.logs.mkdir()
        token = broker.init_workspace(self.ws, "you")
        self.ws.config_path.write_text(CONFIG, encoding="utf-8")
        self.say("demo", f"workspace {self.root}")
        self.spawn("broker", [sys.executable, "-m", "chatbox.broker"])
        admin = BusClient(self.ws.endpoints(), token)
        admin.call(wire.AddAgent(name="echo", subscribe=["#general"], wake="all", engine="stub"))
        admin.call(wire.AddAgent(name="scribe", subscribe=["#general"], wake="mentions",
                                 engine="stub"))
        self.say("demo", "agents: echo (wakes on everything in #general, takes 0.3 s a turn), "
                 "scribe (wakes on @mentions and replies to its posts)")
        admin.subscribe([wire.channel_topic("#general"), wire.agent_topic("echo"),
                         wire.agent_topic("scribe")])
        for agent in ("echo", "scribe"):
            self.spawn(agent, [sys.executable, "-m", "chatbox.supervisor", "--agent", agent])
        self.console(token, port)

        self.say("demo", "— act one: a question for everyone —")
        admin.call(wire.Post(channel="#general", body="Morning! @scribe please take notes. "
                             "What is everyone working on?"))
        self.follow(admin)

        self.say("demo", "— act two: a burst of three posts while echo is busy —")
        admin.call(wire.Post(channel="#general", body="update 1 of 4"))
        self.follow(admin, until=lambda ev: isinstance(ev, wire.AgentEvent)
                    and ev.agent == "echo" and ev.state == "BUSY")
        for i in range(2, 5):
            admin.call(wire.Post(channel="#general", body=f"update {i} of 4"))
        self.follow(admin)

        turns = {a.name: a for a in admin.call(wire.ListAgents()).agents}
        for name, info in turns.items():
            last = info.last_turn
            self.say(name, f"{info.state}, offsets {info.offsets}, last turn "
                     f"{last.id if last else '-'} {last.outcome if last else ''}")
        admin.close()
        return 0

    def follow(self, client: BusClient, quiet: float = 1.0, limit: float = 30.0,
               until=None) -> None:
        """Print events until ``until(event)`` holds, or every agent has slept ``quiet`` seconds
        (an agent's reply may wake another: asleep for a moment is not settled yet)."""
        states = self.states
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            try:
                for ev in harness.events(client, left, idle=quiet):
                    self.show(client, ev, states)
                    if until is not None and until(ev):
                        return
            except harness.Quiet:
                if all(s == "ASLEEP" for s in states.values()):
                    return
            except harness.Timeout:
                break
        raise RuntimeError(f"the fleet did not settle within {limit:g}s")

    def show(self, client: BusClient, ev: wire.Event, states: dict[str, str]) -> None:
        if isinstance(ev, wire.AgentEvent):
            states[ev.agent] = ev.state
            self.say(ev.agent, f"→ {ev.state}  ({_safe(ev.cause)})")
        elif isinstance(ev, wire.MessageEvent):
            for m in client.call(wire.Read(channel=ev.channel, since=ev.seq - 1,
                                           limit=1)).messages:
                where = f"↳ #{m.seq} (re #{m.in_reply_to})" if m.in_reply_to else f"#{m.seq}"
                self.say(m.author, f"{where} {m.channel}: {_safe(m.body)}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self.say(proc.name, f"stopped (exit {proc.stop(timeout=10)})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="chatbox demo", description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    p.add_argument("--port", type=int, default=8765, help="the console's port (default 8765; "
                   "any free one if it is taken)")
    hold = p.add_mutually_exclusive_group()
    hold.add_argument("--hold", action="store_true", default=None,
                      help="keep running for the console until Ctrl-C (the default on a terminal)")
    hold.add_argument("--no-hold", dest="hold", action="store_false")
    args = p.parse_args(argv)
    if args.hold is None:
        args.hold = sys.stdin.isatty() and sys.stdout.isatty()
    root = Path(tempfile.mkdtemp(prefix="cbx-demo-"))
    demo = Demo(root)
    try:
        code = demo.run(args.port)
        if args.hold:
            demo.say("demo", "the fleet keeps running for the console; Ctrl-C stops it")
            try:
                demo.procs[0].popen.wait()
            except KeyboardInterrupt:
                pass
        return code
    except (RuntimeError, OSError) as exc:
        print(f"chatbox demo: {exc}", file=sys.stderr)
        for log in sorted((root / "logs").glob("*.log")):
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
            print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
        return 1
    finally:
        demo.stop()
        if args.keep:
            print(f"workspace kept at {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
