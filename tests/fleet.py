"""Real processes for integration tests: a broker and supervisors on a temporary workspace.

Every start waits for a readiness handshake (the "ready" log line) with a bounded wait; every
process is killed at teardown, whatever the test did.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.runtime.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def short_tempdir(prefix: str = "cbx") -> Path:
    """A temporary directory with a short path (ipc socket paths are limited to ~100 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


def child_env(ws: Workspace, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOX_")}
    env["CHATBOX_WORKSPACE"] = str(ws.root)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Proc:
    """A child process whose stderr goes to a log file we can wait on."""

    def __init__(self, name: str, argv: list[str], ws: Workspace, log_dir: Path,
                 env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(argv, cwd=ws.root, env=env or child_env(ws),
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_events(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_log(self, event: str, timeout: float = 15.0, count: int = 1, **match: object) -> dict:
        def found():
            if self.popen.poll() is not None and not _matches(self.log_events(), event, match):
                raise AssertionError(f"{self.name} exited with {self.popen.returncode} before "
                                     f"logging {event!r}:\n{self.log_text()[-3000:]}")
            hits = _matches(self.log_events(), event, match)
            return hits[count - 1] if len(hits) >= count else None
        return wait_for(found, timeout, what=f"{self.name} to log {event!r} {match or ''}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)


def _matches(events: list[dict], event: str, match: dict) -> list[dict]:
    return [e for e in events if e.get("event") == event
            and all(e.get(k) == v for k, v in match.items())]


class Fleet:
    """A workspace with a broker and any number of supervisors, all real processes."""

    def __init__(self, root: Path | None = None, human: str = "alice"):
        from chatbox.broker.bootstrap import init_workspace

        self.root = root or short_tempdir()
        self.ws = Workspace(self.root)
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.admin_token = init_workspace(self.ws, human)
        self.human = human
        self.broker: Proc | None = None
        self.supervisors: dict[str, Proc] = {}
        self._clients: dict[tuple, BusClient] = {}
        self._starts = 0

    # ------------------------------------------------------------------ processes
    def start_broker(self) -> Proc:
        self._starts += 1
        self.broker = Proc(f"broker{self._starts}", [sys.executable, "-m", "chatbox.broker"], self.ws,
                           self.logs)
        self.broker.wait_log("ready")
        return self.broker

    def stop_broker(self, sig: int = signal.SIGINT) -> int | None:
        rc = self.broker.stop(sig) if self.broker else None
        return rc

    def start_supervisor(self, agent: str, *extra: str) -> Proc:
        n = sum(1 for k in self.supervisors if k.startswith(agent))
        proc = Proc(f"supervisor-{agent}-{n}", [sys.executable, "-m", "chatbox.supervisor", "--agent",
                                               agent, *extra], self.ws, self.logs)
        self.supervisors[f"{agent}#{n}"] = proc
        proc.wait_log("ready")
        return proc

    def write_config(self, text: str) -> None:
        self.ws.config_path.write_text(text, encoding="utf-8")

    # ------------------------------------------------------------------ clients
    def client(self, token: str | None = None, **kw: object) -> BusClient:
        """A client for ``token`` (default: the admin's), one per token, closed at teardown."""
        key = (token or self.admin_token, tuple(sorted(kw.items())))
        if key not in self._clients:
            self._clients[key] = BusClient(self.ws.endpoints(), key[0], **kw)
        return self._clients[key]

    def agent_client(self, name: str) -> BusClient:
        return self.client(self.ws.read_token(self.ws.agent_token_path(name)))

    def add_agent(self, name: str, *channels: str, wake: str = "all") -> None:
        self.client().call(wire.AddAgent(name=name, subscribe=list(channels) or ["#general"],
                                         wake=wake))

    def post(self, channel: str, body: str, **kw: object) -> wire.Message:
        return self.client().call(wire.Post(channel=channel, body=body, **kw)).message

    def read(self, channel: str, since: int = 0) -> list[wire.Message]:
        return self.client().call(wire.Read(channel=channel, since=since, limit=1000)).messages

    def agent(self, name: str) -> wire.AgentInfo:
        return self.client().call(wire.ShowAgent(name=name)).agent

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        for proc in self.supervisors.values():
            proc.kill()
        if self.broker is not None:
            self.broker.kill()
        shutil.rmtree(self.root, ignore_errors=True)
