"""Who the CLI is and where it talks: the workspace, the principal's token, the bus client.

The CLI acts as the workspace's admin (human) principal with the token in ``.chatbox/token``,
unless ``--as NAME`` names an agent whose token file it can read; ``CHATBOX_TOKEN`` overrides
both. Interactive commands use a short deadline, so a broker that is down is reported in seconds.
"""

from __future__ import annotations


from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.endpoints import Endpoints
from chatbox.runtime import env
from chatbox.runtime.config import load
from chatbox.runtime.workspace import Workspace, WorkspaceError

ATTEMPT_TIMEOUT = 2.0
DEADLINE = 3.0


class UsageError(Exception):
    """The command line (or an environment variable it relies on) is wrong: exit 2."""


class Failed(Exception):
    """The command could not be done, for a reason the CLI itself found: exit 1."""


class Session:
    """One CLI invocation's workspace, identity and (lazily opened) bus client."""

    def __init__(self, workspace: str | None, as_name: str | None = None):
        self.ws = Workspace.find(workspace)
        self.ws.require_data_dir()
        self.config = load(self.ws.config_path)
        self.as_name = as_name
        self._client: BusClient | None = None

    @property
    def endpoints(self) -> Endpoints:
        return self.ws.endpoints(self.config.bus.request, self.config.bus.events)

    def token_source(self) -> str:
        """Where the token comes from, for error messages (never the token itself)."""
        if env.token():
            return env.TOKEN
        if self.as_name:
            return str(self.ws.agent_token_path(self.as_name))
        return str(self.ws.admin_token_path)

    def token(self) -> str:
        given = env.token()
        if given:
            return given
        if self.as_name:
            if not wire.is_name(self.as_name):
                raise UsageError(f"--as {self.as_name!r} is not a valid agent name")
            path = self.ws.agent_token_path(self.as_name)
            try:
                token = self.ws.read_token(path)
            except WorkspaceError as exc:
                raise WorkspaceError(f"cannot act as {self.as_name}: {exc}") from None
        else:
            token = self.ws.read_token(self.ws.admin_token_path)
        if not token:
            raise WorkspaceError(f"token file {self.token_source()} is empty")
        return token

    @property
    def client(self) -> BusClient:
        if self._client is None:
            self._client = BusClient(self.endpoints, self.token(),
                                     attempt_timeout=ATTEMPT_TIMEOUT, deadline=DEADLINE)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
