"""Supervisors on other hosts over tcp + CurveZMQ (DESIGN §7, docs/REMOTE.md).

The test makes its own network: the broker in one network namespace, with a bridge holding the
first address of a private /24, and supervisors in two others, each on a veth pair into that
bridge (the test's own namespace gets one too, for its clients). Each supervisor runs from a
workspace of its own — its agent's token, the key files ``chatbox keys issue`` wrote, its
``chatbox.toml`` — under a host name of its own (a UTS namespace), so the broker sees a host it
cannot watch by pidfd and knows it only over the bus. Everything is removed at the end.
Skipped, with the reason printed, only where namespaces cannot be made (not root, no ``ip``).

What is checked, over the real links: wakes, turns (stub engine) and replies from both hosts; a
link cut mid-turn and restored within the heartbeat timeout — the report lands once; a link cut
past it — the broker records the turn lost by heartbeat, and after the link is back the batch
is redelivered and answered once; a supervisor killed on its host is noticed at once and its
turn goes to a supervisor started on the other host; a peer whose key is not allowed is
refused; a plain socket squatting the broker's port, while the broker is down, gets the
reconnecting supervisor's CURVE HELLO and never its token.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.runtime.workspace import Workspace
from tests.fleet import ROOT, Fleet, Gate, child_env, short_tempdir, wait_for

HEARTBEAT, TIMEOUT = 0.5, 3.0  # [bus]: a silent peer is dropped within 3.5 s
REQ_PORT, EV_PORT = 5710, 5711
# run ARGV under host name HOST: `python -c SETHOST HOST ARGV...`, in a UTS namespace of its own
SETHOST = ("import os, socket, sys; socket.sethostname(sys.argv[1]); "
           "os.execv(sys.argv[2], sys.argv[2:])")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class Network:
    """Namespaces ``broker``, ``host1``, ``host2`` on one bridge; this namespace on it too."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = {role: f"cbx{tag}{role[0]}{role[-1]}" for role in ("broker", "host1", "host2")}
        self.net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
        self.addr = {"broker": f"{self.net}.1", "host1": f"{self.net}.2",
                     "host2": f"{self.net}.3", "here": f"{self.net}.254"}
        self.link = {role: f"cbx{tag}{role[-1]}" for role in ("host1", "host2", "here")}
        self.made: list[str] = []

    def build(self) -> None:
        b = self.ns["broker"]
        for ns in self.ns.values():
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", b, "link", "add", "br0", "type", "bridge")
        ip("-n", b, "addr", "add", f"{self.addr['broker']}/24", "dev", "br0")
        ip("-n", b, "link", "set", "br0", "up")
        for role, link in self.link.items():
            ip("link", "add", f"{link}a", "type", "veth", "peer", "name", f"{link}b")
            ip("link", "set", f"{link}a", "netns", b)
            ip("-n", b, "link", "set", f"{link}a", "master", "br0", "up")
            where = [] if role == "here" else ["-n", self.ns[role]]
            if role != "here":
                ip("link", "set", f"{link}b", "netns", self.ns[role])
            ip(*where, "addr", "add", f"{self.addr[role]}/24", "dev", f"{link}b")
            ip(*where, "link", "set", f"{link}b", "up")

    def cut(self, role: str) -> None:
        ip("-n", self.ns["broker"], "link", "set", f"{self.link[role]}a", "down")

    def restore(self, role: str) -> None:
        ip("-n", self.ns["broker"], "link", "set", f"{self.link[role]}a", "up")

    def exec(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[role]]

    def remove(self) -> None:
        ip("link", "del", f"{self.link['here']}b", check=False)
        for ns in self.made:
            ip("netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def network():
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        reason = "network namespaces need root, ip (iproute2) and unshare (util-linux)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    net = Network()
    try:
        try:
            net.build()
        except subprocess.CalledProcessError as exc:
            reason = f"the kernel refused a network namespace or link: {exc.stderr.strip()}"
            print(f"SKIPPED: {reason}")
            pytest.skip(reason)
        yield net
    finally:
        net.remove()


class Hosts:
    """The broker's workspace (a Fleet) in the broker's namespace, and one workspace per
    supervisor host, each holding only what such a host has: a token, its keys, its config."""

    def __init__(self, net: Network):
        self.net = net
        self.fleet = Fleet()
        request = f"tcp://{net.addr['broker']}:{REQ_PORT}"
        events = f"tcp://{net.addr['broker']}:{EV_PORT}"
        self.bus = (f'[bus]\nrequest = "{request}"\nevents = "{events}"\n'
                    f"heartbeat = {HEARTBEAT}\nheartbeat_timeout = {TIMEOUT}\n")
        self.fleet.write_config(self.bus)
        ws = self.fleet.ws
        self.endpoints = ws.endpoints(request, events)
        # the fleet's clients are this namespace's: over the bridge, with the local key
        ws.endpoints = lambda *_: self.endpoints  # type: ignore[method-assign]
        assert self.keys("issue", "local").returncode == 0
        self.remote: dict[str, Workspace] = {}
        self.gates: dict[str, Gate] = {}
        for host in ("host1", "host2"):
            root = short_tempdir()
            remote = Workspace(root)
            remote.ensure_data_dir()
            out = self.keys("issue", host, "--out", str(remote.curve_dir))
            assert out.returncode == 0, out.stderr
            self.remote[host] = remote
            self.gates[host] = Gate(root / "gate.fifo")
        self.fleet.start_broker([*net.exec("broker"), sys.executable, "-m", "chatbox.broker"])

    def keys(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "chatbox", "keys", *args],
                              env=child_env(self.fleet.ws), cwd=self.fleet.root,
                              capture_output=True, text=True, timeout=60)

    def add_agent(self, agent: str, *hosts: str) -> None:
        """``agent`` in the broker's database, its token and config on each of ``hosts``."""
        self.fleet.add_agent(agent, "#general", wake="mentions")  # no chatter between them
        self.add_agent_files(agent, *hosts)

    def add_agent_files(self, agent: str, *hosts: str) -> None:
        token = self.fleet.ws.agent_token_path(agent).read_text()
        for host in hosts:
            remote = self.remote[host]
            path = remote.agent_token_path(agent)
            path.write_text(token)
            path.chmod(0o600)
            with open(remote.config_path, "a", encoding="utf-8") as fh:
                if fh.tell() == 0:
                    fh.write(self.bus)
                fh.write(f'\n[agents.{agent}]\nengine = "stub"\nenv = ["CHATBOX_STUB_GATE"]\n')

    def supervisor(self, agent: str, host: str, ready: bool = True):
        """``supervisor --agent AGENT`` on ``host``: its namespace, its host name, its
        workspace; started, and unless ``ready`` is False, ready."""
        remote = self.remote[host]
        env = child_env(remote, CHATBOX_STUB_GATE=str(self.gates[host].path))
        proc = self.fleet.spawn(f"supervisor-{agent}-{host}-{len(self.fleet.supervisors)}", [
            *self.net.exec(host), "unshare", "--uts", sys.executable, "-c", SETHOST, host,
            sys.executable, "-m", "chatbox.supervisor", "--agent", agent,
            "--workspace", str(remote.root)], env=env)
        self.fleet.supervisors[proc.name] = proc
        if ready:
            proc.wait_ready(timeout=60)
        return proc

    def replies(self, agent: str) -> list[str]:
        return [m.body for m in self.fleet.read("#general") if m.author == agent]

    def close(self) -> None:
        for host in self.remote:
            self.net.restore(host)  # a test that failed mid-cut leaves no link down
        for gate in self.gates.values():
            gate.open()  # no stub left waiting
        self.fleet.close()
        for gate in self.gates.values():
            gate.close()
        for remote in self.remote.values():
            shutil.rmtree(remote.root, ignore_errors=True)


@pytest.fixture
def hosts(network):
    h = Hosts(network)
    try:
        yield h
    finally:
        h.close()


def test_wakes_turns_and_replies_from_two_other_hosts(hosts):
    hosts.add_agent("echo1", "host1")
    hosts.add_agent("echo2", "host2")
    for host in ("host1", "host2"):
        hosts.gates[host].open()
    sup1 = hosts.supervisor("echo1", "host1")
    hosts.supervisor("echo2", "host2")
    agents = hosts.fleet.agents()
    assert "-host1-" in agents["echo1"].supervisor and "-host2-" in agents["echo2"].supervisor
    seq = hosts.fleet.post("#general", "hello @echo1 and @echo2").seq
    wait_for(lambda: hosts.replies("echo1") and hosts.replies("echo2"), timeout=30)
    assert hosts.replies("echo1") == [f"ack {seq}"] and hosts.replies("echo2") == [f"ack {seq}"]
    again = hosts.fleet.post("#general", "@echo1 only").seq
    wait_for(lambda: len(hosts.replies("echo1")) == 2, timeout=30)
    assert hosts.replies("echo1") == [f"ack {seq}", f"ack {again}"]
    wait_for(lambda: hosts.fleet.agent("echo1").state == "ASLEEP", timeout=30)
    assert hosts.replies("echo2") == [f"ack {seq}"]
    assert sup1.returncode is None
    # one supervisor per agent, across hosts: host1's is connected, so host2's is refused
    hosts.add_agent_files("echo1", "host2")
    second = hosts.supervisor("echo1", "host2", ready=False)
    assert second.popen.wait(60) == 1
    assert "already has a running supervisor" in second.log_text()
    assert "-host1-" in hosts.fleet.agent("echo1").supervisor


def test_a_link_cut_mid_turn_and_restored_in_time_loses_nothing_and_runs_nothing_twice(hosts):
    hosts.add_agent("echo1", "host1")
    sup = hosts.supervisor("echo1", "host1")
    first = hosts.fleet.post("#general", "@echo1 one").seq
    sup.wait_log("turn_spawned", timeout=30)  # the turn waits at its gate
    hosts.net.cut("host1")
    second = hosts.fleet.post("#general", "@echo1 two, while host1 is cut off").seq
    hosts.gates["host1"].open()
    sup.wait_log("turn", outcome="ok", timeout=30)  # done; its report meets the dead link
    hosts.net.restore("host1")
    wait_for(lambda: len(hosts.replies("echo1")) == 2, timeout=30)
    assert hosts.replies("echo1") == [f"ack {first}", f"ack {second}"]
    wait_for(lambda: hosts.fleet.agent("echo1").state == "ASLEEP", timeout=30)
    info = hosts.fleet.agent("echo1")
    assert info.last_turn.outcome == "ok" and info.offsets["#general"] >= second
    assert not [e for e in hosts.fleet.broker.log_events()
                if e.get("event") == "supervisor_disconnected"]
    assert hosts.replies("echo1") == [f"ack {first}", f"ack {second}"]


def test_a_link_cut_past_the_heartbeat_records_the_turn_lost_and_redelivers_it(hosts):
    hosts.add_agent("echo1", "host1")
    sup = hosts.supervisor("echo1", "host1")
    seq = hosts.fleet.post("#general", "@echo1 one").seq
    sup.wait_log("turn_spawned", timeout=30)
    hosts.net.cut("host1")
    gone = hosts.fleet.broker.wait_log("supervisor_disconnected", timeout=HEARTBEAT + TIMEOUT + 10)
    assert "-host1-" in gone["supervisor"]
    wait_for(lambda: hosts.fleet.agent("echo1").last_turn.outcome == "lost", timeout=10)
    hosts.gates["host1"].open()  # the lost turn ends on host1; its report is refused
    hosts.net.restore("host1")
    wait_for(lambda: hosts.replies("echo1"), timeout=30)
    wait_for(lambda: hosts.fleet.agent("echo1").state == "ASLEEP", timeout=30)
    assert hosts.replies("echo1") == [f"ack {seq}"]  # answered once, by the redelivered turn
    info = hosts.fleet.agent("echo1")
    assert info.last_turn.outcome == "ok" and info.last_turn.batch == [seq]
    assert info.offsets["#general"] >= seq
    assert sup.returncode is None


def test_a_supervisor_killed_on_its_host_is_noticed_and_its_turn_redelivered(hosts):
    hosts.add_agent("echo1", "host1", "host2")
    hosts.gates["host2"].open()
    first = hosts.supervisor("echo1", "host1")
    seq = hosts.fleet.post("#general", "@echo1 one").seq
    first.wait_log("turn_spawned", timeout=30)
    first.kill()  # its host lives: the connections close at once
    hosts.fleet.broker.wait_log("supervisor_disconnected", timeout=10)
    wait_for(lambda: hosts.fleet.agent("echo1").last_turn.outcome == "lost", timeout=10)
    hosts.supervisor("echo1", "host2")
    wait_for(lambda: hosts.replies("echo1"), timeout=30)
    assert hosts.replies("echo1") == [f"ack {seq}"]
    assert "-host2-" in hosts.fleet.agent("echo1").supervisor


def test_a_peer_without_an_allowed_key_is_refused(hosts):
    hosts.add_agent("echo1", "host2")
    assert hosts.keys("revoke", "host2").returncode == 0
    remote = hosts.remote["host2"]
    probe = ("import sys; from chatbox.bus import wire; from chatbox.bus.client import BusClient;"
             "from chatbox.runtime.workspace import Workspace;"
             "ws = Workspace(sys.argv[1]); eps = ws.endpoints(sys.argv[2], sys.argv[3]);"
             "c = BusClient(eps, ws.read_token(ws.agent_token_path('echo1')),"
             " attempt_timeout=1.0, deadline=2.0)\n"
             "try:\n    c.call(wire.Whoami())\nexcept Exception as exc:\n"
             "    print(exc); sys.exit(3)\n")
    out = subprocess.run([*hosts.net.exec("host2"), sys.executable, "-c", probe, str(remote.root),
                          hosts.endpoints.request, hosts.endpoints.events],
                         env=child_env(remote), capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert "refused this host's CurveZMQ key" in out.stdout
    assert hosts.fleet.broker.wait_log("curve_refused")["key"]
    assert hosts.fleet.agent("echo1").supervisor is None


SQUAT = """\
import sys, threading
from tests.integration.test_curve import Squatter
host, out = sys.argv[1], sys.argv[2]
squatters = [Squatter(int(port), host) for port in sys.argv[3:]]
print("listening", flush=True)
while True:
    for i, s in enumerate(squatters):
        with open(f"{out}.{i}", "wb") as fh:
            fh.write(bytes(s.received))
    threading.Event().wait(0.05)
"""


def test_a_squatter_on_the_brokers_port_gets_no_token(hosts):
    hosts.add_agent("echo1", "host1")
    hosts.gates["host1"].open()
    sup = hosts.supervisor("echo1", "host1")
    assert hosts.fleet.stop_broker() == 0
    record = hosts.fleet.root / "squatted"
    squatter = hosts.fleet.spawn("squatter", [
        *hosts.net.exec("broker"), sys.executable, "-c", SQUAT, hosts.net.addr["broker"],
        str(record), str(REQ_PORT), str(EV_PORT)], env=child_env(hosts.fleet.ws))
    try:
        wait_for(lambda: "listening" in squatter.log_text(), timeout=30)
        paths = [Path(f"{record}.0"), Path(f"{record}.1")]
        # the supervisor reconnects its event socket at once: its CURVE HELLO reaches the squatter
        wait_for(lambda: paths[1].exists() and b"HELLO" in paths[1].read_bytes(), timeout=30)
        token = hosts.remote["host1"].agent_token_path("echo1").read_text().strip()
        for path in paths:
            got = path.read_bytes() if path.exists() else b""
            assert token.encode() not in got and token[4:20].encode() not in got
        assert sup.returncode is None
    finally:
        squatter.kill()
