"""Socket files removed while the broker runs (issue 8): the broker notices at once (inotify on
their directory, no timer), logs it and binds them again, so new clients reach it — and the
clients already connected keep their connections. Real broker, real sockets."""

from __future__ import annotations

import stat

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.endpoints import ipc_path
from tests.fleet import wait_event


def test_removed_socket_files_are_noticed_logged_and_bound_again(fleet):
    endpoints = fleet.ws.endpoints()
    paths = [ipc_path(endpoints.request), ipc_path(endpoints.events)]
    before = fleet.client()
    assert before.call(wire.Whoami()).name == fleet.human  # connected before the removal
    old_listener = fleet.listener(wire.channel_topic("#general"))
    for path in paths:
        path.unlink()
    for path in paths:
        fleet.broker.wait_log("socket_rebound", path=str(path))
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600

    fresh = BusClient(endpoints, fleet.admin_token)  # a client that comes after
    try:
        assert fresh.call(wire.Post(channel="#general", body="reached it")).message.seq
        new_listener = fleet.listener(wire.channel_topic("#general"))
        posted = before.call(wire.Post(channel="#general", body="still connected")).message
    finally:
        fresh.close()
    for listener in (old_listener, new_listener):
        wait_event(listener, lambda e: isinstance(e, wire.MessageEvent) and e.seq == posted.seq,
                   what="the event of a post after the rebinding")
    assert [m.body for m in fleet.read("#general")] == ["reached it", "still connected"]
