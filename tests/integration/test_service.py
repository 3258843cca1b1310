"""``chatbox service install`` and the broker under a service manager (docs/SERVICES.md).

The units written for a temporary workspace pass ``systemd-analyze verify`` (skipped, with the
reason, where it does not exist); the broker started as its unit starts it, with
``NOTIFY_SOCKET`` naming a datagram socket bound here, says ``READY=1`` after its "ready" line
and ``STOPPING=1`` on SIGTERM; refusals are one line and write nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chatbox.broker.bootstrap import init_workspace
from chatbox.cli import service
from chatbox.runtime.workspace import Workspace
from tests.fleet import ROOT, Fleet, child_env, short_tempdir

ANALYZE = shutil.which("systemd-analyze")


def install(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatbox", "service", "install",
                           "--workspace", str(ws.root), *args],
                          env=child_env(ws), capture_output=True, text=True, timeout=60)


def verify(unit_dir: Path, *units: str, user: bool = False) -> subprocess.CompletedProcess:
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed here: the units cannot be verified")
    env = dict(os.environ)
    argv = [ANALYZE]
    if user:  # the user manager's verify wants a runtime directory of its own
        runtime = unit_dir / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        argv.append("--user")
    return subprocess.run([*argv, "verify", *(f"./{u}" for u in units)], cwd=unit_dir, env=env,
                          capture_output=True, text=True, timeout=60)


def service_section(path: Path) -> dict[str, list[str]]:
    """Each key of the unit's [Service] section -> its values, in order."""
    out: dict[str, list[str]] = {}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def unspecified(word: str, *, command: bool = False) -> str:
    """What systemd makes of one word of a setting: ``%%`` is ``%`` and any other ``%x`` a
    specifier it expands; in a command line ``$$`` is ``$`` and ``$NAME`` a variable."""
    escapes = {"%%": "%", "$$": "$"} if command else {"%%": "%"}
    pattern = "%.|\\$\\$|\\$" if command else "%."
    def one(m: re.Match) -> str:
        assert m.group() in escapes, f"{word!r}: systemd would expand {m.group()!r}"
        return escapes[m.group()]
    return re.sub(pattern, one, word)


@pytest.fixture
def fleet_with_agent():
    f = Fleet()
    try:
        f.start_broker()
        f.add_agent("echo", "#general")
        yield f
    finally:
        f.close()


@pytest.mark.parametrize("mode", ["--system", "--user"])
def test_units_for_a_workspace_verify(fleet_with_agent: Fleet, mode: str) -> None:
    f = fleet_with_agent
    unit_dir = f.root / "units"
    done = install(f.ws, mode, "--agent", "echo", "--unit-dir", str(unit_dir))
    assert done.returncode == 0, done.stderr
    assert (unit_dir / "broker.service").exists() and (unit_dir / "supervisor@.service").exists()
    assert "enable --now broker.service supervisor@echo.service" in done.stdout
    (unit_dir / "supervisor@echo.service").symlink_to("supervisor@.service")
    checked = verify(unit_dir, "broker.service", "supervisor@echo.service",
                     user=mode == "--user")
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    broker = service_section(unit_dir / "broker.service")
    assert broker["Type"] == ["notify"]
    assert broker["Environment"] == [f"CHATBOX_WORKSPACE={f.ws.root}"]
    assert broker["ReadWritePaths"] == [str(f.ws.root)]
    assert broker["ExecStart"] == [str(Path(sys.executable).parent / "broker")]
    supervisor = service_section(unit_dir / "supervisor@.service")
    assert supervisor["ExecStart"] == [f"{Path(sys.executable).parent / 'supervisor'} --agent %i"]
    for unit in (broker, supervisor):
        for key in ("NoNewPrivileges", "PrivateTmp"):
            assert unit[key] == ["yes"]
        assert unit["ProtectSystem"] == ["strict"] and unit["LimitNOFILE"] == ["65536"]
        assert unit["Restart"] == ["on-failure"]
        assert ("User" in unit) == (mode == "--system")
    # what would break bubblewrap stays out of the supervisor's unit
    assert not {"RestrictNamespaces", "ProtectKernelTunables"} & supervisor.keys()


def test_a_workspace_path_that_needs_quoting_verifies() -> None:
    root = short_tempdir() / "my work 100%$HOME"
    root.mkdir()
    ws = Workspace(root)
    init_workspace(ws, "alice")
    try:
        unit_dir = root.parent / "units"
        done = install(ws, "--system", "--unit-dir", str(unit_dir))
        assert done.returncode == 0, done.stderr
        checked = verify(unit_dir, "broker.service")
        assert checked.returncode == 0 and checked.stderr == "", checked.stderr
        unit = service_section(unit_dir / "broker.service")
        assert [unspecified(w) for w in shlex.split(unit["Environment"][0])] == \
            [f"CHATBOX_WORKSPACE={root}"]
        assert unspecified(unit["WorkingDirectory"][0]) == str(root)
        assert unspecified(unit["ReadWritePaths"][0].strip('"')) == str(root)
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def _notify_socket(abstract: bool, where: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"cbx-notify-{os.getpid()}-{where.name}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(where / "notify.sock")
        sock.bind(address)
    sock.settimeout(20)
    return sock, address


@pytest.mark.parametrize("abstract", [True, False], ids=["abstract", "path"])
def test_broker_started_by_its_unit_notifies_ready_then_stopping(bare_fleet: Fleet,
                                                                 abstract: bool) -> None:
    f = bare_fleet
    unit_dir = f.root / "units"
    assert install(f.ws, "--system", "--unit-dir", str(unit_dir)).returncode == 0
    unit = service_section(unit_dir / "broker.service")
    argv = [unspecified(w, command=True) for w in shlex.split(unit["ExecStart"][0])]
    env = child_env(f.ws)
    for assignment in unit["Environment"]:
        key, _, value = unspecified(shlex.split(assignment)[0]).partition("=")
        env[key] = value
    sock, address = _notify_socket(abstract, f.root)
    env["NOTIFY_SOCKET"] = address
    with sock:
        broker = f.spawn("broker", argv, env=env)
        f.broker = broker
        assert sock.recv(4096) == b"READY=1"
        assert any(e.get("event") == "ready" for e in broker.log_events()), \
            "READY=1 came before the ready line"
        assert unspecified(unit["WorkingDirectory"][0]) == str(f.ws.root)
        broker.popen.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert broker.popen.wait(20) == 0


def test_broker_serves_when_the_notify_socket_is_gone(bare_fleet: Fleet) -> None:
    f = bare_fleet
    env = child_env(f.ws, NOTIFY_SOCKET=str(f.root / "nobody-listens.sock"))
    f.broker = f.spawn("broker", [sys.executable, "-m", "chatbox.broker"], env=env)
    f.broker.wait_ready()
    f.broker.wait_log("notify_failed", state="READY=1")
    assert f.post("#general", "still serving").seq > 0


def _one_line_refusal(done: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatbox service: "), done.stderr
    for word in words:
        assert word in lines[0]


def test_install_refuses_in_one_line_and_writes_nothing(bare_fleet: Fleet) -> None:
    f = bare_fleet
    unit_dir = f.root / "units"
    _one_line_refusal(install(f.ws, "--agent", "Bad Name", "--unit-dir", str(unit_dir)), 2,
                      "'Bad Name'", "invalid")
    _one_line_refusal(install(f.ws, "--agent", "ghost", "--unit-dir", str(unit_dir)), 1,
                      "no agent 'ghost'")
    _one_line_refusal(install(f.ws, "--system", "--run-as", "me\nExecStartPre=/bin/sh",
                              "--unit-dir", str(unit_dir)), 2, "not a user name")
    nowhere = Workspace(f.root / "not-a-workspace")
    nowhere.root.mkdir()
    _one_line_refusal(install(nowhere, "--unit-dir", str(unit_dir)), 1,
                      "not a chatbox workspace")
    assert not unit_dir.exists()


def test_dry_run_prints_the_units_and_writes_nothing(bare_fleet: Fleet) -> None:
    f = bare_fleet
    unit_dir = f.root / "units"
    done = install(f.ws, "--system", "--dry-run", "--unit-dir", str(unit_dir))
    assert done.returncode == 0, done.stderr
    assert f"# {unit_dir / 'broker.service'}" in done.stdout
    assert f"# {unit_dir / 'supervisor@.service'}" in done.stdout
    assert "Type=notify" in done.stdout and "--agent %i" in done.stdout
    assert not unit_dir.exists()


def test_another_workspaces_units_are_kept(bare_fleet: Fleet) -> None:
    f = bare_fleet
    unit_dir = f.root / "units"
    unit_dir.mkdir()
    other = service.Target(workspace=Path("/srv/other"), bin_dir=Path("/opt/x/bin"),
                           user_mode=False, run_as="chatbox")
    theirs = service.broker_unit(other)
    (unit_dir / "broker.service").write_text(theirs, encoding="utf-8")
    _one_line_refusal(install(f.ws, "--system", "--unit-dir", str(unit_dir)), 1,
                      "/srv/other", "--prefix")
    assert (unit_dir / "broker.service").read_text(encoding="utf-8") == theirs
    assert not (unit_dir / "supervisor@.service").exists()  # all or nothing
    (unit_dir / "broker.service").write_text("[Service]\nExecStart=/bin/true\n")
    _one_line_refusal(install(f.ws, "--system", "--unit-dir", str(unit_dir)), 1,
                      "not written by chatbox")

    done = install(f.ws, "--system", "--prefix", "second", "--unit-dir", str(unit_dir))
    assert done.returncode == 0, done.stderr
    template = (unit_dir / "second-supervisor@.service").read_text(encoding="utf-8")
    assert "After=second-broker.service" in template
    again = install(f.ws, "--system", "--prefix", "second", "--unit-dir", str(unit_dir))
    assert again.returncode == 0, again.stderr  # this workspace's own units are rewritten


def test_deploy_examples_are_the_units_install_writes() -> None:
    """deploy/ keeps the units of the example workspace /srv/chatbox, exactly as written."""
    for name, text in service.units(service.EXAMPLE).items():
        assert (ROOT / "deploy" / name).read_text(encoding="utf-8") == text, (
            f"deploy/{name} differs from what `chatbox service install` writes; regenerate it "
            "from chatbox.cli.service.units(EXAMPLE)")
