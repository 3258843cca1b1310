"""``chatbox agent …`` and ``chatbox channel …``: the roster and the rooms.

Who an agent *is* lives in the database (``AddAgent`` over the bus); how its turns *run* lives in
``chatbox.toml``. ``agent add`` appends an ``[agents.NAME]`` section when the file has none — it
never rewrites the file, so an operator's comments and layout survive.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import get_args

from chatbox.bus import wire
from chatbox.cli.output import (agent_details, agent_line, agent_obj, channel_line, json_line,
                                plain, safe_line)
from chatbox.cli.session import Failed, Session
from chatbox.runtime.config import Engine

ENGINES = get_args(Engine)  # the config's one list of engines
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# --------------------------------------------------------------------------- config section

def toml_key(name: str) -> str:
    """``name`` as a TOML key: bare when it can be, quoted otherwise (``"bot.v2"``)."""
    if _BARE_KEY.match(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def has_agent_section(path: Path, name: str) -> bool:
    """Does ``path`` already configure agent ``name``? (A file that is not TOML: we cannot say.)"""
    if not path.exists():
        return False
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise Failed(f"{path} is not valid TOML ({exc}); add [agents.{name}] by hand") from None
    agents = data.get("agents")
    return isinstance(agents, dict) and name in agents


def append_agent_section(path: Path, name: str, engine: str) -> bool:
    """Append ``[agents.NAME]`` to ``path`` unless it has one; True when appended."""
    if has_agent_section(path, name):
        return False
    lead = ""
    if path.exists():
        text = path.read_bytes()
        if text and not text.endswith(b"\n"):
            lead = "\n"
        if text:
            lead += "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f'{lead}[agents.{toml_key(name)}]\nengine = "{engine}"\n')
    return True


# --------------------------------------------------------------------------- agent commands

def cmd_agent_add(s: Session, args: argparse.Namespace) -> int:
    subscribe = list(dict.fromkeys(args.subscribe or ["#general"]))
    created = s.client.call(wire.AddAgent(name=args.name, subscribe=subscribe, wake=args.wake,
                                          engine=args.engine))
    try:
        appended = append_agent_section(s.ws.config_path, args.name, args.engine)
    except (Failed, OSError) as exc:
        print(f"chatbox: agent {args.name} added, but {exc}", file=sys.stderr)
        appended = None
    if args.json:
        print(json_line({"name": created.name, "token_path": created.token_path,
                         "engine": args.engine, "subscriptions": subscribe, "wake": args.wake,
                         "config_appended": bool(appended)}))
        return 0
    print(f"added agent {safe_line(created.name)} (engine {args.engine}), subscribed to "
          f"{' '.join(subscribe)} (wake {args.wake})")
    print(f"  token:  {safe_line(created.token_path)} (0600; the only copy — keep it secret)")
    if appended:
        print(f"  config: appended [agents.{toml_key(args.name)}] to {s.ws.config_path}")
    elif appended is False:
        print(f"  config: {s.ws.config_path} already has [agents.{toml_key(args.name)}]; "
              "left as it is")
    print(f"  next:   supervisor --agent {safe_line(created.name)} --workspace {s.ws.root}")
    return 0


def cmd_agent_list(s: Session, args: argparse.Namespace) -> int:
    agents = s.client.call(wire.ListAgents()).agents
    for agent in agents:
        print(json_line(agent_obj(agent)) if args.json else agent_line(agent))
    if not agents and not args.json:
        print("no agents yet: add one with `chatbox agent add NAME`", file=sys.stderr)
    return 0


def cmd_agent_show(s: Session, args: argparse.Namespace) -> int:
    agent = s.client.call(wire.ShowAgent(name=args.name)).agent
    print(json_line(agent_obj(agent)) if args.json else agent_details(agent))
    return 0


def _set_paused(s: Session, args: argparse.Namespace, paused: bool) -> int:
    reason = getattr(args, "reason", None)
    agent = s.client.call(wire.SetPaused(name=args.name, paused=paused, reason=reason)).agent
    if args.json:
        print(json_line(agent_obj(agent)))
    elif paused:
        print(f"paused {safe_line(agent.name)}: {safe_line(agent.paused_reason) or 'no reason'}")
    else:
        print(f"resumed {safe_line(agent.name)} (now {agent.state})")
    return 0


def cmd_agent_pause(s: Session, args: argparse.Namespace) -> int:
    return _set_paused(s, args, True)


def cmd_agent_resume(s: Session, args: argparse.Namespace) -> int:
    return _set_paused(s, args, False)


def cmd_agent_revoke(s: Session, args: argparse.Namespace) -> int:
    s.client.call(wire.Revoke(name=args.name))
    if args.json:
        print(json_line({"name": args.name, "revoked": True}))
    else:
        print(f"revoked {safe_line(args.name)}: its token no longer works")
    return 0


# --------------------------------------------------------------------------- channels

def cmd_channel_create(s: Session, args: argparse.Namespace) -> int:
    kind = "standing" if args.standing else ("private" if args.private else "adhoc")
    ch = s.client.call(wire.CreateChannel(name=args.channel, topic=args.topic, kind=kind)).channel
    print(json_line(plain(ch)) if args.json else f"created {channel_line(ch).lstrip('* ')}")
    return 0


def cmd_channel_list(s: Session, args: argparse.Namespace) -> int:
    for ch in s.client.call(wire.Rooms()).channels:
        print(json_line(plain(ch)) if args.json else channel_line(ch))
    return 0


def cmd_agent_login(args: argparse.Namespace) -> int:
    """``supervisor --agent NAME --login``: the supervisor knows its engine and its CLI home."""
    supervisor = os.path.join(os.path.dirname(sys.executable), "supervisor")
    argv = [supervisor, "--agent", args.name, "--login"]
    if getattr(args, "workspace", None):
        argv += ["--workspace", args.workspace]
    return subprocess.run(argv, check=False).returncode


# --------------------------------------------------------------------------- parser

def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    agent = sub.add_parser("agent", help="add, list, show, pause, resume or revoke agents",
                           description="Manage the agents of this workspace.")
    asub = agent.add_subparsers(dest="agent_command", metavar="COMMAND", required=True)

    p = asub.add_parser("add", parents=[common], help="add an agent (principal, token, config)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--engine", choices=ENGINES, default="stub",
                   help="how its turns run (default: stub)")
    p.add_argument("--subscribe", nargs="+", metavar="CH", action="extend",
                   help="channels to subscribe it to (default: #general)")
    p.add_argument("--wake", choices=get_args(wire.WakeMode), default="all",
                   help="which messages wake it (default: all)")
    p.set_defaults(handler=cmd_agent_add)

    p = asub.add_parser("list", parents=[common], help="the roster with FSM state")
    p.set_defaults(handler=cmd_agent_list)
    for name, handler, text in (("show", cmd_agent_show, "one agent in detail"),
                                ("resume", cmd_agent_resume, "resume a paused agent"),
                                ("revoke", cmd_agent_revoke, "revoke an agent's token at once")):
        p = asub.add_parser(name, parents=[common], help=text)
        p.add_argument("name", metavar="NAME")
        p.set_defaults(handler=handler)
    p = asub.add_parser("login", parents=[common],
                        help="the engine CLI's own login, kept in the agent's CLI home")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=cmd_agent_login)
    p = asub.add_parser("pause", parents=[common], help="pause an agent (no wakes until resumed)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--reason", metavar="TEXT")
    p.set_defaults(handler=cmd_agent_pause)

    channel = sub.add_parser("channel", help="create or list channels",
                             description="Manage the channels of this workspace.")
    csub = channel.add_subparsers(dest="channel_command", metavar="COMMAND", required=True)
    p = csub.add_parser("create", parents=[common], help="create a channel")
    p.add_argument("channel", metavar="CHANNEL", help="e.g. #design")
    p.add_argument("--topic", required=True, metavar="TEXT", help="what the channel is for")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--private", action="store_true", help="for its members only")
    kind.add_argument("--standing", action="store_true",
                      help="a standing channel (humans and admins only)")
    p.set_defaults(handler=cmd_channel_create)
    p = csub.add_parser("list", parents=[common], help="channels with unread counts")
    p.set_defaults(handler=cmd_channel_list)
