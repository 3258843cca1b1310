"""A bus that survives abuse (issue 13): a frame over the documented maximum (wire.MAX_FRAME,
ZMQ_MAXMSGSIZE) is dropped by ZeroMQ before the broker reads it, hundreds of big reads nobody
collects add a bounded amount to the broker's memory while other clients keep being served, and
a page of history is bounded in text as well as in messages. Real broker, real sockets."""

from __future__ import annotations

import os
import signal

import zmq

from chatbox.broker.messages import PAGE_TEXT
from chatbox.bus import wire


def raw_dealer(fleet) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(fleet.ws.endpoints().request)
    return sock


def envelope(token: str, req: wire.Request, rid: int = 1) -> bytes:
    return wire.encode(wire.Envelope(v=wire.PROTOCOL_VERSION, rid=rid, token=token, req=req))


def test_a_frame_over_the_maximum_is_dropped_unread_and_others_are_served(fleet):
    token = fleet.ws.admin_token_path.read_text().strip()
    big = raw_dealer(fleet)
    try:
        big.send(envelope(token, wire.Post(channel="#general", body="x")) + b" " * wire.MAX_FRAME)
        near = raw_dealer(fleet)
        near.send(b"{" + b" " * (wire.MAX_FRAME - 100))  # garbage just under the maximum
        assert near.poll(10_000), "a frame under the maximum is answered (as a bad frame)"
        assert b"bad_frame" in near.recv()
        near.close()
        assert fleet.post("#general", "still served").seq  # another client, meanwhile
        assert not big.poll(500), "the oversized frame got an answer: it was read"
    finally:
        big.close()
    assert [m.body for m in fleet.read("#general")] == ["still served"]


# ------------------------------------------------------------------ replies nobody collects

HOARDERS = 300         # clients that each ask for a big read and never collect it
BIG_BODY = 60 * 1024   # bytes of each message of the channel they read
BIG_MESSAGES = 12      # so each reply holds about 720 KiB: 300 of them are over 200 MiB
RSS_BOUND_MIB = 64     # what the storm may add to the broker's peak resident memory


def _memory_kib(pid: int, field: str) -> int:
    """A field of /proc/PID/status in KiB (VmRSS: resident now; VmHWM: its peak so far)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_big_reads_nobody_collects_keep_the_brokers_memory_bounded(fleet):
    """A batch's replies are held at most REPLY_BUDGET bytes at a time (then committed and
    sent), whatever the reads in it: hundreds of big reads queued at once by clients that go
    away without their answers add a bounded amount to the broker's peak memory, not their sum
    (before the budget: +200 MiB), and another client is served meanwhile."""
    token = fleet.ws.admin_token_path.read_text().strip()
    fleet.client().call(wire.CreateChannel(name="#big", topic="big messages"))
    for i in range(BIG_MESSAGES):
        fleet.post("#big", f"{i} " + "x" * BIG_BODY)
    read = envelope(token, wire.Read(channel="#big", since=0, limit=BIG_MESSAGES), rid=2)
    hoarders = []
    for _ in range(HOARDERS):  # connected first: each answered once, a small request
        sock = raw_dealer(fleet)
        sock.send(envelope(token, wire.Whoami()))
        assert sock.poll(10_000), "the broker answers a fresh client"
        sock.recv()
        hoarders.append(sock)
    pid = fleet.broker.pid
    before = _memory_kib(pid, "VmRSS")
    os.kill(pid, signal.SIGSTOP)  # every read queued before the broker drains any
    try:
        for sock in hoarders:
            sock.send(read)
            sock.close(linger=2000)  # the request is handed over; its answer never collected
    finally:
        os.kill(pid, signal.SIGCONT)
    for i in range(20):  # another client, served meanwhile
        assert fleet.post("#general", f"served {i}").seq
    assert len(fleet.read("#general")) == 20 and fleet.broker.returncode is None
    grown_mib = (_memory_kib(pid, "VmHWM") - before) / 1024
    print(f"broker peak resident memory grew {grown_mib:.0f} MiB for {HOARDERS} uncollected "
          f"reads of {BIG_MESSAGES * BIG_BODY // 1024} KiB")
    assert grown_mib < RSS_BOUND_MIB, f"the broker's peak memory grew {grown_mib:.0f} MiB"
    fleet.stop_broker()
    served = fleet.broker.wait_log("stopped")["served"]
    assert served >= 2 * HOARDERS + BIG_MESSAGES + 20, "the hoarders' reads were answered"


def test_a_page_of_history_is_bounded_in_text_as_well_as_in_messages(fleet):
    """A read of 1,000 messages of 64 KiB would be one 64 MiB reply: a page stops at
    ``messages.PAGE_TEXT`` characters, says ``more``, and paging on reads the rest."""
    fleet.client().call(wire.CreateChannel(name="#big", topic="big messages"))
    body = "y" * (wire.MAX_BODY - 16)
    count = PAGE_TEXT // len(body) + 20
    posted = [fleet.post("#big", f"{i} {body}").seq for i in range(count)]
    pages, since = [], 0
    while True:
        page = fleet.client().call(wire.Read(channel="#big", since=since, limit=wire.MAX_LIMIT))
        pages.append(page.messages)
        assert sum(len(m.body) for m in page.messages) <= PAGE_TEXT
        if not page.more:
            break
        since = page.messages[-1].seq
    assert len(pages) == 2 and [m.seq for p in pages for m in p] == posted
