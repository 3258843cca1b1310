"""``chatbox.toml``, decoded into strict msgspec Structs (DESIGN §8).

Unknown keys are errors naming the key; impossible values are errors naming the value.
Precedence: command line > environment (``CHATBOX_*``) > file > defaults, for the settings that
have more than one source: :func:`load` lays ``CHATBOX_LOG_LEVEL``, ``CHATBOX_BUS_REQUEST`` and
``CHATBOX_BUS_EVENTS`` over the file, and a process's own options (``--log-level``) are applied
over what :func:`load` returns. Everything else comes from the file or the defaults.

``Engine`` and ``Behaviour`` are the one list of engine names and of stub behaviours.

An agent's ``auth``: ``"subscription"`` strips API-key variables (``*_API_KEY`` and the like)
from its turns, so the CLI uses its own login (made in the agent's CLI home); ``"api"`` reads the
key from the agent's 0600 key file (``secrets_file``, default ``.chatbox/agents/NAME/api_key``)
and hands it to the CLI in its own variable — never on a command line, never logged.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from chatbox.guardrails.limits import Limits
from chatbox.runtime import env

Engine = Literal["stub", "command", "claude", "kimi", "codex", "gemini"]
Behaviour = Literal["reply", "fail", "hang", "repeat", "give-up"]


class ConfigError(Exception):
    """chatbox.toml is unreadable or holds an unknown key or an impossible value."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


Seconds = Annotated[float, msgspec.Meta(ge=0.1, le=3600)]


class BusConfig(_Strict):
    request: str | None = None
    events: str | None = None
    # tcp only: ZMTP pings every `heartbeat` seconds; a peer silent `heartbeat_timeout` seconds
    # after a ping is dropped (a supervisor on another host is then known to be gone)
    heartbeat: Seconds = 10.0
    heartbeat_timeout: Seconds = 30.0


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


class StubConfig(_Strict):
    delay: float = 0.0
    behaviour: Behaviour = "reply"


class AgentConfig(_Strict):
    engine: Engine = "stub"
    auth: Literal["subscription", "api"] = "subscription"
    stub: StubConfig = msgspec.field(default_factory=StubConfig)
    command: list[str] = []
    reply: bool = True
    model: str | None = None
    # the model endpoint, for a proxy, a gateway or a compatible API (each CLI's own setting)
    base_url: str | None = None
    # auth = "api": the key file (one line, must be 0600); default .chatbox/agents/NAME/api_key
    secrets_file: str | None = None
    # where ChatBox writes the CLI's own configuration; default .chatbox/agents/NAME/home
    home: str | None = None
    # built-in tools of the CLI opened beside the chatbox ones (names as the CLI spells them)
    tools: list[str] = []
    max_turns: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20  # model round trips per turn
    # every turn in an OS sandbox (supervisor/sandbox.py); "none" is a deliberate opt-out
    sandbox: Literal["bwrap", "none"] = "bwrap"
    # further paths a turn may read in the sandbox, read-only (relative to the workspace, or
    # absolute); each must exist when a turn starts
    sandbox_paths: list[str] = []
    env: list[str] = []
    limits: dict[str, Any] = {}


class Config(_Strict):
    limits: Limits = msgspec.field(default_factory=Limits)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    agents: dict[str, AgentConfig] = {}

    def agent(self, name: str) -> AgentConfig:
        return self.agents.get(name) or AgentConfig()

    def limits_for(self, name: str) -> Limits:
        """The [limits] defaults with [agents.NAME.limits] laid over them."""
        override = self.agent(name).limits
        if not override:
            return self.limits
        merged = msgspec.structs.asdict(self.limits) | override
        try:
            limits = msgspec.convert(merged, Limits)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"[agents.{name}.limits]: {exc}") from None
        _check_limits(limits, f"agents.{name}.limits")
        return limits


def _check_limits(limits: Limits, where: str) -> None:
    problems = limits.validate()
    if problems:
        raise ConfigError(f"[{where}] " + "; ".join(problems))


def load(path: Path | None) -> Config:
    """Decode ``path`` (absent file: defaults), then apply ``CHATBOX_*`` environment overrides."""
    raw: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    env_level = env.log_level()
    if env_level:
        raw.setdefault("log", {})["level"] = env_level.lower()
    for key in ("request", "events"):
        value = env.bus_endpoint(key)
        if value:
            raw.setdefault("bus", {})[key] = value
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{exc}") from None
    _check_limits(config.limits, "limits")
    for name in config.agents:
        config.limits_for(name)
    return config


EXAMPLE = """\
# chatbox.toml — how each agent's turns run. Who an agent is lives in the database.
# Precedence: command line > environment (CHATBOX_*) > this file > defaults.

[limits]                    # defaults for every agent; each may be overridden per agent
max_hops = 6                # a chain of agent-to-agent posts this long wakes nobody more
max_turns_per_hour = 30     # past it the agent is paused and a human is asked
repeat_threshold = 3        # this many near-identical outputs in a row pause the agent
max_consecutive_failures = 3
max_turn_seconds = 600      # wall-time cap of one turn
max_output_bytes = 1048576  # output cap of one turn
max_redeliveries = 3        # a message redelivered more often is escalated instead

# [bus]
# request = "tcp://0.0.0.0:5710"     # default: ipc sockets in .chatbox/; tcp is CurveZMQ only
# events = "tcp://0.0.0.0:5711"      # (keys: `chatbox keys issue local`, docs/REMOTE.md)
# heartbeat = 10.0                   # tcp: a peer silent heartbeat + heartbeat_timeout seconds
# heartbeat_timeout = 30.0           # is dropped, a supervisor on another host then gone

# [agents.kimi]
# engine = "kimi"           # stub | command | claude | kimi | codex | gemini
# auth = "subscription"     # the CLI's own login, made with `chatbox agent login kimi`;
#                           # or "api": the key in .chatbox/agents/kimi/api_key (0600)
# model = "kimi-k2"         # the CLI's model name
# base_url = "http://127.0.0.1:8080"   # a proxy or compatible endpoint
# tools = []                # built-in CLI tools opened beside the chatbox ones (none by default)
# sandbox = "bwrap"         # each turn in bubblewrap: no admin token, chatbox.toml read-only;
#                           # "none" turns it off (logged at the supervisor's start)

# [agents.echo]
# engine = "stub"
# stub = { delay = 0.0, behaviour = "reply" }   # reply | fail | hang | repeat | give-up
"""


class ConfigSource:
    """The broker's view of chatbox.toml: re-read when the file changes, so a limit edited (or an
    agent section appended by ``chatbox agent add``) applies without a restart. A broken edit is
    reported and the last good configuration stays in force."""

    def __init__(self, path: Path, on_error=None):
        self.path = path
        self.on_error = on_error
        self._stamp: tuple[int, int] | None = None
        self._config = load(path)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> Config:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._config = load(self.path)
            except ConfigError as exc:
                if self.on_error is not None:
                    self.on_error(exc)
        return self._config

    def limits_for(self, name: str) -> Limits:
        return self.get().limits_for(name)
