"""CURVE key files and the allow-list (``bus/curve.py``); the remote liveness of
``broker/liveness.py`` from XPUB subscription frames. In-process, real files."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from chatbox.broker.liveness import Liveness
from chatbox.bus import curve
from chatbox.bus.client import alive_topic


def test_concurrent_makers_agree_on_one_broker_key(tmp_path):
    where = tmp_path / "curve"
    made: list[curve.ServerKeys] = []
    threads = [threading.Thread(target=lambda: made.append(curve.ensure_server(where)[0]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1 and made[0] == curve.server_keys(where)
    assert curve.client_keys(where).server == made[0].public
    assert sorted(p.name for p in where.iterdir()) == [
        "allowed", "client.secret", "server.public", "server.secret"]  # no temporary left
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in where.rglob("*") if p.is_file())


def test_a_malformed_key_file_is_named(tmp_path):
    curve.ensure_server(tmp_path)
    (tmp_path / "client.secret").write_text("not a key\n")
    with pytest.raises(curve.CurveError, match="client.secret does not hold a CURVE key"):
        curve.client_keys(tmp_path)
    os.remove(tmp_path / "server.secret")
    with pytest.raises(curve.CurveError, match="chatbox keys issue local"):
        curve.server_keys(tmp_path)


def test_the_allow_list_is_read_again_when_it_changes(tmp_path):
    curve.ensure_server(tmp_path)
    allow = curve.AllowList(tmp_path)
    local = curve.client_keys(tmp_path).public
    assert allow.name_of(local) == "local" and allow.names() == {"local"}
    public = curve.issue(tmp_path, "gpu1", tmp_path / "out")
    assert allow.name_of(public) == "gpu1"
    refused: list[str] = []
    allow.on_refused = refused.append
    assert curve.revoke(tmp_path, "gpu1") and not curve.revoke(tmp_path, "gpu1")
    assert not allow.callback("chatbox", public) and refused == [public.decode()]
    assert allow.callback("chatbox", local)
    (curve.allowed_dir(tmp_path) / "stray.txt").write_text("ignored")
    assert allow.names() == {"local"}


def _frame(subscribe: bool, topic: bytes) -> bytes:
    return (b"\x01" if subscribe else b"\x00") + topic


def test_a_remote_supervisor_is_gone_when_its_alive_topic_is_unsubscribed():
    live = Liveness()
    sup = "echo-gpu1-12-abcdef"
    assert live.is_alive(sup) is None
    assert live.on_subscription(_frame(True, alive_topic(sup))) is None
    assert live.is_alive(sup) is True  # its event connection lasts: it counts as running
    assert live.on_subscription(_frame(False, b"wake/echo\0")) is None  # other topics: nothing
    assert live.on_subscription(_frame(False, b"alive/" + sup.encode())) is None  # no NUL
    assert live.on_subscription(_frame(False, alive_topic(sup))) == sup
    assert live.is_alive(sup) is None


def test_a_supervisor_watched_by_its_pidfd_is_left_to_it():
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd on this platform")
    live = Liveness()
    sup = "echo-here-1"
    assert live.watch(sup, os.getpid(), live.host) is True
    try:
        assert live.on_subscription(_frame(False, alive_topic(sup))) is None
    finally:
        live.close()
