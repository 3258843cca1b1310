"""``broker``: the one process that owns a workspace's database. Foreground; one "ready" line.

Under a service manager (systemd ``Type=notify``) it also says ``READY=1`` once it serves, after
the "ready" line, and ``STOPPING=1`` as soon as a stop signal ends its loop.

The audit chain is verified before the broker serves, from where the last verification ended
(``broker/audit_start.py``); a break is flagged in ``#alerts`` and a new segment starts.

The dispatch trail (``dispatch_comms.jsonl``) catches up with the database before the broker
serves and again when it stops, so a crash in between loses no line of it.
"""

from __future__ import annotations

import argparse
import os
import time

import apsw
import structlog

from chatbox.broker import audit_start, channels, fsm, gate
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.dispatcher import Dispatcher
from chatbox.broker.errors import BrokerError
from chatbox.broker.handlers import Handlers
from chatbox.broker.lock import WorkspaceLock
from chatbox.broker.server import Server
from chatbox.broker.store import Store
from chatbox.broker.trail import Trail, trail_path
from chatbox.bus.errors import EndpointError
from chatbox.runtime import __version__, startup
from chatbox.runtime.config import ConfigError, ConfigSource
from chatbox.runtime.workspace import add_process_args
from chatbox.runtime.exits import Exit


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="broker", description="Run the ChatBox broker (foreground).")
    add_process_args(p)
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL",
                   help="SQLite durability (default FULL: every reply means on disk)")
    return p


def _notify(log: structlog.BoundLogger, state: str) -> None:
    if not startup.notify(state) and os.environ.get("NOTIFY_SOCKET"):
        log.warning("notify_failed", state=state)  # the manager will time out; we still serve


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        ws, _ = startup.begin("broker", args.workspace, config=False)
        source = ConfigSource(ws.config_path)
        config = source.get()
    except ConfigError as exc:
        return startup.report(startup.Startup("broker", str(exc)))
    except startup.Startup as exc:
        return startup.report(exc)
    if (why := gate.too_few()) is not None:
        startup.say("broker", why)
        return Exit.FAILED
    startup.logging(config, args.log_level, component="broker")
    log = structlog.get_logger("broker")
    lock = WorkspaceLock(ws.lock_path)
    try:
        lock.acquire()
    except BrokerError as exc:
        startup.say("broker", exc)
        return Exit.FAILED
    try:
        store = Store(ws.db_path, synchronous=args.synchronous, existing=True)
        store.checkpoint_in_background()
        dispatcher = Dispatcher(source.limits_for)
        with store.write():  # (what recovery publishes is dropped, wakes being hints; logged)
            ctx = Ctx(store.db, Principal("broker", "admin"), time.time())
            channels.create_standing(ctx)
            audit_start.start(ws, ctx)  # verified from its checkpoint; a break flagged in #alerts
            dispatcher.recover(ctx)  # the supervisors kept: still there? watched again
        fsm.log_committed(ctx.outbox)
        trail = Trail(trail_path(ws.root))
        trail.catch_up(store.db)  # what a crash kept out of the trail; never fails the start
        source.on_error = lambda exc: log.error("config_rejected", error=str(exc))
        handlers = Handlers(store, ws, dispatcher, __version__, time.time())
        server = Server(handlers, ws.endpoints(config.bus.request, config.bus.events))
        server.trail = trail  # the loop appends to it after each commit
        server.bind()
        server.install_signals()
    except (BrokerError, EndpointError, apsw.Error, OSError) as exc:
        startup.say("broker", exc)
        lock.release()
        return Exit.FAILED
    log.info("ready", pid=os.getpid(), request=server.endpoints.request,
             events=server.endpoints.events, workspace=str(ws.root))
    _notify(log, "READY=1")
    try:
        server.serve()
    finally:
        _notify(log, "STOPPING=1")
        try:
            server.close()  # removes the socket files
        except OSError as exc:  # a workspace made read-only meanwhile: one line, not a trace
            startup.say("broker", f"stopping: {exc}")
            code = Exit.FAILED
        else:
            code = Exit.OK
        trail.catch_up(store.db)
        store.close()
        lock.release()
        log.info("stopped", served=server.requests_served)
    return code
