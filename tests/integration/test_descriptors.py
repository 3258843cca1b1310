"""Running out of descriptors refuses new connections instead of ending the broker (issue 13).

The broker is started with a low hard RLIMIT_NOFILE (``prlimit``, so raising it to the hard
limit at start changes nothing); more clients connect than it has descriptors for. It stays
alive, a client connected before keeps being served, and once the crowd leaves new clients are
served again; a client that finds no socket meanwhile is told the broker is at its descriptor
limit. Below the minimum a broker needs for that, it does not start. Real broker, real
sockets."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.endpoints import ipc_path
from chatbox.bus.errors import Unreachable
from tests.integration.test_bus_abuse import envelope, raw_dealer

CROWD = 400    # connections opened against the broker, more than it has descriptors for


def need_prlimit() -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")


def test_a_broker_with_too_few_descriptors_does_not_start(bare_fleet):
    need_prlimit()
    done = subprocess.run(["prlimit", "--nofile=100:100", sys.executable, "-m", "chatbox.broker",
                           "--workspace", str(bare_fleet.ws.root)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("broker: the descriptor limit is 100, below the 128 a broker needs "
                           "to keep a reserve and refuse connections safely: raise it "
                           "(LimitNOFILE= in the unit, ulimit -n)\n")
    assert not ipc_path(bare_fleet.ws.endpoints().request).exists()  # never bound


@pytest.mark.parametrize("nofile", [128, 256])  # the broker's soft and hard limit
def test_a_broker_out_of_descriptors_refuses_connections_and_keeps_serving(bare_fleet, nofile):
    need_prlimit()
    fleet = bare_fleet
    broker = fleet.start_broker(["prlimit", f"--nofile={nofile}:{nofile}", sys.executable,
                                 "-m", "chatbox.broker"])
    token = fleet.ws.admin_token_path.read_text().strip()
    before = fleet.client()
    assert before.call(wire.Whoami()).name == fleet.human  # connected before the crowd
    crowd = []
    try:
        for i in range(CROWD):
            sock = raw_dealer(fleet)
            sock.send(envelope(token, wire.Whoami(), rid=i + 1))
            crowd.append(sock)
        refused = broker.wait_log("connections_refused")
        assert refused["limit"] == nofile
        newcomer = BusClient(fleet.ws.endpoints(), token, attempt_timeout=0.5, deadline=1.0)
        with pytest.raises(Unreachable) as why:  # told why, not that the socket was removed
            newcomer.call(wire.Whoami())
        newcomer.close()
        assert str(why.value) == ("the broker is at its descriptor limit and refuses new "
                                  "connections until some end (raise LimitNOFILE / ulimit -n)")
        for i in range(10):  # the client connected before is served while the crowd waits
            assert before.call(wire.Post(channel="#general", body=f"served {i}")).message.seq
        assert broker.returncode is None
        assert crowd[0].poll(10_000), "the first of the crowd got in"
        answered = sum(1 for sock in crowd if sock.poll(0))
        print(f"{answered} of {CROWD} connections accepted under a limit of {nofile}")
        assert 0 < answered < CROWD, answered  # some got in; the rest were not accepted
    finally:
        for sock in crowd:
            sock.close(linger=0)
    broker.wait_log("connections_accepted")  # the crowd gone, the gate opens again
    late = raw_dealer(fleet)
    try:
        late.send(envelope(token, wire.Whoami()))
        assert late.poll(10_000), "a client connecting after the crowd left is served"
        assert wire.reply_decoder.decode(late.recv()).result.name == fleet.human
    finally:
        late.close(linger=0)
    assert broker.returncode is None
    assert [m.body for m in fleet.read("#general")] == [f"served {i}" for i in range(10)]
    assert fleet.stop_broker() == 0
