"""The chatbox MCP server as a turn's CLI starts it: a thin stdio relay, standard library only.

An agent CLI starts its MCP servers as child processes and waits for them (or, worse, does not);
importing the MCP SDK takes over a second here, so each turn's CLI gets this relay instead. It
connects to the supervisor's long-lived MCP server (``chatbox mcp --listen SOCKET``, SDK
already loaded), says which turn it serves in one header line, then copies bytes both ways
until either side ends. Run isolated (``python -I -S mcp_relay.py SOCKET --turn N``), it starts
in about 20 ms.

The turn id travels on the command line (it is not a secret): some CLIs start MCP servers with a
minimal environment, so ``CHATBOX_TURN_ID`` would not reach the relay.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys

_CHUNK = 65536


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="chatbox-mcp-relay")
    p.add_argument("socket", help="the supervisor's MCP server socket")
    p.add_argument("--turn", type=int, default=None, help="the turn this relay serves")
    args = p.parse_args(argv)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(args.socket)
    except OSError as exc:
        print(f"chatbox mcp relay: cannot reach the supervisor's MCP server at {args.socket}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    conn.sendall(json.dumps({"turn": args.turn}).encode() + b"\n")
    return pump(conn, sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno())


def pump(conn: socket.socket, fd_in: int, fd_out: int) -> int:
    """stdin -> conn and conn -> stdout until the server closes (or stdin ends and it answers)."""
    sel = selectors.DefaultSelector()
    sel.register(fd_in, selectors.EVENT_READ, "in")
    sel.register(conn, selectors.EVENT_READ, "conn")
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(fd_in, _CHUNK)
                if data:
                    conn.sendall(data)
                else:  # the CLI closed our stdin: let the server finish and close
                    sel.unregister(fd_in)
                    conn.shutdown(socket.SHUT_WR)
            else:
                data = conn.recv(_CHUNK)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(fd_out, view):]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        sys.exit(0)
