"""``chatbox``: the operator CLI (DESIGN §6). Scripts and people both use it: a contract.

Exit codes are the named ones of ``chatbox.runtime.exits.Exit``: 0 ok, 1 refused by the broker
or failed, 2 a bad command line, 3 the broker is not answering.
Every error is one line on stderr, ``chatbox: <sentence>``, never a traceback.

``chatbox broker``, ``mcp``, ``demo``, ``serve``, ``service``, ``keys`` and ``verify-audit`` hand
their arguments, unparsed, to the program they name. Only ``chatbox init`` touches the database
itself (in-process, before any broker runs) and ``verify-audit`` reads it (read-only); everything
else goes over the bus as the admin principal, or as ``--as NAME``.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Callable

from chatbox.broker import entry as broker
from chatbox.bus import wire
from chatbox.bus.errors import BusError, ProtocolError, Refused, Unauthorized, Unreachable
from chatbox.runtime import __version__, env
from chatbox.cli.agents import add_parsers as add_agent_parsers, append_agent_section
from chatbox.cli.messages import cmd_approve, cmd_deny, cmd_post, cmd_read, cmd_tail
from chatbox.cli.output import agent_line, agent_obj, json_line, plain, safe_line, when
from chatbox.cli.session import Failed, Session, UsageError
from chatbox.cli.trail import cmd_trail
from chatbox.runtime.config import ConfigError
from chatbox.runtime.workspace import Workspace, WorkspaceError
from chatbox.runtime.exits import Exit


DELEGATED = ("broker", "mcp", "demo", "serve", "service", "keys", "verify-audit")
_WS_HELP = ("workspace directory (default: CHATBOX_WORKSPACE, or the nearest directory upward "
            "holding .chatbox/)")


def err(text: str) -> None:
    """One line on stderr: ``chatbox: <sentence>``."""
    line = " ".join(str(text).split())
    print(f"chatbox: {line}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- init and status

def cmd_init(args: argparse.Namespace) -> int:
    root = getattr(args, "workspace", None) or env.workspace() or os.getcwd()
    ws = Workspace(root)
    human = args.human or broker.default_human()
    report = None
    try:
        if args.import_agentchat:
            _, report = broker.import_seed(ws, human, args.import_agentchat, args.rename or [])
        else:
            broker.init_workspace(ws, human)
    except broker.BrokerError as exc:
        err(exc.message)
        return Exit.FAILED
    except OSError as exc:
        err(f"cannot create the workspace in {ws.root}: {exc.strerror or exc}")
        return Exit.FAILED
    print(f"initialised chatbox workspace {ws.root}")
    print(f"  human:  {human} (admin)")
    print(f"  data:   {ws.data} (0700)")
    print(f"  token:  {ws.admin_token_path} (0600; keep it secret — the CLI reads it)")
    print(f"  config: {ws.config_path}")
    if report:
        print_import(ws, report)
    print(f"  next:   chatbox broker --workspace {ws.root}")
    return Exit.OK


def print_import(ws: Workspace, report) -> None:
    print(f"imported the seed workspace {safe_line(str(report.source))}:")
    print(f"  {report.messages} messages (ids kept), {report.channels} channels, "
          f"{report.subscriptions} subscriptions, {report.cursors} read cursors")
    for name, engine in report.agents.items():
        try:
            note = "" if append_agent_section(ws.config_path, name, engine) else \
                " (chatbox.toml had its section already)"
        except (Failed, OSError) as exc:
            note = f" (not written to chatbox.toml: {exc})"
        print(f"  agent:  {safe_line(name)}, engine {engine}{safe_line(note)}; token "
              f"{ws.agent_token_path(name)} (0600)")
    if report.pending:
        shown = " ".join(f"#{s}" for s in report.pending[:20])
        more = f" and {len(report.pending) - 20} more" if len(report.pending) > 20 else ""
        print(f"  held:   {len(report.pending)} tier-2 posts await a human's decision "
              f"(chatbox approve/deny N; their authors are held until then): {shown}{more}")
    for what in report.skipped:
        print(f"  not carried: {safe_line(what)}")


def cmd_status(s: Session, args: argparse.Namespace) -> int:
    st = s.client.call(wire.Status())
    if args.json:
        obj = {k: plain(getattr(st, k)) for k in st.__struct_fields__ if k != "agents"}
        obj["agents"] = [agent_obj(a) for a in st.agents]
        print(json_line(obj))
        return Exit.OK
    print(f"broker:     running, pid {st.pid}, version {st.version}, "
          f"up since {when(st.started_at)}")
    print(f"workspace:  {st.workspace}")
    print(f"last seq:   #{st.last_seq}   channels: {st.channels}   principals: {st.principals}")
    print(f"agents:     {len(st.agents) or 'none'}")
    for agent in st.agents:
        print("  " + agent_line(agent))
    return Exit.OK


# --------------------------------------------------------------------------- delegation

def _split_delegated(argv: list[str]) -> tuple[str, list[str], str | None] | None:
    """``[--workspace DIR] broker|mcp|demo|serve|service|keys|verify-audit ARGS…`` ->
    (command, ARGS, DIR),
    else None."""
    workspace = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--workspace" and i + 1 < len(argv):
            workspace, i = argv[i + 1], i + 2
        elif arg.startswith("--workspace="):
            workspace, i = arg.partition("=")[2], i + 1
        elif arg in DELEGATED:
            return arg, argv[i + 1:], workspace
        else:
            return None
    return None


def _delegate(command: str, argv: list[str], workspace: str | None) -> int:
    if workspace:
        os.environ[env.WORKSPACE] = workspace
    if command == "broker":
        return broker.run(argv)
    # The other clients are loaded only when named: `chatbox post` never pays for the MCP SDK.
    if command == "demo":
        from chatbox.demo import main as run
    elif command == "serve":
        from chatbox.http.main import main as run
    elif command == "service":
        from chatbox.cli.service import main as run
    elif command == "keys":
        from chatbox.cli.keys import main as run
    elif command == "verify-audit":
        from chatbox.cli.audit import main as run
    else:
        from chatbox.mcp.server import main as run
    return run(argv)


# --------------------------------------------------------------------------- parser

class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (and still exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("chatbox").strip()
        err(f"{where + ': ' if where else ''}{message} (see `{self.prog} --help`)")
        raise SystemExit(Exit.USAGE)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _seq(text: str) -> int:
    try:
        value = int(text.lstrip("#"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a message number") from None
    if not 0 <= value <= wire.MAX_ID:
        raise argparse.ArgumentTypeError(f"a message number is 0 to {wire.MAX_ID}, got {value}")
    return value


def _not_utf8(argv: list[str]) -> int | None:
    """The position of the first argument that is not valid UTF-8 (Python keeps its bytes as
    lone surrogates), or None."""
    for i, arg in enumerate(argv):
        if any("\udc80" <= c <= "\udcff" for c in arg):
            return i
    return None


def build_parser() -> argparse.ArgumentParser:
    workspace_only = argparse.ArgumentParser(add_help=False)
    workspace_only.add_argument("--workspace", metavar="DIR", default=argparse.SUPPRESS,
                                help=_WS_HELP)
    common = argparse.ArgumentParser(add_help=False, parents=[workspace_only])
    common.add_argument("--as", dest="as_name", metavar="NAME", default=argparse.SUPPRESS,
                        help="act as agent NAME (its token file must be readable)")
    common.add_argument("--json", action="store_true", help="one JSON object per line")

    top = Parser(
        prog="chatbox", parents=[workspace_only],
        description="ChatBox: a local chat broker for AI agents.",
        epilog="exit codes: 0 ok, 1 refused or failed, 2 usage, 3 broker unreachable")
    top.add_argument("--version", action="version", version=f"chatbox {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", parents=[workspace_only],
                       help="create a workspace: data dir, database, admin token")
    p.add_argument("--human", metavar="NAME", help="the human principal (default: OS user)")
    p.add_argument("--import-agentchat", metavar="DIR",
                   help="carry a seed (AgentChat) workspace's channels, messages, subscriptions "
                        "and read cursors into the new one (DIR holds .agentchat/; it is only "
                        "read)")
    p.add_argument("--rename", metavar="OLD=NEW", action="append",
                   help="with --import-agentchat: a seed name or #channel under a new name "
                        "(repeatable)")
    p.set_defaults(run=cmd_init)

    for name, text in (("broker", "run the broker in the foreground (broker --help)"),
                       ("mcp", "the MCP stdio server for one agent: mcp --agent NAME"),
                       ("demo", "a live multi-agent demo on a temporary workspace"),
                       ("serve", "the HTTP API, MCP over HTTP and web console (serve --help)"),
                       ("service", "install systemd units for this workspace (service --help)"),
                       ("keys", "CurveZMQ keys of the bus over tcp: issue, revoke, list"),
                       ("verify-audit", "verify the audit chain from its first entry")):
        sub.add_parser(name, help=text, add_help=False)

    add_agent_parsers(sub, common)

    p = sub.add_parser("post", parents=[common], help="post a message (or a reply, or a post)")
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("body", metavar="BODY", help="the text; - reads it from stdin")
    p.add_argument("--reply-to", type=_seq, metavar="SEQ", help="reply in the thread of SEQ")
    p.add_argument("--title", metavar="T", help="make it a post with this title")
    p.add_argument("--type", metavar="TYPE", help="a post's type (e.g. proposal)")
    p.add_argument("--tier", type=int, choices=typing.get_args(wire.Tier), default=0,
                   help="a post's tier; 2 waits for a human's approval")
    p.set_defaults(handler=cmd_post)

    p = sub.add_parser("read", parents=[common], help="a channel's history, oldest first")
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("--since", type=_seq, default=0, metavar="SEQ", help="only after SEQ")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N messages")
    p.set_defaults(handler=cmd_read)

    p = sub.add_parser("tail", parents=[common], help="follow channels live until interrupted")
    p.add_argument("channels", nargs="*", metavar="CHANNEL")
    p.add_argument("--trail", action="store_true",
                   help="follow the dispatch trail (dispatch_comms.jsonl) instead; no broker needed")
    p.add_argument("--since", type=_seq, metavar="SEQ", help="first print history after SEQ")
    p.add_argument("--count", type=_positive, metavar="N",
                   help="exit after printing N messages")
    p.set_defaults(handler=cmd_tail)

    p = sub.add_parser("approve", parents=[common], help="approve a pending tier-2 post")
    p.add_argument("seq", type=_seq, metavar="SEQ")
    p.add_argument("--comment", metavar="TEXT")
    p.set_defaults(handler=cmd_approve)
    p = sub.add_parser("deny", parents=[common], help="deny a pending tier-2 post")
    p.add_argument("seq", type=_seq, metavar="SEQ")
    p.add_argument("--reason", required=True, metavar="TEXT")
    p.set_defaults(handler=cmd_deny)

    p = sub.add_parser("status", parents=[common], help="broker, workspace and agents")
    p.set_defaults(handler=cmd_status)
    return top


# --------------------------------------------------------------------------- main

def _run(handler: Callable[[Session, argparse.Namespace], int], args: argparse.Namespace) -> int:
    session = None
    try:
        session = Session(getattr(args, "workspace", None), getattr(args, "as_name", None))
        return handler(session, args)
    except Unauthorized as exc:
        where = f" (token from {session.token_source()})" if session else ""
        err(f"{exc.message}{where}")
        return Exit.FAILED
    except Refused as exc:
        err(f"{exc.message} (field: {exc.field})" if exc.field else exc.message)
        return Exit.FAILED
    except Unreachable as exc:
        root = session.ws.root if session else "the workspace"
        err(f"the broker is not running or not answering ({exc}); start it with "
            f"`chatbox broker --workspace {root}`")
        return Exit.UNREACHABLE
    except ProtocolError as exc:
        err(f"protocol error: {exc}")
        return Exit.FAILED
    except BusError as exc:
        err(str(exc))
        return Exit.FAILED
    except UsageError as exc:
        err(str(exc))
        return Exit.USAGE
    except (Failed, WorkspaceError, ConfigError) as exc:
        err(str(exc))
        return Exit.FAILED
    except KeyboardInterrupt:
        err("interrupted")
        return Exit.FAILED
    except BrokenPipeError:
        raise
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        err(f"unexpected {type(exc).__name__}: {exc}")
        return Exit.FAILED
    finally:
        if session is not None:
            session.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    bad = _not_utf8(argv)
    if bad is not None:
        err(f"argument {bad + 1} is not valid UTF-8: {os.fsencode(argv[bad])!r}")
        return Exit.USAGE
    delegated = _split_delegated(argv)
    if delegated is not None:
        return _delegate(*delegated)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else Exit.USAGE
    try:
        if hasattr(args, "run"):
            return args.run(args)
        if getattr(args, "trail", False):
            return cmd_trail(args)
        if args.command == "tail" and not args.channels:
            err("tail: name at least one CHANNEL, or --trail (see `chatbox tail --help`)")
            return Exit.USAGE
        return _run(args.handler, args)
    except KeyboardInterrupt:
        err("interrupted")
        return Exit.FAILED
    except BrokenPipeError:
        _silence_stdout()
        return Exit.OK  # `chatbox read … | head`: the reader left; not an error


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
