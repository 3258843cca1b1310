"""``supervisor --agent NAME``: one process per agent, waking it only when the broker says so.

This module is the command line; the loop itself is ``chatbox.supervisor.wake_loop.WakeLoop``.
Exit codes (``chatbox.runtime.exits.Exit``): 0 stopped by a signal after reporting, 1 failed or
refused, 3 the broker never answered at start, 4 stopped at once by a second signal.

Over ``tcp://`` (a supervisor on another host) it also subscribes to its own ``alive`` topic and
waits until that subscription is live at the broker before its Hello: the end of its event
connection is then how the broker knows it is gone (``broker/liveness.py``).
"""

from __future__ import annotations

import argparse
import os
import subprocess

import structlog

from chatbox.bus import wire
from chatbox.bus.client import BusClient, alive_topic
from chatbox.bus.errors import BusError, EndpointError, Refused, Unauthorized, Unreachable
from chatbox.runtime import env, startup
from chatbox.runtime.config import ConfigError
from chatbox.runtime.exits import Exit
from chatbox.runtime.signals import StopSignals
from chatbox.runtime.workspace import WorkspaceError, add_process_args
from chatbox.supervisor import engines, sandbox
from chatbox.supervisor.errors import SupervisorError
from chatbox.supervisor.mcp_hub import McpHub
from chatbox.supervisor.turn import TurnRunner, server_command
from chatbox.supervisor.wake_loop import Aborted, WakeLoop

log = structlog.get_logger("supervisor")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="supervisor",
                                description="Run one agent's supervisor (foreground).")
    p.add_argument("--agent", required=True, help="the agent this supervisor runs turns for")
    p.add_argument("--login", action="store_true",
                   help="run the engine CLI's own login in the agent's CLI home, then exit")
    add_process_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        # the data directory is enough: on another host there is no database, only the
        # agent's token, the CURVE keys and chatbox.toml
        ws, config = startup.begin("supervisor", args.workspace, initialised=False)
        ws.require_data_dir()
        agent_cfg = config.agent(args.agent)
        limits = config.limits_for(args.agent)
        token = env.token() or ws.read_token(ws.agent_token_path(args.agent))
    except (WorkspaceError, ConfigError) as exc:
        return startup.report(startup.Startup("supervisor", str(exc)))
    except startup.Startup as exc:
        return startup.report(exc)
    startup.logging(config, args.log_level, component="supervisor", agent=args.agent)
    endpoints = ws.endpoints(config.bus.request, config.bus.events)
    runner = TurnRunner(args.agent, agent_cfg, limits, ws, endpoints=endpoints)
    if args.login:
        return _login(args.agent, agent_cfg.engine, runner)
    problem = engines.preflight(agent_cfg.engine, os.environ.get("PATH"))
    if problem is None and agent_cfg.sandbox == "bwrap":
        problem = sandbox.check()
    elif agent_cfg.sandbox == "none":
        log.warning("sandbox_disabled", hint='sandbox = "none": turns run unconfined, as this '
                    "user, and can read every token of the workspace")
    if problem is None and agent_cfg.engine in engines.COMMANDS:
        try:
            runner.api_key()  # auth = "api": the key file is there, private, not empty
        except SupervisorError as exc:
            problem = str(exc)
    if problem is not None:
        startup.say("supervisor", f"{args.agent}: {problem}")
        return Exit.FAILED
    client = BusClient(endpoints, token, attempt_timeout=2.0, deadline=30.0)
    hub = None
    if agent_cfg.engine != "stub":  # the stub never calls a tool; every other engine may
        ws.ensure_agent_dir(args.agent)
        hub = McpHub(args.agent, ws.agent_mcp_socket(args.agent),
                     server_command(args.agent, ws), dict(os.environ), str(ws.root))
    signals = StopSignals()
    runner.hub = hub
    loop = WakeLoop(args.agent, client, runner, signals)
    try:
        return _run(args.agent, agent_cfg.engine, client, loop, signals, hub)
    finally:
        client.close()
        signals.uninstall()
        if hub is not None:
            hub.stop()
        log.info("stopped")


def _login(agent: str, engine: str, runner: TurnRunner) -> int:
    problem = engines.preflight(engine, os.environ.get("PATH"))
    try:
        if problem is not None:
            raise SupervisorError(problem)
        argv, extra, hint = engines.login_command(engine, runner.home)
    except SupervisorError as exc:
        startup.say("supervisor", f"{agent}: {exc}")
        return Exit.FAILED
    print(f"{agent}: {engine}'s own login, kept in {runner.home}: {hint}", flush=True)
    return subprocess.run(argv, env={**os.environ, **extra}, check=False).returncode


def _run(agent: str, engine: str, client: BusClient, loop: WakeLoop, signals: StopSignals,
         hub: McpHub | None) -> int:
    if hub is not None:
        try:
            hub.start()
        except SupervisorError as exc:  # e.g. a socket path too long for AF_UNIX
            log.warning("mcp_hub_unavailable", error=str(exc),
                        hint="each turn starts its own chatbox mcp instead (over a second)")
            loop.runner.hub = None
    try:
        client.subscribe([wire.wake_topic(agent)])
        if client.endpoints.tcp:
            client.subscribe([alive_topic(loop.id)])
            client.sync_events(timeout=client.deadline)  # live before the Hello names us
        signals.install()
        loop.hello()
    except EndpointError as exc:  # over tcp: no CURVE keys here, or unreadable ones
        startup.say("supervisor", f"{agent}: {exc}")
        return Exit.FAILED
    except SupervisorError as exc:
        startup.say("supervisor", f"{agent}: {exc}")
        return Exit.FAILED
    except Unauthorized as exc:
        startup.say("supervisor", f"{agent}: {exc}")
        return Exit.FAILED
    except Refused as exc:
        startup.say("supervisor", exc)
        return Exit.FAILED
    except Unreachable as exc:
        startup.say("supervisor", exc)
        return Exit.UNREACHABLE
    log.info("ready", supervisor=loop.id, engine=engine)
    try:
        loop.serve()
    except Aborted as exc:
        log.warning("aborted", reason=str(exc))
        return Exit.ABORTED
    except Unauthorized as exc:  # revoked (or its token replaced) while running
        startup.say("supervisor", f"{agent}: the broker refused this agent's token ({exc}): "
                    "it was revoked; stopping")
        return Exit.FAILED
    except BusError as exc:
        log.error("bus_failed", error=str(exc))
        return Exit.FAILED
    return Exit.OK
