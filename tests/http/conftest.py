"""Fixtures: a real broker and a real ``chatbox serve`` on a free port, and an HTTP client."""

from __future__ import annotations

import sys

import httpx
import pytest

from chatbox.bus import wire
from tests.fleet import Fleet


class Served:
    """A fleet with ``chatbox serve`` running on it: its URL, and clients for its principals."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.proc = fleet.spawn("serve", [sys.executable, "-m", "chatbox", "serve", "--port", "0"])
        ready = self.proc.wait_ready()
        self.url = ready["url"].rstrip("/")
        self.port = ready["port"]
        self._clients: list[httpx.Client] = []

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 10.0),
                         **kw)
        self._clients.append(c)
        return c

    def admin(self) -> httpx.Client:
        return self.client(self.fleet.admin_token)

    def agent_token(self, name: str, *channels: str) -> str:
        self.fleet.client().call(wire.AddAgent(name=name, subscribe=list(channels)
                                               or ["#general"]))
        return self.fleet.ws.read_token(self.fleet.ws.agent_token_path(name))

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.proc.stop()


@pytest.fixture
def served(fleet):
    s = Served(fleet)
    try:
        yield s
    finally:
        s.close()
