"""The wake loop's stop rules (issue: bounded shutdown), against a real bus client and socket.

No broker listens on the endpoint, so every report attempt times out for real; the stop
signals are the real ``StopSignals`` the supervisor installs, raised with ``signal.raise_signal``.
"""

from __future__ import annotations

import signal
import time

import pytest

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.endpoints import Endpoints
from chatbox.runtime.signals import StopSignals
from chatbox.supervisor import wake_loop
from chatbox.supervisor.wake_loop import Aborted, WakeLoop

REPORT = wire.TurnReport(agent="echo", supervisor="s", turn=7, epoch=3, outcome="ok")


@pytest.fixture
def loop(tmp_path):
    nowhere = f"ipc://{tmp_path}/nobody.sock"
    client = BusClient(Endpoints(nowhere, f"ipc://{tmp_path}/nobody-events.sock"), "cbx_x",
                       attempt_timeout=0.05, deadline=0.2)
    try:
        with StopSignals.installed() as signals:
            yield WakeLoop("echo", client, runner=None, signals=signals)
    finally:
        client.close()


def test_after_a_stop_a_report_is_retried_only_until_the_stop_deadline(loop, monkeypatch):
    monkeypatch.setattr(wake_loop, "STOP_REPORT_SECONDS", 0.5)
    monkeypatch.setattr(wake_loop, "REPORT_SLICE_SECONDS", 0.1)
    signal.raise_signal(signal.SIGTERM)
    assert loop.stopping and not loop.signals.now
    started = time.monotonic()
    assert loop.send_report(REPORT) is None  # given up: the broker will record the turn lost
    took = time.monotonic() - started
    assert 0.5 <= took < 5, took


def test_without_a_stop_a_report_is_not_given_up(loop, monkeypatch):
    """Before any signal the retries go on; a second signal then ends them with Aborted."""
    monkeypatch.setattr(wake_loop, "REPORT_SLICE_SECONDS", 0.1)
    monkeypatch.setattr(wake_loop, "STOP_REPORT_SECONDS", 3600)
    calls = []
    real_call = loop.client.call

    def call(req, **kw):
        calls.append(kw["idem"])
        if len(calls) == 3:  # the operator presses Ctrl-C twice while the broker is away
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return real_call(req, **kw)

    monkeypatch.setattr(loop.client, "call", call)
    with pytest.raises(Aborted):
        loop.send_report(REPORT)
    assert len(calls) >= 3
    assert len(set(calls)) == 1, "every retry carries the same idempotency key"


def test_a_transient_refusal_of_a_claim_is_retried_with_the_same_key_a_final_one_is_not(
        loop, monkeypatch):
    """``store`` is transient (bus/codes.py TRANSIENT): the claim is sent again until it lands;
    ``conflict`` is final: one attempt, no retry."""
    from chatbox.bus.codes import TRANSIENT, is_transient
    from chatbox.bus.errors import Refused, Transient

    assert TRANSIENT == {"store"} and is_transient("store") and not is_transient("conflict")
    monkeypatch.setattr(wake_loop, "RETRY_MAX_SECONDS", 0.01)
    keys = []

    def call(req, **kw):
        keys.append(kw["idem"])
        if len(keys) < 3:
            raise Transient("not stored: database or disk is full", code="store")
        return wire.ClaimResult(turn=None, epoch=4)

    monkeypatch.setattr(loop.client, "call", call)
    loop.pending_epoch = 4
    loop.claim_and_run()
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0]

    def final(req, **kw):
        keys.append(kw["idem"])
        raise Refused("stale claim", code="conflict")

    keys.clear()
    monkeypatch.setattr(loop.client, "call", final)
    loop.pending_epoch = 5
    loop.claim_and_run()  # logged and dropped, as before
    assert len(keys) == 1
