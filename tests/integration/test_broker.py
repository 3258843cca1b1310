"""The broker as a real process: persistence, the workspace lock, bad frames, files, signals."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import msgspec
import pytest
import zmq

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.endpoints import ipc_path
from chatbox.bus.errors import Refused, Unreachable
from tests.fleet import ROOT, child_env, wait_for


def _socket_paths(fleet):
    eps = fleet.ws.endpoints()
    return [ipc_path(eps.request), ipc_path(eps.events)]


def test_a_post_can_be_read_back(fleet):
    """DESIGN §6: post, then read the channel's history, oldest first."""
    first = fleet.post("#general", "hello")
    second = fleet.post("#general", "world")
    got = fleet.read("#general")
    assert [(m.seq, m.body, m.author) for m in got] == [(first.seq, "hello", "alice"),
                                                         (second.seq, "world", "alice")]


def test_a_post_from_another_process_is_seen_by_this_one(fleet):
    """DESIGN §1: every process talks to the broker through the one bus client."""
    script = textwrap.dedent("""
        import sys
        from chatbox.bus import wire
        from chatbox.bus.client import BusClient
        from chatbox.runtime.workspace import Workspace
        ws = Workspace.find()
        with BusClient(ws.endpoints(), ws.read_token(ws.admin_token_path)) as c:
            msg = c.call(wire.Post(channel="#general", body="from a child")).message
        print(msg.seq)
    """)
    out = subprocess.run([sys.executable, "-c", script], env=child_env(fleet.ws), cwd=ROOT,
                         capture_output=True, text=True, encoding="utf-8", timeout=30)
    assert out.returncode == 0, out.stderr
    seq = int(out.stdout.strip())
    assert [(m.seq, m.body) for m in fleet.read("#general")] == [(seq, "from a child")]


def test_a_post_publishes_a_channel_event_naming_the_seq_but_no_text(fleet):
    """wire: events are hints, never content (the PUB socket leaks no text past the read ACL)."""
    listener = fleet.client()
    listener.subscribe([wire.channel_topic("#general")])

    def event_for_a_fresh_post():  # resend until the subscription has reached the broker
        msg = fleet.post("#general", "secret words")
        got = listener.recv_event(timeout=0.2)
        return (msg, got) if got else None

    msg, (topic, event) = wait_for(event_for_a_fresh_post, timeout=10, what="a channel event")
    assert topic == wire.channel_topic("#general")
    assert isinstance(event, wire.MessageEvent)
    assert (event.channel, event.author, event.kind) == ("#general", "alice", "chat")
    assert event.seq <= msg.seq
    assert b"secret" not in wire.encode(event)


def test_a_supervisor_process_that_dies_mid_turn_loses_its_turn(fleet):
    """DESIGN §4.5: a supervisor that dies mid-turn is noticed; the turn is recorded lost."""
    fleet.add_agent("kim", "#general")
    posted = fleet.post("#general", "work for kim")
    script = textwrap.dedent("""
        import os, socket
        from chatbox.bus import wire
        from chatbox.bus.client import BusClient
        from chatbox.runtime.workspace import Workspace
        ws = Workspace.find()
        with BusClient(ws.endpoints(), ws.read_token(ws.agent_token_path("kim"))) as c:
            hello = c.call(wire.Hello(agent="kim", supervisor="doomed", pid=os.getpid(),
                                      host=socket.gethostname()))
            claim = c.call(wire.Claim(agent="kim", supervisor="doomed", epoch=hello.epoch))
        print(claim.turn)
    """)
    out = subprocess.run([sys.executable, "-c", script], env=child_env(fleet.ws), cwd=ROOT,
                         capture_output=True, text=True, encoding="utf-8", timeout=30)
    assert out.returncode == 0, out.stderr
    turn = int(out.stdout.strip())
    info = wait_for(lambda: (a := fleet.agent("kim")).state == "ASLEEP" and a, timeout=10,
                    what="kim's turn to be lost")
    assert (info.last_turn.id, info.last_turn.outcome, info.supervisor) == (turn, "lost", None)
    kim = fleet.agent_client("kim")
    hello = kim.call(wire.Hello(agent="kim", supervisor="next"))
    assert hello.pending
    again = kim.call(wire.Claim(agent="kim", supervisor="next", epoch=hello.epoch))
    assert [(m.seq, m.redelivered) for m in again.messages] == [(posted.seq, True)]


def test_a_restart_keeps_every_message_and_every_offset(fleet):
    """DESIGN §3: durable consumer offsets; what an agent has seen survives every restart."""
    fleet.add_agent("kim", "#general", "#dispatch")
    kim = fleet.agent_client("kim")
    posted = [fleet.post(ch, f"m{i}") for i, ch in enumerate(["#general", "#dispatch"] * 3)]
    kim.call(wire.Inbox())
    kim.call(wire.Ack(channel="#general", up_to=posted[2].seq))
    kim.call(wire.Ack(channel="#dispatch", up_to=posted[5].seq))
    before = fleet.agent("kim").offsets
    assert before == {"#general": posted[2].seq, "#dispatch": posted[5].seq}
    assert fleet.stop_broker() == 0
    fleet.start_broker()
    after_general = [m.seq for m in fleet.read("#general")]
    after_dispatch = [m.seq for m in fleet.read("#dispatch")]
    assert after_general == [m.seq for m in posted if m.channel == "#general"]
    assert after_dispatch == [m.seq for m in posted if m.channel == "#dispatch"]
    assert fleet.agent("kim").offsets == before
    inbox = kim.call(wire.Inbox()).messages
    assert [m.seq for m in inbox] == [posted[4].seq]
    assert fleet.post("#general", "after").seq > posted[-1].seq


def test_a_second_broker_on_the_same_workspace_exits_at_once(fleet):
    """DESIGN §1: one broker per workspace; a second names the lock, the first keeps serving."""
    out = subprocess.run([sys.executable, "-m", "chatbox.broker"], env=child_env(fleet.ws), cwd=ROOT,
                         capture_output=True, text=True, encoding="utf-8", timeout=30)
    assert out.returncode != 0
    assert "another broker" in out.stderr
    assert str(fleet.broker.pid) in out.stderr
    assert fleet.broker.popen.poll() is None
    assert all(p.exists() for p in _socket_paths(fleet))
    assert fleet.post("#general", "still here").body == "still here"


def test_a_broker_in_an_uninitialised_directory_exits_naming_the_fix(tmp_path):
    """DESIGN §6: every error is one clear line on stderr; exit 1 when refused or failed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOX_")}
    env |= {"CHATBOX_WORKSPACE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "chatbox.broker"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, encoding="utf-8", timeout=30)
    assert out.returncode == 1
    assert "chatbox init" in out.stderr
    assert not (tmp_path / ".chatbox").exists()


def test_a_broker_refuses_a_non_loopback_tcp_bind_without_curve(bare_fleet):
    """DESIGN §7: over tcp:// CurveZMQ is mandatory; a bind without keys is refused (any address)."""
    bare_fleet.write_config('[bus]\nrequest = "tcp://0.0.0.0:45710"\n'
                            'events = "tcp://0.0.0.0:45711"\n')
    out = subprocess.run([sys.executable, "-m", "chatbox.broker"], env=child_env(bare_fleet.ws),
                         cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=30)
    assert out.returncode == 1
    assert "CurveZMQ" in out.stderr and "0.0.0.0" in out.stderr


def _raw_dealer(fleet) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(fleet.ws.endpoints().request)
    return sock


def _recv_reply(sock: zmq.Socket) -> wire.Reply:
    assert sock.poll(10_000, zmq.POLLIN), "no reply from the broker"
    return wire.reply_decoder.decode(sock.recv())


def test_a_garbage_frame_gets_an_error_reply_and_the_broker_keeps_serving(fleet):
    """DESIGN §3: never a crash: an undecodable frame is answered with bad_frame."""
    sock = _raw_dealer(fleet)
    try:
        sock.send(b"\x00garbage\xff")
        reply = _recv_reply(sock)
        assert reply.result is None and reply.error.code == "bad_frame"
        sock.send(msgspec.msgpack.encode({"v": 1, "rid": 77, "token": fleet.admin_token,
                                          "req": {"op": "post", "body": ["not", "text"]}}))
        reply = _recv_reply(sock)
        assert (reply.rid, reply.error.code) == (77, "bad_frame")
    finally:
        sock.close()
    assert fleet.broker.popen.poll() is None
    assert fleet.post("#general", "alive").body == "alive"


def test_a_multi_frame_request_gets_an_error_reply_and_the_broker_keeps_serving(fleet):
    """wire: a request is one frame; anything else is refused, not a crash."""
    sock = _raw_dealer(fleet)
    try:
        env = wire.Envelope(v=wire.PROTOCOL_VERSION, rid=5, token=fleet.admin_token,
                            req=wire.Post(channel="#general", body="split"))
        sock.send_multipart([b"extra", wire.encode(env)])
        reply = _recv_reply(sock)
        assert (reply.rid, reply.error.code) == (5, "bad_frame")
        sock.send(wire.encode(wire.Envelope(v=wire.PROTOCOL_VERSION, rid=6,
                                            token=fleet.admin_token, req=wire.Whoami())))
        reply = _recv_reply(sock)
        assert reply.rid == 6 and reply.result == wire.PrincipalResult(name="alice",
                                                                         role="admin")
    finally:
        sock.close()
    assert [m.body for m in fleet.read("#general")] == []


def test_secret_files_and_sockets_are_private(fleet):
    """DESIGN §7: files under the data directory are 0600, the directory 0700, sockets 0600."""
    fleet.add_agent("kim", "#general")
    fleet.post("#general", "make the wal exist")
    data = fleet.ws.data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "agents").stat().st_mode) == 0o700
    for path in _socket_paths(fleet):
        st = path.stat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, path
    for path in (fleet.ws.admin_token_path, fleet.ws.agent_token_path("kim")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in data.rglob("*"):
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_sigterm_stops_the_broker_cleanly_and_removes_its_sockets(fleet):
    """STYLE (Processes): INT/TERM is a graceful stop; exit 0 and no stale socket files."""
    fleet.post("#general", "before the stop")
    assert fleet.stop_broker(signal.SIGTERM) == 0
    assert not any(p.exists() for p in _socket_paths(fleet))
    assert any(e.get("event") == "stopped" for e in fleet.broker.log_events())
    fleet.start_broker()
    assert [m.body for m in fleet.read("#general")] == ["before the stop"]


def test_the_same_idempotency_key_twice_posts_once(fleet):
    """DESIGN §2: a retry with the same key is answered with the first result."""
    client = fleet.client()
    a = client.call(wire.Post(channel="#general", body="once"), idem="k1").message
    b = client.call(wire.Post(channel="#general", body="once"), idem="k1").message
    other = fleet.client().call(wire.Post(channel="#general", body="once"), idem="k2").message
    assert a.seq == b.seq != other.seq
    assert [m.seq for m in fleet.read("#general")] == [a.seq, other.seq]


def test_a_retry_after_a_timeout_keeps_its_key_and_does_not_double_post(fleet):
    """DESIGN §2: a retry after a timeout is answered with the first result, never applied twice."""
    client = fleet.client(attempt_timeout=0.2, deadline=20)
    resets = []
    original_reset = client._reset_dealer

    def counting_reset():
        resets.append(1)
        original_reset()

    client._reset_dealer = counting_reset
    os.kill(fleet.broker.pid, signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(client.call, wire.Post(channel="#general", body="retried"))
            wait_for(lambda: len(resets) >= 2, timeout=10, what="the client to time out twice")
            os.kill(fleet.broker.pid, signal.SIGCONT)
            msg = future.result(timeout=20).message
    finally:
        os.kill(fleet.broker.pid, signal.SIGCONT)
    assert [m.seq for m in fleet.read("#general")] == [msg.seq]
    # The stored answer is the one every later retry with that key gets.
    log = [e for e in fleet.broker.log_events() if e.get("event") == "request_failed"]
    assert log == []


def test_duplicates_queued_while_the_broker_was_stopped_post_once(fleet):
    """DESIGN §2: an attempt and its retry that both reach the broker are applied once."""
    socks = [_raw_dealer(fleet) for _ in range(3)]
    try:
        for i, sock in enumerate(socks):  # complete each handshake before the broker stops
            sock.send(wire.encode(wire.Envelope(v=wire.PROTOCOL_VERSION, rid=i,
                                                token=fleet.admin_token, req=wire.Whoami())))
            assert _recv_reply(sock).result is not None
        payload = wire.encode(wire.Envelope(v=wire.PROTOCOL_VERSION, rid=99,
                                            token=fleet.admin_token, idem="dup",
                                            req=wire.Post(channel="#general", body="dup")))
        os.kill(fleet.broker.pid, signal.SIGSTOP)
        try:
            for sock in socks:
                sock.send(payload)
        finally:
            os.kill(fleet.broker.pid, signal.SIGCONT)
        seqs = {_recv_reply(sock).result.message.seq for sock in socks}
    finally:
        for sock in socks:
            sock.close()
    assert len(seqs) == 1
    assert [m.seq for m in fleet.read("#general")] == list(seqs)


def test_an_unreachable_broker_is_reported_as_such(bare_fleet):
    """DESIGN §6: exit code 3, broker unreachable — the client says so within its deadline."""
    client = BusClient(bare_fleet.ws.endpoints(), bare_fleet.admin_token, attempt_timeout=0.1,
                       deadline=0.3)
    try:
        with pytest.raises(Unreachable):
            client.call(wire.Whoami())
    finally:
        client.close()


def test_the_ready_line_names_the_endpoints(fleet):
    """DESIGN §6: broker prints one "ready" log line once it serves; STYLE: JSON lines off a TTY."""
    ready = [e for e in fleet.broker.log_events() if e.get("event") == "ready"]
    assert len(ready) == 1
    eps = fleet.ws.endpoints()
    assert (ready[0]["request"], ready[0]["events"]) == (eps.request, eps.events)
    assert (ready[0]["pid"], ready[0]["workspace"]) == (fleet.broker.pid, str(fleet.root))
    text = fleet.broker.log_text()
    assert fleet.admin_token not in text
    lines = text.splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)


def test_a_transition_is_logged_once_it_is_committed_never_when_its_request_is_rolled_back(fleet):
    """The broker logs each FSM transition after its batch commits. A Revoke that fails after
    it moved the agent (its token file cannot be removed: a directory stands there) is rolled
    back whole, the agent still WAKING, and its transition is not in the log; the Revoke that
    then succeeds is, once, naming the state it left."""
    fleet.add_agent("worker", "#general")
    fleet.post("#general", "wake up")
    wait_for(lambda: fleet.agent("worker").state == "WAKING", what="worker to wake")
    token = fleet.ws.agent_token_path("worker")
    token.unlink()
    token.mkdir()
    (token / "keep").write_text("x")
    with pytest.raises(Refused, match="internal error"):
        fleet.client().call(wire.Revoke(name="worker"))
    assert fleet.agent("worker").state == "WAKING"  # rolled back, the revocation with it
    (token / "keep").unlink()
    token.rmdir()
    fleet.client().call(wire.Revoke(name="worker"))
    fleet.broker.wait_log("transition", agent="worker", cause="revoked")
    lines = [json.loads(line) for line in fleet.broker.log_path.read_text().splitlines()
             if line.startswith("{")]
    revoked = [e for e in lines if e.get("event") == "transition" and e.get("cause") == "revoked"]
    assert [(e["frm"], e["to"]) for e in revoked] == [("WAKING", "ASLEEP")]
