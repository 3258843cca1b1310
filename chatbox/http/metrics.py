"""``/metrics`` in the Prometheus text format, behind a principal's token.

Derived from what the server sees, never from a timer: the bus's agent events (each FSM
transition, with its cause) give wakes, turns by outcome and the wake and turn latencies (from
entering WAKING to BUSY, and from BUSY to the turn's end, timed when this server saw each
event); message events give messages by kind and escalations; the server's own requests give
HTTP requests by route and status and their latency. Queue depth per agent is counted when
scraped, as the scraper's principal: the messages after each agent's offset in each channel it
subscribes to (capped at one page per channel), so it is exactly what that principal may see.
"""

from __future__ import annotations

import re
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from chatbox.bus import wire
from chatbox.http.auth import caller, whoami
from chatbox.http.problems import ProblemError

_TURN_END = re.compile(r"^turn \d+ ([a-z_]+)")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)
STATES = ("ASLEEP", "WAKING", "BUSY")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.wakes = Counter("chatbox_wakes", "Agents woken (moves into WAKING)", ["agent"],
                             registry=r)
        self.turns = Counter("chatbox_turns", "Turns ended, by outcome", ["agent", "outcome"],
                             registry=r)
        self.wake_latency = Histogram("chatbox_wake_latency_seconds", "From WAKING to BUSY "
                                      "(the supervisor's claim)", ["agent"], registry=r,
                                      buckets=LATENCY_BUCKETS)
        self.turn_latency = Histogram("chatbox_turn_seconds", "From BUSY to the turn's end",
                                      ["agent"], registry=r, buckets=LATENCY_BUCKETS)
        self.state = Gauge("chatbox_agent_state", "1 for the state each agent is in",
                           ["agent", "state"], registry=r)
        self.paused = Gauge("chatbox_agent_paused", "1 while an agent is paused", ["agent"],
                            registry=r)
        self.queue = Gauge("chatbox_queue_depth", "Messages waiting for an agent (unacked, "
                           "not its own), as the scraper may see them", ["agent"], registry=r)
        self.messages = Counter("chatbox_messages", "Messages committed, by kind", ["kind"],
                                registry=r)
        self.escalations = Counter("chatbox_escalations", "Escalations to a human", registry=r)
        self.http = Counter("chatbox_http_requests", "HTTP requests, by route and status",
                            ["method", "route", "status"], registry=r)
        self.http_latency = Histogram("chatbox_http_request_seconds", "HTTP request latency "
                                      "(a stream: its whole life)", ["route"], registry=r)
        self.listeners = Gauge("chatbox_http_listeners", "Open event streams and long-polls",
                               registry=r)
        self._since: dict[str, tuple[str, float]] = {}

    # ------------------------------------------------------------------ from the bus
    def observe(self, ev: wire.Event) -> None:
        if isinstance(ev, wire.MessageEvent):
            self.messages.labels(ev.kind).inc()
            if ev.kind == "escalation":
                self.escalations.inc()
        elif isinstance(ev, wire.AgentEvent):
            self._transition(ev, time.monotonic())

    def _transition(self, ev: wire.AgentEvent, now: float) -> None:
        before, since = self._since.get(ev.agent, (None, now))
        if before == "BUSY" and ev.state != "BUSY":
            end = _TURN_END.match(ev.cause)
            self.turns.labels(ev.agent, end.group(1) if end else "ended").inc()
            self.turn_latency.labels(ev.agent).observe(now - since)
        if ev.state == "WAKING" and before != "WAKING":
            self.wakes.labels(ev.agent).inc()
        if ev.state == "BUSY" and before == "WAKING":
            self.wake_latency.labels(ev.agent).observe(now - since)
        for state in STATES:
            self.state.labels(ev.agent, state).set(1 if state == ev.state else 0)
        self.paused.labels(ev.agent).set(1 if ev.paused else 0)
        if ev.state != before:
            self._since[ev.agent] = (ev.state, now)

    # ------------------------------------------------------------------ from the server
    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.labels(method, route, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)


async def queue_depths(server, token: str) -> dict[str, int]:
    agents = (await server.bridge.call(token, wire.ListAgents())).agents
    depth: dict[str, int] = {}
    for a in agents:
        if a.revoked:
            continue
        n = 0
        for sub in a.subscriptions:
            since = a.offsets.get(sub.channel, sub.last_read)
            try:
                page = await server.bridge.call(token, wire.Read(channel=sub.channel,
                                                                 since=since,
                                                                 limit=wire.MAX_LIMIT))
            except ProblemError as exc:
                if exc.code in ("forbidden", "not_found"):
                    continue
                raise
            n += sum(1 for m in page.messages if m.author != a.name)
        depth[a.name] = n
    return depth


def route(server):
    async def run(request: Request) -> Response:
        try:
            who = caller(request, server.sessions)
            await whoami(server.bridge, who.token)
            metrics: Metrics = server.metrics
            for name, n in (await queue_depths(server, who.token)).items():
                metrics.queue.labels(name).set(n)
        except ProblemError as exc:
            return exc.response()
        metrics.listeners.set(len(server.hub.listeners))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
    return run
