"""The start-up preamble every process shares: find the workspace, read ``chatbox.toml``, set up
logging and the umask. Anything that goes wrong is one line on stderr and a named exit code.

    ws, config = startup.begin("supervisor", args.workspace)       # may raise Startup
    startup.logging(config, args.log_level, component="supervisor", agent=name)

``main()`` functions catch ``Startup`` and return ``startup.report(exc)``. A service manager
learns of readiness and stopping through :func:`notify` (systemd's ``Type=notify``).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from chatbox.runtime import logs
from chatbox.runtime.config import Config, ConfigError, load
from chatbox.runtime.exits import Exit
from chatbox.runtime.workspace import Workspace, WorkspaceError


class Startup(Exception):
    """A process cannot start: ``prog: <sentence>`` on stderr and ``code`` as its exit status."""

    def __init__(self, prog: str, message: str, code: Exit = Exit.FAILED):
        super().__init__(message)
        self.prog, self.message, self.code = prog, message, code


def say(prog: str, text: object) -> None:
    """One line on stderr, ``prog: <sentence>``, whatever ``text`` holds."""
    line = " ".join(str(text).split())
    print(f"{prog}: {line}", file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too, ``NAME: <message> (see `PROG --help`)``,
    and still exit 2. NAME is ``name`` where a subclass sets it (one prefix for a command and
    its subcommands), else the parser's own ``prog``."""

    name: str | None = None

    def error(self, message: str) -> None:  # type: ignore[override]
        say(self.name or self.prog, f"{message} (see `{self.prog} --help`)")
        raise SystemExit(Exit.USAGE)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """``parser``'s reading of ``argv``, or the exit code argparse ended with (0 after
    ``--help``, 2 after a usage error, both already printed)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else Exit.USAGE


def report(exc: Startup) -> int:
    say(exc.prog, exc.message)
    return int(exc.code)


def raise_fd_limit() -> None:
    """The soft limit on open descriptors up to the hard one: a broker serves a socket per
    peer, and running out must not be the first limit it meets."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def begin(prog: str, workspace: str | None, *, initialised: bool = True,
          config: bool = True) -> tuple[Workspace, Config]:
    """The workspace (``--workspace``, else the environment, else upward search) and its config."""
    os.umask(0o077)  # every file a process of ours creates is its user's alone
    raise_fd_limit()
    try:
        ws = Workspace.find(workspace)
        if initialised:
            ws.require_initialised()
        return ws, (load(ws.config_path) if config else load(None))
    except (WorkspaceError, ConfigError) as exc:
        raise Startup(prog, str(exc)) from None


def logging(config: Config, level: str | None, *, component: str, **bind: object) -> None:
    """structlog for this process: the command line's level, else the config's."""
    logs.configure(level or config.log.level, component=component, **bind)


def notify(state: str) -> bool:
    """Tell the service manager ``state`` (``READY=1``, ``STOPPING=1``): the sd_notify protocol,
    one datagram to the ``AF_UNIX`` socket named by ``NOTIFY_SOCKET`` (a leading ``@`` names an
    abstract socket). Without that variable this does nothing; True if the datagram was sent.
    Never raises: a manager that has gone away must not stop the process it manages."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/") or not hasattr(socket, "AF_UNIX"):
        return False  # unset, or a kind of address (vsock) a local service never gets
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True
