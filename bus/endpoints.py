"""Where the bus lives: ``ipc://`` sockets in the data directory by default, ``tcp://`` on request.

Over ``ipc://`` the socket files are created by a broker running with umask 077, so they are
0600. A ``tcp://`` endpoint must be on loopback: a non-loopback one needs CurveZMQ, which is not
built yet, so it is refused.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import msgspec

from chatbox.bus.errors import EndpointError

# sun_path is 108 bytes on Linux, 104 on macOS; libzmq needs the terminating NUL.
_MAX_IPC_PATH = 103


class Endpoints(msgspec.Struct, frozen=True):
    request: str
    events: str


def default_endpoints(data_dir: str | os.PathLike) -> Endpoints:
    """The ipc endpoints inside ``data_dir`` (tcp loopback on Windows, which has no ipc)."""
    if sys.platform == "win32":  # pragma: no cover - Windows has no ipc transport
        return Endpoints("tcp://127.0.0.1:5710", "tcp://127.0.0.1:5711")
    base = Path(data_dir)
    return Endpoints(f"ipc://{base / 'bus.req'}", f"ipc://{base / 'bus.pub'}")


def check(endpoint: str) -> str:
    """Return ``endpoint`` if it is safe to bind, else raise EndpointError saying why."""
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
        host = host.strip("[]")
        if not _is_loopback(host):
            raise EndpointError(
                f"refusing to bind {endpoint}: a non-loopback tcp endpoint needs CurveZMQ keys")
        return endpoint
    raise EndpointError(f"endpoint {endpoint!r}: unsupported transport {scheme!r} (use ipc or tcp)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ipc endpoint, or None for other transports."""
    scheme, _, rest = endpoint.partition("://")
    return Path(rest) if scheme == "ipc" else None
