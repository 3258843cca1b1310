"""CurveZMQ for the bus over ``tcp://`` (DESIGN §7): key files, the allow-list, the ZAP handler.

Over tcp every socket of the bus is CURVE: the broker's listeners are CURVE servers with the
broker's key pair, and every client pins the broker's public key (``curve_serverkey``). libzmq
sends no message before the handshake has proved that the peer holds the matching secret key,
so a process squatting the port while the broker is down receives a CURVE HELLO and nothing
else — never a token. The broker accepts a client only if its public key is in the allow-list,
asked through ZAP (pyzmq's ``zmq.auth``): a thread of the broker answers each handshake, and
re-reads the allow-list whenever its directory changed, so a key issued or revoked applies to
the next handshake without a restart.

The curve directory (``.chatbox/curve/``, 0700) holds one z85 key per file, each 0600:

=======================  ==================================================================
``server.secret``        the broker's secret key (its public key is derived from it)
``server.public``        the broker's public key: what every client pins
``client.secret``        this host's own client key (its public key is derived from it)
``allowed/NAME.public``  the allow-list: one public key per client name
``issued/NAME/``         what ``chatbox keys issue NAME`` wrote for another host: its
                         ``client.secret`` and the ``server.public`` it pins
=======================  ==================================================================

``local`` is the name of the broker's own host's client key, made with the broker's key pair.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import zmq
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from chatbox.bus.bounds import NAME_RE
from chatbox.bus.errors import EndpointError

LOCAL = "local"  # the client key of the broker's own host
ZAP_DOMAIN = b"chatbox"
_KEY_LEN = 40  # a 32-byte key in z85


class CurveError(EndpointError):
    """A CURVE key is missing, malformed or unreadable: one line naming the file and the fix."""


class ServerKeys(NamedTuple):
    public: bytes
    secret: bytes


class ClientKeys(NamedTuple):
    server: bytes  # the broker's public key, pinned
    public: bytes
    secret: bytes


def require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveError("this libzmq was built without CURVE support, so the bus cannot use "
                         "tcp://; use an ipc:// endpoint or a pyzmq wheel with libsodium")


# --------------------------------------------------------------------------- files

def _write(path: Path, key: bytes, *, exclusive: bool = False) -> bool:
    """``key`` into ``path`` as a 0600 file, atomically; ``exclusive``: only if there is none
    yet (False if one was there). Never half-written, never wider than 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if the file exists: two makers never both win
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def read_key(path: Path, what: str) -> bytes:
    """The z85 key in ``path``; CurveError naming the file if it is missing or malformed."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        raise CurveError(f"no {what} at {path}") from None
    except OSError as exc:
        raise CurveError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        if len(key) != _KEY_LEN:
            raise ValueError
        zmq.utils.z85.decode(key)
    except ValueError:
        raise CurveError(f"{path} does not hold a CURVE key ({_KEY_LEN} z85 characters)") from None
    return key


def public_of(secret: bytes) -> bytes:
    return zmq.curve_public(secret)


def _keypair() -> ServerKeys:
    public, secret = zmq.curve_keypair()
    return ServerKeys(public, secret)


def allowed_dir(curve_dir: Path) -> Path:
    return Path(curve_dir) / "allowed"


def issued_dir(curve_dir: Path, name: str) -> Path:
    return Path(curve_dir) / "issued" / name


def server_keys(curve_dir: Path) -> ServerKeys:
    """The broker's key pair; CurveError (the fix named) when there is none."""
    require_curve()
    path = Path(curve_dir) / "server.secret"
    if not path.exists():
        raise CurveError(f"over tcp the bus needs CurveZMQ keys and there are none in "
                         f"{curve_dir}: run `chatbox keys issue {LOCAL}` (and `chatbox keys "
                         "issue NAME` for each other host)")
    secret = read_key(path, "broker secret key")
    return ServerKeys(public_of(secret), secret)


def client_keys(curve_dir: Path) -> ClientKeys:
    """This host's client key and the broker key it pins; CurveError (the fix named) if not."""
    require_curve()
    curve_dir = Path(curve_dir)
    hint = (f"on the broker's host run `chatbox keys issue {LOCAL}`; on another host copy "
            f"there the files `chatbox keys issue NAME` wrote")
    secret_path, server_path = curve_dir / "client.secret", curve_dir / "server.public"
    for path in (secret_path, server_path):
        if not path.exists():
            raise CurveError(f"over tcp the bus needs CurveZMQ keys: no {path} ({hint})")
    secret = read_key(secret_path, "client secret key")
    return ClientKeys(read_key(server_path, "broker public key"), public_of(secret), secret)


def ensure_server(curve_dir: Path) -> tuple[ServerKeys, bool]:
    """The broker's key pair and this host's ``local`` client key, made if there are none;
    True if made now. Safe against a concurrent maker (the first file written wins)."""
    require_curve()
    curve_dir = Path(curve_dir)
    curve_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(curve_dir, 0o700)
    made = _write(curve_dir / "server.secret", _keypair().secret, exclusive=True)
    keys = server_keys(curve_dir)
    _write(curve_dir / "server.public", keys.public)
    if _write(curve_dir / "client.secret", _keypair().secret, exclusive=True) or \
            not (allowed_dir(curve_dir) / f"{LOCAL}.public").exists():
        local = read_key(curve_dir / "client.secret", "client secret key")
        _write(allowed_dir(curve_dir) / f"{LOCAL}.public", public_of(local))
    return keys, made


def issue(curve_dir: Path, name: str, out: Path) -> bytes:
    """A new client key pair for ``name``: its public key allowed, its secret key and the
    broker's public key written into ``out`` (0700). Refused if ``name`` is allowed already."""
    keys, _ = ensure_server(curve_dir)
    if Path(out).resolve() == Path(curve_dir).resolve():
        raise CurveError(f"{out} is this host's own key directory; write {name}'s files "
                         "elsewhere and copy them to that host")
    entry = allowed_dir(curve_dir) / f"{name}.public"
    if entry.exists():
        raise CurveError(f"a key for {name} is issued already; `chatbox keys revoke {name}` "
                         "first to replace it")
    pair = _keypair()
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    _write(out / "client.secret", pair.secret)
    _write(out / "server.public", keys.public)
    if not _write(entry, pair.public, exclusive=True):
        raise CurveError(f"a key for {name} was issued meanwhile; revoke it first")
    return pair.public


def revoke(curve_dir: Path, name: str) -> bool:
    """Remove ``name`` from the allow-list (and what was issued for it); False if absent."""
    entry = allowed_dir(curve_dir) / f"{name}.public"
    shutil.rmtree(issued_dir(curve_dir, name), ignore_errors=True)
    try:
        entry.unlink()
    except FileNotFoundError:
        return False
    return True


def allowed(curve_dir: Path) -> dict[str, bytes]:
    """The allow-list: client name -> public key (files that are not keys are skipped)."""
    found: dict[str, bytes] = {}
    try:
        entries = sorted(allowed_dir(curve_dir).iterdir())
    except FileNotFoundError:
        return found
    for path in entries:
        name = path.name.removesuffix(".public")
        if path.suffix != ".public" or not NAME_RE.fullmatch(name):
            continue
        try:
            found[name] = read_key(path, "public key")
        except CurveError:
            continue
    return found


# --------------------------------------------------------------------------- sockets

def serve(sock: zmq.Socket, keys: ServerKeys) -> None:
    """Make ``sock`` (before it binds) a CURVE server whose clients ZAP must admit."""
    sock.curve_server = True
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.zap_domain = ZAP_DOMAIN


def connect_as(sock: zmq.Socket, keys: ClientKeys) -> None:
    """Make ``sock`` (before it connects) a CURVE client that pins the broker's key."""
    sock.curve_serverkey = keys.server
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


class AllowList:
    """The allowed client keys, re-read when the ``allowed/`` directory changed (its mtime: a
    key issued or revoked is a file created or removed there)."""

    def __init__(self, curve_dir: Path, on_refused: Callable[[str], None] | None = None):
        self.curve_dir = Path(curve_dir)
        self.on_refused = on_refused
        self._lock = threading.Lock()
        self._stamp: int | None = -1
        self._names: dict[bytes, str] = {}

    def _current(self) -> dict[bytes, str]:
        try:
            stamp: int | None = allowed_dir(self.curve_dir).stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._names = {key: name for name, key in allowed(self.curve_dir).items()}
                self._stamp = stamp
            return self._names

    def names(self) -> frozenset[str]:
        """The client names allowed now."""
        return frozenset(self._current().values())

    def name_of(self, key: bytes) -> str | None:
        """The client name of z85 public key ``key``, or None if it is not allowed."""
        return self._current().get(key)

    def callback(self, domain: str, key: bytes) -> bool:
        """zmq.auth's credentials provider: is the client's key (z85) allowed?"""
        ok = self.name_of(key) is not None
        if not ok and self.on_refused is not None:
            self.on_refused(key.decode("ascii", "replace"))
        return ok


class Authenticator(ThreadAuthenticator):
    """The ZAP handler of the broker: a thread that admits the keys of ``allow`` and names
    each connection by its key's client name (the messages' ``User-Id``)."""

    def __init__(self, context: zmq.Context, allow: AllowList):
        super().__init__(context)
        self.allow = allow
        self.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=allow)

    def curve_user_id(self, client_public_key: bytes) -> str:
        key = zmq.utils.z85.encode(client_public_key)
        return self.allow.name_of(key) or key.decode("ascii")
