"""``chatbox serve`` as a process: its refusals are one line and a named exit code, a broker that
is down is a 503 problem (never a hang or a traceback), and it comes back with the broker."""

from __future__ import annotations

import socket
import subprocess
import sys

from chatbox.harness import short_tempdir
from tests.fleet import ROOT, child_env

SERVE = [sys.executable, "-m", "chatbox", "serve"]


def run(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(SERVE + argv, capture_output=True, text=True, timeout=30, env=env,
                          cwd=ROOT)


def test_no_workspace_and_a_taken_port_are_one_line_each(bare_fleet):
    empty = short_tempdir()
    done = run(["--workspace", str(empty), "--port", "0"], child_env(bare_fleet.ws))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "not a chatbox workspace" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run(["--port", str(port)], child_env(bare_fleet.ws))
    assert done.returncode == 1
    assert done.stderr.strip() == (f"chatbox serve: cannot listen on 127.0.0.1:{port}: "
                                   "Address already in use"), done.stderr
    done = run(["--port", "70000"], child_env(bare_fleet.ws))
    assert done.returncode == 2 and done.stderr.count("\n") == 1


def test_a_broker_that_is_down_is_a_503_and_the_server_recovers_with_it(served):
    admin = served.admin()
    assert admin.get("/v1/rooms").status_code == 200
    served.fleet.stop_broker()
    r = admin.get("/v1/rooms")
    assert r.status_code == 503, r.text
    problem = r.json()
    assert problem["code"] == "unavailable" and "broker" in problem["detail"]
    assert "\n" not in problem["detail"]
    assert admin.get("/healthz").status_code == 200  # the server itself is up
    served.fleet.start_broker()
    assert admin.get("/v1/rooms").status_code == 200


def test_over_a_tcp_bus_the_server_is_a_curve_client_like_any(bare_fleet):
    from tests.http.conftest import Served
    from tests.http.test_live import Stream
    from tests.integration.test_curve import chatbox, tcp_config

    tcp_config(bare_fleet)
    assert chatbox(bare_fleet.ws, "keys", "issue", "local").returncode == 0
    bare_fleet.start_broker()
    served = Served(bare_fleet)
    try:
        admin = served.admin()
        stream = Stream(admin)
        try:
            r = admin.post("/v1/channels/%23general/messages", json={"body": "over curve"})
            assert r.status_code == 201, r.text
            assert stream.next()["data"]["body"] == "over curve"
        finally:
            stream.close()
    finally:
        served.close()
