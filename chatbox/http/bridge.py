"""The async bridge from the HTTP server's event loop to the bus: every call as the caller.

A ``BusClient`` holds zmq sockets, which belong to one thread at a time, and blocks while the
broker answers. So a call runs in a worker thread (``anyio.to_thread``) with a client *checked
out* of a pool kept per token: no two threads ever share a client, and a client's sockets are
only handed on under the pool's lock (a memory barrier). The token is the caller's own — the
server never acts as anyone but the principal who asked, and the broker applies that
principal's role and ACL exactly as over the bus.

Requests take a worker thread only for one round trip (a millisecond or so): nothing that waits
for news holds a thread — ``/v1/wait`` and ``/v1/events`` wait on the event hub in the loop —
so a long-poll never delays another request. Worker threads are bounded by one limiter.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import anyio
import anyio.to_thread

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.endpoints import Endpoints
from chatbox.bus.errors import BusError
from chatbox.http.problems import from_bus

ATTEMPT_TIMEOUT = 2.0   # one round trip to the broker
DEADLINE = 4.0          # all retries of one request (a broker restart fits in it)
WORKERS = 64            # threads that may be in a bus call at once
IDLE_PER_TOKEN = 16     # clients kept open per token between calls
MAX_TOKENS = 256        # tokens whose idle clients are kept; the least recent are closed


class Pools:
    """Idle ``BusClient``s per token, checked out for one call at a time."""

    def __init__(self, endpoints: Endpoints):
        self.endpoints = endpoints
        self._idle: OrderedDict[str, list[BusClient]] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self, token: str) -> BusClient:
        with self._lock:
            idle = self._idle.get(token)
            if idle:
                self._idle.move_to_end(token)
                return idle.pop()
        return BusClient(self.endpoints, token, attempt_timeout=ATTEMPT_TIMEOUT,
                         deadline=DEADLINE)

    def release(self, client: BusClient, healthy: bool = True) -> None:
        evicted: list[BusClient] = []
        with self._lock:
            idle = self._idle.setdefault(client.token, [])
            self._idle.move_to_end(client.token)
            if healthy and not self._closed and len(idle) < IDLE_PER_TOKEN:
                idle.append(client)
            else:
                evicted.append(client)
            while len(self._idle) > MAX_TOKENS:
                evicted.extend(self._idle.popitem(last=False)[1])
        for c in evicted:
            c.close()

    def forget(self, token: str) -> None:
        """Close the idle clients of a token the broker refused (revoked, unknown)."""
        with self._lock:
            idle = self._idle.pop(token, [])
        for c in idle:
            c.close()

    def call_sync(self, token: str, req: wire.Request) -> wire.Result:
        client = self.acquire(token)
        healthy = False
        try:
            result = client.call(req)
            healthy = True
            return result
        except BusError as exc:
            healthy = exc.code not in ("unreachable", "protocol", "unauthorized")
            raise
        finally:
            self.release(client, healthy)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in clients:
            c.close()


class Bridge:
    """``await bridge.call(token, request)``: one bus round trip as that token's principal."""

    def __init__(self, endpoints: Endpoints, workers: int = WORKERS):
        self.endpoints = endpoints
        self.pools = Pools(endpoints)
        self.limiter = anyio.CapacityLimiter(workers)
        self.on_refused: Callable[[str], None] | None = None  # a token the broker refused

    async def call(self, token: str, req: wire.Request,
                   rename: dict[str, str] | None = None) -> wire.Result:
        """The result, or a ``ProblemError`` carrying the broker's refusal."""
        try:
            return await anyio.to_thread.run_sync(self.pools.call_sync, token, req,
                                                  limiter=self.limiter)
        except BusError as exc:
            if exc.code == "unauthorized":
                self.pools.forget(token)
                if self.on_refused is not None:
                    self.on_refused(token)
            raise from_bus(exc, rename) from None

    def close(self) -> None:
        self.pools.close()
