"""The bus over tcp is CurveZMQ only (DESIGN §7): ``chatbox keys``, the refusals, the allow-list.

Real broker, real sockets on loopback: tcp without keys is refused in one line, by the broker
and by a client; a key issued, revoked and issued again applies to the next handshake of a
running broker; a plain socket squatting the broker's port receives a CURVE greeting and no
token. (Other hosts: ``test_netns.py``.)
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq

from chatbox.bus import curve, wire
from chatbox.bus.client import BusClient
from chatbox.bus.errors import Unauthorized, Unreachable
from chatbox.runtime.workspace import Workspace
from tests.fleet import ROOT, child_env, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chatbox(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatbox", *args],
                          env=child_env(ws), cwd=ws.root, capture_output=True, text=True,
                          encoding="utf-8", timeout=60)


def tcp_config(fleet, port: int | None = None) -> tuple[str, str]:
    port = port or free_port()
    request, events = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{free_port()}"
    fleet.write_config(f'[bus]\nrequest = "{request}"\nevents = "{events}"\n')
    return request, events


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_issue_list_revoke(bare_fleet):
    ws = bare_fleet.ws
    out = chatbox(ws, "keys", "issue", "local")
    assert out.returncode == 0, out.stderr
    assert "made the broker's key pair" in out.stdout
    where = ws.curve_dir
    assert mode(where) == 0o700
    for name in ("server.secret", "server.public", "client.secret", "allowed/local.public"):
        assert mode(where / name) == 0o600, name
    server = curve.server_keys(where)
    assert (where / "server.public").read_bytes().strip() == server.public
    local = curve.client_keys(where)
    assert local.server == server.public
    assert chatbox(ws, "keys", "issue", "local").stdout.startswith("this host's key")
    assert curve.server_keys(where) == server  # a second issue makes nothing new

    out = chatbox(ws, "keys", "issue", "hostb")
    assert out.returncode == 0, out.stderr
    issued = curve.issued_dir(where, "hostb")
    assert mode(issued) == 0o700 and mode(issued / "client.secret") == 0o600
    remote = curve.client_keys(issued)
    assert remote.server == server.public  # the broker's key, pinned there
    assert curve.allowed(where) == {"hostb": remote.public, "local": local.public}
    secret = (issued / "client.secret").read_text().strip()
    assert secret not in out.stdout  # no secret is printed

    listed = chatbox(ws, "keys", "list", "--json")
    assert listed.returncode == 0
    assert [line.split('"name": ')[1].split('"')[1] for line in listed.stdout.splitlines()] \
        == ["hostb", "local"]

    again = chatbox(ws, "keys", "issue", "hostb")
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "revoke hostb" in again.stderr

    assert chatbox(ws, "keys", "revoke", "hostb").returncode == 0
    assert "hostb" not in curve.allowed(where) and not issued.exists()
    gone = chatbox(ws, "keys", "revoke", "hostb")
    assert gone.returncode == 1 and "no key issued for hostb" in gone.stderr

    own = chatbox(ws, "keys", "issue", "hostc", "--out", str(where))
    assert own.returncode == 1 and "own key directory" in own.stderr
    assert curve.client_keys(where) == local and "hostc" not in curve.allowed(where)

    bad = chatbox(ws, "keys", "issue", "Host B")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_a_broker_on_loopback_tcp_without_keys_refuses_to_start(bare_fleet):
    request, _ = tcp_config(bare_fleet)
    out = subprocess.run([sys.executable, "-m", "chatbox.broker"], env=child_env(bare_fleet.ws),
                         cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=30)
    assert out.returncode == 1
    said = [line for line in out.stderr.splitlines() if not line.startswith("{")]  # not logs
    assert len(said) == 1 and said[0].startswith("broker: "), out.stderr
    assert f"refusing to bind {request}" in out.stderr
    assert "CurveZMQ" in out.stderr and "chatbox keys issue local" in out.stderr


def test_a_client_over_tcp_without_keys_refuses_in_one_line(bare_fleet):
    tcp_config(bare_fleet)
    out = chatbox(bare_fleet.ws, "read", "#general")
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert out.stderr.count("\n") == 1, out.stderr
    assert "CurveZMQ" in out.stderr and "client.secret" in out.stderr
    with pytest.raises(curve.CurveError):  # nor does a client made without a key directory
        BusClient(wire_endpoints("tcp://127.0.0.1:1", "tcp://127.0.0.1:2"),
                  bare_fleet.admin_token).call(wire.Whoami())


def test_the_mcp_server_over_tcp_without_keys_refuses_in_one_line(bare_fleet):
    """`chatbox mcp` sets its bus up before it serves: a missing key is one line and exit 1,
    never a traceback from its event thread and a server that runs on without a bus."""
    tcp_config(bare_fleet)
    token = bare_fleet.ws.agent_token_path("kim")
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("not-a-real-token\n")
    token.chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "chatbox", "mcp", "--agent", "kim"],
                         env=child_env(bare_fleet.ws), cwd=bare_fleet.ws.root,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "CurveZMQ" in out.stderr


def wire_endpoints(request: str, events: str, where: Path | None = None):
    from chatbox.bus.endpoints import Endpoints
    return Endpoints(request, events, curve=str(where) if where else None)


def test_the_allow_list_applies_to_the_next_handshake_without_a_restart(bare_fleet):
    ws = bare_fleet.ws
    request, events = tcp_config(bare_fleet)
    assert chatbox(ws, "keys", "issue", "local").returncode == 0
    broker = bare_fleet.start_broker()
    local = BusClient(ws.endpoints(request, events), bare_fleet.admin_token)
    assert local.call(wire.Whoami()).name == bare_fleet.human

    assert chatbox(ws, "keys", "issue", "hostb").returncode == 0
    issued = curve.issued_dir(ws.curve_dir, "hostb")
    hostb = wire_endpoints(request, events, issued)

    def whoami() -> str:
        with BusClient(hostb, bare_fleet.admin_token, attempt_timeout=1.0, deadline=1.5) as c:
            return c.call(wire.Whoami()).name

    assert whoami() == bare_fleet.human
    kept = Path(bare_fleet.root / "hostb-keys")
    kept.mkdir(mode=0o700)
    for name in ("client.secret", "server.public"):
        (kept / name).write_bytes((issued / name).read_bytes())
    hostb = wire_endpoints(request, events, kept)
    held = BusClient(hostb, bare_fleet.admin_token)  # connected before the revocation
    assert held.call(wire.Whoami()).name == bare_fleet.human
    assert chatbox(ws, "keys", "revoke", "hostb").returncode == 0
    with pytest.raises(Unreachable, match="refused this host's CurveZMQ key"):
        whoami()
    with pytest.raises(Unauthorized, match=r"CurveZMQ key \(hostb\) was revoked"):
        held.call(wire.Whoami())  # its open connection too: refused at once
    held.close()
    assert broker.wait_log("curve_refused")["key"] == curve.client_keys(kept).public.decode()
    assert local.call(wire.Whoami()).name == bare_fleet.human  # the others are still served

    assert chatbox(ws, "keys", "issue", "hostb").returncode == 0  # a new key for hostb
    with pytest.raises(Unreachable):
        whoami()  # the revoked one stays refused
    hostb = wire_endpoints(request, events, curve.issued_dir(ws.curve_dir, "hostb"))
    assert whoami() == bare_fleet.human
    local.close()


def test_a_client_whose_pinned_key_is_not_the_brokers_says_so(bare_fleet):
    ws = bare_fleet.ws
    request, events = tcp_config(bare_fleet)
    assert chatbox(ws, "keys", "issue", "local").returncode == 0
    bare_fleet.start_broker()
    other = Path(bare_fleet.root / "other")
    curve.ensure_server(other)  # another broker's keys: this host pins the wrong one
    c = BusClient(wire_endpoints(request, events, other), bare_fleet.admin_token,
                  attempt_timeout=1.0, deadline=1.5)
    with pytest.raises(Unreachable, match="not the broker whose key is pinned"):
        c.call(wire.Whoami())
    c.close()


class Squatter:
    """A plain TCP listener on the broker's port that records every byte it is sent. It plays
    a ZMTP server as far as it can without the broker's secret key: it answers the greeting with
    the client's own mechanism, and for NULL also the READY that lets a client send its
    messages — so a client that did not insist on CURVE would hand it its request."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_server((host, port))
        self.received = bytearray()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._record, args=(conn,), daemon=True).start()

    def _record(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(b"\xff" + b"\0" * 8 + b"\x7f\x03")  # signature, ZMTP 3
                greeting = self._read(conn, 64)
                mechanism = greeting[12:32]
                conn.sendall(b"\x00" + mechanism + b"\x01" + b"\0" * 31)
                if mechanism.rstrip(b"\0") == b"NULL":
                    body = b"\x05READY\x0bSocket-Type" + (6).to_bytes(4, "big") + b"ROUTER"
                    conn.sendall(b"\x04" + bytes([len(body)]) + body)
                while self._read(conn, 1):
                    pass
            except OSError:
                return

    def _read(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n and (chunk := conn.recv(max(n - len(data), 65536))):
            data += chunk
            self.received += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def test_a_squatter_on_the_brokers_port_learns_no_token(bare_fleet):
    """The broker is down and a local process has its port: the client's request reaches the
    squatter as a CURVE HELLO, never as the envelope that holds the token."""
    ws = bare_fleet.ws
    port = free_port()
    request, events = tcp_config(bare_fleet, port)
    assert chatbox(ws, "keys", "issue", "local").returncode == 0
    squatter = Squatter(port)
    try:
        token = bare_fleet.admin_token
        with BusClient(ws.endpoints(request, events), token, attempt_timeout=0.5,
                       deadline=2.0) as c:
            with pytest.raises(Unreachable):
                c.call(wire.Post(channel="#general", body="secret plans"))
        assert squatter.connections >= 1
        got = bytes(squatter.received)
        assert got.startswith(b"\xff") and b"CURVE" in got[:64]  # it did talk to the squatter
        assert b"HELLO" in got  # the start of the handshake, which proves nothing to it
        assert token.encode() not in got and token[4:20].encode() not in got
        assert b"secret plans" not in got

        plain = zmq.Context.instance().socket(zmq.DEALER)  # the control: a client without CURVE
        plain.linger = 0
        plain.connect(request)
        plain.send(wire.encode(wire.Envelope(v=wire.PROTOCOL_VERSION, rid=1, token=token,
                                             req=wire.Whoami())))
        wait_for(lambda: token.encode() in bytes(squatter.received), timeout=10)
        plain.close()
    finally:
        squatter.close()


def test_keys_need_a_workspace(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOX_")}
    env |= {"CHATBOX_WORKSPACE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "chatbox", "keys", "list"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "chatbox init" in out.stderr
    assert not (tmp_path / ".chatbox").exists()
