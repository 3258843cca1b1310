"""``chatbox serve``: the HTTP API, MCP over HTTP, the web console and /metrics, one process.

A bus client like ``chatbox mcp``, never a part of the broker: the broker keeps its one loop,
and as many servers as wanted may run beside it (each on its own port, each with its own
sessions). It binds 127.0.0.1 by default; another address must be asked for, and its name then
is the only ``Host`` accepted (``--allow-host`` adds names a proxy or a LAN uses).

It binds its socket itself, before serving, so ``--port 0`` is answered with the port chosen;
once the application has started it logs one JSON line ``{"event": "ready", "url": …}`` (the
harness's handshake) and writes the port to ``--port-file`` if given. INT or TERM stop it.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import sys
from pathlib import Path

import structlog
import uvicorn

from chatbox.runtime import __version__, startup
from chatbox.runtime.exits import Exit
from chatbox.runtime.workspace import WorkspaceError
from chatbox.http.app import Server, build
from chatbox.http.guard import allowed_hosts

log = structlog.get_logger("http")

BACKLOG = 2048
GRACEFUL_STOP = 3.0  # seconds open streams get at a stop before they are cut


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatbox serve", description=__doc__.splitlines()[0])
    p.add_argument("--workspace", help="workspace directory (default: CHATBOX_WORKSPACE, or "
                   "the nearest directory upward holding .chatbox/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else is reachable by "
                        "others: put TLS in front of it)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    p.add_argument("--port-file", metavar="PATH", help="write the port here once serving")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name clients use for this server (Host header); repeatable")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return p


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted sockets inherit it: a response's headers and body are two writes, and Nagle
    # would hold the second for the client's delayed ACK (~40 ms a request)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def write_port(path: str, port: int) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not 0 <= args.port <= 65535:
        startup.say("chatbox serve", f"--port {args.port} is not a port (0 to 65535)")
        return Exit.USAGE
    try:
        ws, config = startup.begin("chatbox serve", args.workspace, initialised=False)
        ws.require_data_dir()
    except startup.Startup as exc:
        return startup.report(exc)
    except WorkspaceError as exc:
        startup.say("chatbox serve", exc)
        return Exit.FAILED
    startup.logging(config, args.log_level, component="http")
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        startup.say("chatbox serve", f"cannot listen on {args.host}:{args.port}: "
                    f"{exc.strerror or exc}")
        return Exit.FAILED
    port = sock.getsockname()[1]
    url = url_of(args.host, port)
    endpoints = ws.endpoints(config.bus.request, config.bus.events)
    server = Server(endpoints, __version__)

    def ready() -> None:
        gc.freeze()  # what start-up made lives as long as the process: no collection scans it
        if args.port_file:
            write_port(args.port_file, port)
        log.info("ready", url=url, host=args.host, port=port, workspace=str(ws.root))

    app = build(server, allowed_hosts(args.host, port, args.allow_host), on_ready=ready)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uv = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                       backlog=BACKLOG, proxy_headers=False,
                                       server_header=False,
                                       timeout_graceful_shutdown=GRACEFUL_STOP))
    try:
        uv.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        log.info("stopped")
    return Exit.OK if uv.started else Exit.FAILED


if __name__ == "__main__":
    sys.exit(main())
