"""Real processes for integration tests: a broker and supervisors on a temporary workspace.

The process harness is ``chatbox.harness`` (shared with ``bench/`` and ``chatbox demo``): every
start waits for the "ready" log line, every wait is bounded. This module adds what is the tests'
own: a workspace with its admin token, one bus client per token, and teardown that kills every
process the test started, whatever it did.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from chatbox.broker.bootstrap import init_workspace
from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.harness import Process, short_tempdir, wait_event, wait_for
from chatbox.runtime.workspace import Workspace
from chatbox import harness

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "Fleet", "Gate", "HeldTurn", "Process", "child_env", "short_tempdir",
           "wait_event", "wait_for"]


def child_env(ws: Workspace, **extra: str) -> dict[str, str]:
    """This environment without ``CHATBOX_*``, for ``ws``, importing this checkout first."""
    return harness.child_env(ws.root, PYTHONPATH=str(ROOT), **extra)


@dataclass
class HeldTurn:
    """A turn in flight for as long as a test needs: its supervisor, started with a closed
    ``gate`` (``env`` hands it on), the ``post`` that woke it, and the ``turn_spawned`` log line
    (``spawned["pid"]`` is the turn's child)."""

    gate: "Gate"
    env: dict[str, str]
    supervisor: Process
    post: wire.Message
    spawned: dict


class Gate:
    """A FIFO a stub turn waits at (``CHATBOX_STUB_GATE``, ``supervisor/stub.py``) until the
    test opens it; from then on every turn passes. Closed at fleet teardown."""

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path, 0o600)
        self._fd: int | None = None

    def open(self) -> None:
        """Let every waiting and later turn through (a writer end held open, never blocking)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Fleet:
    """A workspace with a broker and any number of supervisors, all real processes."""

    def __init__(self, root: Path | None = None, human: str = "alice", *,
                 initialised: bool = False):
        """``initialised``: ``root`` is a workspace made already (by ``chatbox init``)."""
        self.root = root or short_tempdir()
        self.ws = Workspace(self.root)
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.admin_token = (self.ws.read_token(self.ws.admin_token_path) if initialised
                            else init_workspace(self.ws, human))
        self.human = human
        self.broker: Process | None = None
        self.supervisors: dict[str, Process] = {}
        self.gates: list[Gate] = []
        self._clients: dict[tuple, BusClient] = {}
        self._starts = 0

    # ------------------------------------------------------------------ processes
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        """Start ``argv`` on this workspace with its log in ``logs/NAME.log``; no waiting."""
        return Process(name, argv, log_path=self.logs / f"{name}.log", cwd=self.root,
                       env=env or child_env(self.ws))

    def start_broker(self, argv: list[str] | None = None) -> Process:
        """A broker (``python -m chatbox.broker`` unless ``argv``), once it logged "ready"."""
        self._starts += 1
        self.broker = self.spawn(f"broker{self._starts}",
                                 argv or [sys.executable, "-m", "chatbox.broker"])
        self.broker.wait_ready()
        return self.broker

    def stop_broker(self, sig: int = signal.SIGINT) -> int | None:
        return self.broker.stop(sig) if self.broker else None

    def spawn_supervisor(self, agent: str, *extra: str, env: dict[str, str] | None = None) -> Process:
        """``supervisor --agent AGENT`` started, not yet waited for (see ``wait_ready``)."""
        n = sum(1 for k in self.supervisors if k.split("#")[0] == agent)
        proc = self.spawn(f"supervisor-{agent}-{n}",
                          [sys.executable, "-m", "chatbox.supervisor", "--agent", agent, *extra],
                          env=env)
        self.supervisors[f"{agent}#{n}"] = proc
        return proc

    def start_supervisor(self, agent: str, *extra: str, env: dict[str, str] | None = None) -> Process:
        proc = self.spawn_supervisor(agent, *extra, env=env)
        proc.wait_ready()
        return proc

    def gate(self, name: str = "gate") -> tuple[Gate, dict[str, str]]:
        """A closed :class:`Gate`, and the environment that hands it to a supervisor's stub
        turns (the agent's config must pass the variable: ``env = ["CHATBOX_STUB_GATE"]``)."""
        gate = Gate(self.root / f"{name}.fifo")
        self.gates.append(gate)
        return gate, child_env(self.ws, CHATBOX_STUB_GATE=str(gate.path))

    def held_turn(self, agent: str, body: str, channel: str = "#general") -> HeldTurn:
        """``agent``'s supervisor started with a closed gate, ``body`` posted to ``channel``, and
        the turn it woke spawned and waiting at the gate."""
        gate, env = self.gate()
        sup = self.start_supervisor(agent, env=env)
        post = self.post(channel, body)
        return HeldTurn(gate, env, sup, post, sup.wait_log("turn_spawned"))

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

    def listener(self, *topics: str) -> BusClient:
        """A new admin client subscribed to ``topics`` and synced: it misses no later event."""
        c = BusClient(self.ws.endpoints(), self.admin_token)
        self._clients[("listener", len(self._clients))] = c
        c.subscribe(list(topics))
        c.sync_events(timeout=5)
        return c

    def add_agent(self, name: str, *channels: str, wake: str = "all") -> None:
        self.client().call(wire.AddAgent(name=name, subscribe=list(channels) or ["#general"],
                                         wake=wake))

    def post(self, channel: str, body: str, **kw: object) -> wire.Message:
        return self.client().call(wire.Post(channel=channel, body=body, **kw)).message

    def read(self, channel: str, since: int = 0) -> list[wire.Message]:
        return self.client().call(wire.Read(channel=channel, since=since, limit=1000)).messages

    def agent(self, name: str) -> wire.AgentInfo:
        return self.client().call(wire.ShowAgent(name=name)).agent

    def agents(self) -> dict[str, wire.AgentInfo]:
        """Every agent's row as of one moment of the broker (one request)."""
        return {a.name: a for a in self.client().call(wire.ListAgents()).agents}

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        for proc in self.supervisors.values():
            proc.kill()
        if self.broker is not None:
            self.broker.kill()
        for gate in self.gates:
            gate.close()
        shutil.rmtree(self.root, ignore_errors=True)
