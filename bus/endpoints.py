"""Where the bus lives: ``ipc://`` sockets in the data directory by default, ``tcp://`` on request.

Over ``ipc://`` the socket files are created by a broker running with umask 077, so they are
0600. Over ``tcp://`` — any address, loopback included — every socket is CurveZMQ
(``chatbox.bus.curve``): ``curve`` names the directory of the keys, and a tcp endpoint without
it is refused. ``heartbeat_ms`` and ``heartbeat_timeout_ms`` are the ZMTP heartbeats of tcp
sockets: a peer behind a dead link is dropped at most ``heartbeat_ms + heartbeat_timeout_ms``
after it last spoke.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import msgspec

from chatbox.bus.errors import EndpointError
from chatbox.bus.wire import HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS

# sun_path is 108 bytes on Linux, 104 on macOS; libzmq needs the terminating NUL.
_MAX_IPC_PATH = 103


class Endpoints(msgspec.Struct, frozen=True):
    request: str
    events: str
    curve: str | None = None  # the CURVE key directory, for tcp://
    heartbeat_ms: int = HEARTBEAT_IVL_MS
    heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS

    @property
    def tcp(self) -> bool:
        return is_tcp(self.request) or is_tcp(self.events)


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def default_endpoints(data_dir: str | os.PathLike) -> Endpoints:
    """The ipc endpoints inside ``data_dir`` (tcp loopback on Windows, which has no ipc)."""
    if sys.platform == "win32":  # pragma: no cover - Windows has no ipc transport
        return Endpoints("tcp://127.0.0.1:5710", "tcp://127.0.0.1:5711")
    base = Path(data_dir)
    return Endpoints(f"ipc://{base / 'bus.req'}", f"ipc://{base / 'bus.pub'}")


def check(endpoint: str) -> str:
    """Return ``endpoint`` if it is well formed, else raise EndpointError saying why (whether
    a tcp one has its CURVE keys is the business of ``chatbox.bus.curve``)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or not rest:
        raise EndpointError(f"endpoint {endpoint!r} is not of the form ipc://PATH or tcp://HOST:PORT")
    if scheme == "ipc":
        if len(rest.encode()) > _MAX_IPC_PATH:
            raise EndpointError(
                f"ipc path {rest!r} is {len(rest.encode())} bytes, over the platform limit of "
                f"{_MAX_IPC_PATH}; use a shorter workspace path or a tcp:// endpoint")
        return endpoint
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise EndpointError(f"tcp endpoint {endpoint!r} needs HOST:PORT")
        return endpoint
    raise EndpointError(f"endpoint {endpoint!r}: unsupported transport {scheme!r} (use ipc or tcp)")


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ipc endpoint, or None for other transports."""
    scheme, _, rest = endpoint.partition("://")
    return Path(rest) if scheme == "ipc" else None
