"""Finding a workspace and the files in its data directory (DESIGN §8).

``--workspace DIR``, else ``CHATBOX_WORKSPACE`` (alias ``AGENTCHAT_WORKSPACE``), else the nearest
directory upward holding ``.chatbox/``, as git finds ``.git/``.

A directory that holds the seed's ``.agentchat/`` and no ``.chatbox/`` is a workspace of the seed
(AgentChat), not of ChatBox: found by name or upward, it is refused with a sentence that says so
and how to start ChatBox there (``chatbox init``), never with a missing token file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import msgspec

from chatbox.bus.bounds import NAME_RE  # the wire's whole-string pattern
from chatbox.bus.endpoints import Endpoints, default_endpoints
from chatbox.runtime import env

DATA_DIR = ".chatbox"
SEED_DIR = ".agentchat"  # the seed's data directory
CONFIG_FILE = "chatbox.toml"
TRAIL_FILE = "dispatch_comms.jsonl"  # the dispatch trail, appended by the broker


class WorkspaceError(Exception):
    """The workspace cannot be found or is not initialised."""


class Workspace:
    def __init__(self, root: str | os.PathLike):
        env.announce_seed_variables()  # every command makes one: none is silently ignored
        self.root = Path(root).resolve()
        self.data = self.root / DATA_DIR

    # --------------------------------------------------------------- discovery
    @classmethod
    def find(cls, explicit: str | os.PathLike | None = None) -> Workspace:
        named = explicit or env.workspace()
        if named:
            ws = cls(named)
            ws.refuse_seed()
            return ws
        here = Path.cwd().resolve()
        for candidate in (here, *here.parents):
            if (candidate / DATA_DIR).is_dir():
                return cls(candidate)
            if (candidate / SEED_DIR).is_dir():
                cls(candidate).refuse_seed()
        raise WorkspaceError(
            f"no workspace: no {DATA_DIR}/ in {here} or above it; run `chatbox init` or pass "
            "--workspace DIR")

    # --------------------------------------------------------------- files
    @property
    def db_path(self) -> Path:
        return self.data / "chatbox.db"

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def trail_path(self) -> Path:
        return self.root / TRAIL_FILE

    @property
    def admin_token_path(self) -> Path:
        return self.data / "token"

    @property
    def lock_path(self) -> Path:
        return self.data / "broker.lock"

    def agent_token_path(self, name: str) -> Path:
        return self.data / "agents" / f"{name}.token"

    def agent_dir(self, name: str) -> Path:
        """The agent's own directory (0700): its CLI home, its MCP socket, its API key file."""
        return self.data / "agents" / name

    def agent_home(self, name: str) -> Path:
        """Where ChatBox writes the agent CLI's own configuration (its MCP registration)."""
        return self.agent_dir(name) / "home"

    def agent_mcp_socket(self, name: str) -> Path:
        return self.agent_dir(name) / "mcp.sock"

    def agent_api_key_path(self, name: str) -> Path:
        """``auth = "api"``: the agent's API key, one line, 0600."""
        return self.agent_dir(name) / "api_key"

    def ensure_agent_dir(self, name: str) -> Path:
        path = self.agent_dir(name)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        return path

    def is_initialised(self) -> bool:
        return self.db_path.exists()

    def is_seed(self) -> bool:
        """The seed's workspace: its ``.agentchat/`` here, and no ``.chatbox/`` beside it."""
        return (self.root / SEED_DIR).is_dir() and not self.data.is_dir()

    def refuse_seed(self) -> None:
        if self.is_seed():
            raise WorkspaceError(
                f"{self.root} is a workspace of the seed (AgentChat: {self.root / SEED_DIR}), "
                f"not of ChatBox; run `chatbox init` there to start ChatBox beside it "
                f"(nothing of {SEED_DIR}/ is imported)")

    def require_data_dir(self) -> None:
        """What a client needs: the data directory (tokens, bus sockets). The database is the
        broker's alone, and a sandboxed turn does not even see it."""
        self.refuse_seed()
        if not self.data.is_dir():
            raise WorkspaceError(
                f"{self.root} is not a chatbox workspace (no {self.data}); run `chatbox init`")

    def require_initialised(self) -> None:
        self.refuse_seed()
        if not self.is_initialised():
            raise WorkspaceError(
                f"{self.root} is not a chatbox workspace (no {self.db_path}); run `chatbox init`")

    @property
    def curve_dir(self) -> Path:
        """The CurveZMQ keys of the bus over tcp (``chatbox.bus.curve``)."""
        return self.data / "curve"

    def endpoints(self, request: str | None = None, events: str | None = None) -> Endpoints:
        """The bus endpoints (the ipc defaults unless given); over tcp with this workspace's
        CURVE key directory and the heartbeats of ``[bus]`` in chatbox.toml."""
        default = default_endpoints(self.data)
        eps = Endpoints(request or default.request, events or default.events)
        if not eps.tcp:
            return eps
        from chatbox.runtime.config import load  # (config imports nothing of the workspace)
        bus = load(self.config_path).bus
        return msgspec.structs.replace(eps, curve=str(self.curve_dir),
                                       heartbeat_ms=round(bus.heartbeat * 1000),
                                       heartbeat_timeout_ms=round(bus.heartbeat_timeout * 1000))

    def ensure_data_dir(self) -> None:
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data, 0o700)
        (self.data / "agents").mkdir(mode=0o700, exist_ok=True)

    # --------------------------------------------------------------- tokens
    def read_token(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise WorkspaceError(f"no token file at {path}") from None
        except PermissionError:
            raise WorkspaceError(f"cannot read token file {path}: permission denied") from None


def add_process_args(parser) -> None:
    """The options every long-running process takes: --workspace and --log-level."""
    parser.add_argument("--workspace", help="workspace directory (default: CHATBOX_WORKSPACE, "
                        "or the nearest directory upward holding .chatbox/)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def new_token() -> str:
    """A fresh 256-bit bearer token."""
    return "cbx_" + secrets.token_urlsafe(32)


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, atomically (never half-written, never wider)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
