"""Events over the PUB socket: hints after commit, live once a client has synced."""

from __future__ import annotations

from chatbox.bus import wire


def test_a_synced_subscriber_receives_the_very_next_post(fleet):
    """DESIGN §4.6 / ZeroMQ slow joiner: after sync_events no event of its topics is dropped."""
    listener = fleet.client(attempt_timeout=1.0)
    listener.subscribe([wire.channel_topic("#general")])
    listener.sync_events(timeout=5)
    seq = fleet.post("#general", "right after the sync").seq
    got = listener.recv_event(5)
    assert got is not None
    topic, event = got
    assert topic == wire.channel_topic("#general")
    assert isinstance(event, wire.MessageEvent) and event.seq == seq
    assert not hasattr(event, "body")  # a hint, never content


def test_a_sync_does_not_swallow_other_events(fleet):
    """bus.client: events of other topics that arrive during a sync are kept for recv_event."""
    listener = fleet.client(attempt_timeout=1.0)
    listener.subscribe([wire.channel_topic("#general")])
    listener.sync_events(timeout=5)
    seq = fleet.post("#general", "one").seq
    listener.subscribe([wire.channel_topic("#alerts")])
    listener.sync_events(timeout=5)
    got = listener.recv_event(5)
    assert got is not None and got[1].seq == seq
