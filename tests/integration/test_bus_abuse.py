"""A bus that survives abuse (issue 13): a frame over the documented maximum (wire.MAX_FRAME,
ZMQ_MAXMSGSIZE) is dropped by ZeroMQ before the broker reads it, while other clients keep
being served. Real broker, real sockets."""

from __future__ import annotations

import zmq

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
