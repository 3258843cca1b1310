"""``chatbox service install``: systemd units that run this workspace's broker and supervisors.

Two units per workspace: the broker (``Type=notify``: it says ``READY=1`` once it serves and
``STOPPING=1`` when it stops) and the template ``supervisor@.service``, one instance per agent
(``systemctl enable --now supervisor@kimi``). Each names the workspace and the executables of
the environment this command runs from, so the units start exactly what ``chatbox`` here starts.

A unit file that exists is replaced only if it is this workspace's (its marker line names the
same directory): another workspace's units, or anything not written here, are refused in one
line, and ``--prefix`` installs beside them. ``--dry-run`` prints the units and writes nothing.
Nothing runs ``systemctl``: the command prints the lines that enable the units.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from chatbox.bus.bounds import NAME_RE
from chatbox.runtime import startup
from chatbox.runtime.exits import Exit
from chatbox.runtime.workspace import Workspace

PROG = "chatbox service"
MARKER = "# chatbox-workspace: "
SYSTEM_DIR = Path("/etc/systemd/system")
_PLAIN = re.compile(r"[A-Za-z0-9/_.,:@+=-]+")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")  # a user name, or a numeric id


class Refused(Exception):
    """The units cannot be installed: one line naming what was wrong."""

    code = Exit.FAILED


class BadArgument(Refused):
    """A command-line value that can never be right (a malformed name)."""

    code = Exit.USAGE


class _Parser(startup.Parser):
    name = PROG  # every usage error, the subcommand's too, is `chatbox service: …`


@dataclass(frozen=True)
class Target:
    """What the units are written for: the workspace, the executables, the manager."""

    workspace: Path
    bin_dir: Path
    user_mode: bool
    run_as: str | None = None  # User= of the system units
    prefix: str = ""
    python: Path | None = None  # no console scripts in bin_dir: run this Python's -m

    @property
    def broker_unit(self) -> str:
        return f"{self.prefix}broker.service"

    @property
    def supervisor_unit(self) -> str:
        return f"{self.prefix}supervisor@.service"


# --------------------------------------------------------------------------- systemd quoting

def _specifiers(text: str) -> str:
    """``%`` starts a specifier (``%i``) in every unit setting: a literal one is ``%%``."""
    return text.replace("%", "%%")


def _word(text: str, *, command: bool = False) -> str:
    """One word of a list setting (ExecStart=, ReadWritePaths=), quoted where it must be."""
    text = _specifiers(text)
    if command:
        text = text.replace("$", "$$")  # ExecStart= expands $NAME
    if _PLAIN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _executable(t: Target, name: str, module: str) -> str:
    """The environment's console script, else its Python running the module."""
    if t.python is None:
        return _word(str(t.bin_dir / name), command=True)
    return " ".join(_word(w, command=True) for w in (str(t.python), "-m", module))


# --------------------------------------------------------------------------- the units

def _service_common(t: Target) -> list[str]:
    ws = str(t.workspace)
    lines = [] if t.user_mode else [f"User={_specifiers(t.run_as or 'root')}"]
    return lines + [
        f"Environment={_word('CHATBOX_WORKSPACE=' + ws)}",
        f"WorkingDirectory={_specifiers(ws)}",
    ]


def _hardening(t: Target) -> list[str]:
    lines = [
        "UMask=0077",
        "# a broker serves a socket per peer; every process raises its soft limit to this hard one",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "# the whole file system read-only, but for the workspace (database, sockets, turns' work)",
        "ProtectSystem=strict",
        f"ReadWritePaths={_word(str(t.workspace))}",
        "PrivateTmp=yes",
    ]
    if t.user_mode:
        lines += ["# a user manager can mount nothing without a user namespace of its own",
                  "PrivateUsers=yes"]
    return lines


def _install(t: Target) -> list[str]:
    return ["", "[Install]", f"WantedBy={'default.target' if t.user_mode else 'multi-user.target'}"]


def _header(t: Target, what: str) -> list[str]:
    return [f"# {what}",
            "# Written by `chatbox service install`; run it again rather than editing this file.",
            f"{MARKER}{t.workspace}"]


def broker_unit(t: Target) -> str:
    lines = _header(t, f"The ChatBox broker of the workspace {t.workspace}.") + [
        "[Unit]",
        f"Description=ChatBox broker ({_specifiers(str(t.workspace))})",
        "After=network.target",
        "",
        "[Service]",
        "# READY=1 once it serves (after its \"ready\" log line), STOPPING=1 when it stops",
        "Type=notify",
        "NotifyAccess=main",
        *_service_common(t),
        f"ExecStart={_executable(t, 'broker', 'chatbox.broker')}",
        "# SIGTERM: the batch in hand is committed and answered, the socket files removed, exit 0",
        "TimeoutStopSec=30",
        "Restart=on-failure",
        "RestartSec=2",
        *_hardening(t),
        "# The broker runs no turns, so it also takes what would break a supervisor's sandbox.",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictNamespaces=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        *_install(t),
    ]
    return "\n".join(lines) + "\n"


def supervisor_unit(t: Target) -> str:
    path = ":".join([str(t.bin_dir), "/usr/local/bin", "/usr/bin", "/bin"])
    lines = _header(t, f"One ChatBox supervisor per agent of the workspace {t.workspace}: "
                       f"`systemctl enable --now {t.prefix}supervisor@NAME`.") + [
        "[Unit]",
        f"Description=ChatBox supervisor of agent %i ({_specifiers(str(t.workspace))})",
        f"After={t.broker_unit}",
        f"Wants={t.broker_unit}",
        "",
        "[Service]",
        "Type=simple",
        *_service_common(t),
        "# the engines' CLIs (claude, codex, gemini, kimi) are looked up here: add their directory",
        f"Environment={_word('PATH=' + path)}",
        f"ExecStart={_executable(t, 'supervisor', 'chatbox.supervisor')} --agent %i",
        "# The first SIGINT finishes (or caps) the running turn and reports it: allow a turn.",
        "KillSignal=SIGINT",
        "TimeoutStopSec=660",
        "# A turn's children die with the supervisor (its PID namespace); also clean the cgroup.",
        "KillMode=control-group",
        "Restart=on-failure",
        "RestartSec=2",
        *_hardening(t),
        "# Every turn runs in bubblewrap, which needs unprivileged user and PID namespaces and",
        "# mounts a fresh /proc. Each of these would break it, so none is set here:",
        "#   RestrictNamespaces=            forbids the namespaces themselves",
        "#   ProtectKernelTunables=, ProtectKernelLogs=",
        "#                                  mount over parts of /proc: the kernel then refuses",
        "#                                  the sandbox a /proc of its own",
        "#   SystemCallFilter= without @mount   bubblewrap mounts and pivots its root",
        "# NoNewPrivileges= is safe only with an unprivileged (not setuid) bwrap, as Debian ships.",
        "# MemoryDenyWriteExecute= would break the Node.js CLIs' JIT; ProtectHome= would hide a",
        "# workspace under /home.",
        *_install(t),
    ]
    return "\n".join(lines) + "\n"


def units(t: Target) -> dict[str, str]:
    """File name -> text of every unit for ``t``."""
    return {t.broker_unit: broker_unit(t), t.supervisor_unit: supervisor_unit(t)}


# What deploy/broker.service and deploy/supervisor@.service are the units of (a test keeps them so).
EXAMPLE = Target(workspace=Path("/srv/chatbox"), bin_dir=Path("/opt/chatbox/.venv/bin"),
                 user_mode=False, run_as="chatbox")


# --------------------------------------------------------------------------- install

def default_unit_dir(user_mode: bool) -> Path:
    if not user_mode:
        return SYSTEM_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(config) / "systemd" / "user"


def _check_replaceable(path: Path, t: Target) -> None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise Refused(f"cannot read {path}: {exc.strerror}") from None
    owner = next((line[len(MARKER):] for line in text.splitlines() if line.startswith(MARKER)),
                 None)
    if owner != str(t.workspace):
        whose = f"the workspace {owner}'s" if owner else "not written by chatbox"
        raise Refused(f"{path} exists and is {whose}; pass --prefix NAME to install this "
                      "workspace's units beside it")


def write_units(unit_dir: Path, t: Target) -> list[Path]:
    """Every unit written atomically into ``unit_dir`` (0644); nothing written if one is
    refused."""
    made = units(t)
    for name in made:
        _check_replaceable(unit_dir / name, t)
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in made.items():
            path = unit_dir / name
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(text, encoding="utf-8")
                tmp.chmod(0o644)  # systemd and `systemctl cat` read it; it holds no secret
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(path)
    except OSError as exc:
        raise Refused(f"cannot write the units in {unit_dir}: {exc.strerror or exc}") from None
    return written


def _check_path(what: str, path: Path) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in str(path)):
        raise Refused(f"the {what} path {str(path)!r} holds a control character, which a unit "
                      "file cannot carry")


def _check_agents(ws: Workspace, names: list[str]) -> None:
    for name in names:
        if not NAME_RE.fullmatch(name):
            raise BadArgument(f"agent name {name!r} is invalid: lowercase letters, digits and "
                          "'_.-', at most 64, starting with a letter or digit")
        if not ws.agent_token_path(name).exists():
            raise Refused(f"no agent {name!r} in this workspace; add it first with "
                          f"`chatbox agent add {name}`")


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --------------------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="systemd units for this workspace.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = sub.add_parser("install", help="write the broker unit and the supervisor@ template")
    i.add_argument("--workspace", metavar="DIR", help="workspace directory (default: "
                   "CHATBOX_WORKSPACE, or the nearest directory upward holding .chatbox/)")
    i.add_argument("--agent", action="append", default=[], metavar="NAME",
                   help="an agent to enable a supervisor for (repeatable)")
    mode = i.add_mutually_exclusive_group()
    mode.add_argument("--user", dest="user_mode", action="store_true", default=None,
                      help="units of your user manager (default unless root)")
    mode.add_argument("--system", dest="user_mode", action="store_false",
                      help="units of the system manager (default as root)")
    i.add_argument("--unit-dir", metavar="DIR", help="write here instead of "
                   "/etc/systemd/system or ~/.config/systemd/user")
    i.add_argument("--prefix", metavar="NAME",
                   help="unit names NAME-broker and NAME-supervisor@ (a second workspace)")
    i.add_argument("--run-as", metavar="USER", help="User= of system units (default: the "
                   "workspace's owner)")
    i.add_argument("--dry-run", action="store_true", help="print the units; write nothing")
    return p


def target_for(args: argparse.Namespace) -> Target:
    ws, _ = startup.begin(PROG, args.workspace, config=False)
    user_mode = (os.geteuid() != 0) if args.user_mode is None else args.user_mode
    if args.prefix is not None and not NAME_RE.fullmatch(args.prefix):
        raise BadArgument(f"prefix {args.prefix!r} is invalid: a name like the agents' names")
    _check_agents(ws, args.agent)
    if args.run_as is not None and not _USER.fullmatch(args.run_as):
        raise BadArgument(f"--run-as {args.run_as!r} is not a user name")
    python = Path(os.path.abspath(sys.executable))  # not resolved: a venv's is a symlink
    bin_dir = python.parent
    for what, path in (("workspace", ws.root), ("environment", bin_dir)):
        _check_path(what, path)
    scripts = all(os.access(bin_dir / name, os.X_OK) for name in ("broker", "supervisor"))
    return Target(workspace=ws.root, bin_dir=bin_dir, user_mode=user_mode,
                  run_as=None if user_mode else (args.run_as or _owner(ws.root)),
                  prefix=f"{args.prefix}-" if args.prefix else "",
                  python=None if scripts else python)


def install(args: argparse.Namespace) -> int:
    t = target_for(args)
    unit_dir = Path(args.unit_dir) if args.unit_dir else default_unit_dir(t.user_mode)
    if args.dry_run:
        for name, text in units(t).items():
            print(f"# {unit_dir / name}\n{text}")
        return Exit.OK
    for path in write_units(unit_dir, t):
        print(f"wrote {path}")
    ctl = "systemctl --user" if t.user_mode else "systemctl"
    instances = " ".join(t.supervisor_unit.replace("@", f"@{a}") for a in args.agent)
    print(f"next:  {ctl} daemon-reload && {ctl} enable --now {t.broker_unit} {instances}".rstrip())
    return Exit.OK


def main(argv: list[str] | None = None) -> int:
    args = startup.parse(parser(), argv)
    if isinstance(args, int):
        return args
    try:
        return install(args)
    except startup.Startup as exc:
        return startup.report(exc)
    except Refused as exc:
        startup.say(PROG, exc)
        return int(exc.code)
