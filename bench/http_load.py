"""The HTTP side under load: posts through ``chatbox serve`` next to posts through the bus, one
post waking hundreds of event streams, and the server's memory with hundreds of idle clients.

One broker (``synchronous=FULL``) and one ``chatbox serve`` on a temporary workspace, both real
processes; every client in processes of its own (spawned), so the client is not the limit::

    bus        --bus-clients processes, a BusClient each, sequential posts for --seconds
    http       --clients keep-alive HTTP clients (threads over --procs processes), sequential
               POST /v1/channels/%23bench/messages for --seconds: posts/s, latency
    ceiling    the same clients against a bare Starlette hello-world on the same uvicorn: what
               the HTTP stack alone allows on this machine
    fan-out    --streams open GET /v1/events streams (one asyncio process); --rounds times one
               post through the bus: per stream the time from the post's reply (the commit is
               before it) to that stream's `message` event, and per round to the last stream
    idle RSS   the server's resident memory before the streams connect and with all of them
               open and idle

    .venv/bin/python bench/http_load.py [--seconds 5] [--clients 32] [--procs 4]
        [--bus-clients 8] [--streams 500] [--rounds 20] [--json FILE]

Timings are printed, never asserted; docs/BENCHMARKS.md keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import threading
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (BenchBroker, latency_summary, machine, spawn_context,  # noqa: E402
                          table)
from bench.post_clients import BODY, run_clients, sequential_worker  # noqa: E402
from chatbox import harness  # noqa: E402
from chatbox.bus import wire  # noqa: E402
from chatbox.runtime import startup  # noqa: E402

CHANNEL = "#bench"
PATH = "/v1/channels/%23bench/messages"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- http posts

def _http_thread(port: int, token: str, worker: int, seconds: float, start_at: float,
                 out: list, method: str = "POST", path: str = PATH, expect: int = 201) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lat, done, errors = array("d"), array("d"), 0
    def body(text: str) -> str | None:
        return json.dumps({"body": text}) if method == "POST" else None

    for i in range(5):  # warm the connection and the server's client pool
        conn.request(method, path, body(f"warm {worker} {i}"), headers)
        conn.getresponse().read()
    time.sleep(max(0.0, start_at - time.monotonic()))  # every worker starts at start_at
    deadline = start_at + seconds
    i = 0
    while time.monotonic() < deadline:
        data = body(BODY.format(w=worker, i=i))
        t = time.perf_counter()
        conn.request(method, path, data, headers)
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter() - t)
        done.append(time.monotonic())
        if r.status != expect:
            errors += 1
        i += 1
    conn.close()
    out.append((lat.tobytes(), done.tobytes(), errors))


def http_worker(port: int, token: str, threads: int, first: int, seconds: float,
                start_at: float, conn, how: tuple = ()) -> None:
    out: list = []
    ts = [threading.Thread(target=_http_thread, args=(port, token, first + k, seconds,
                                                      start_at, out, *how))
          for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    conn.send(out)


def http_phase(port: int, token: str, clients: int, procs: int, seconds: float,
               how: tuple = ()) -> dict:
    mp = spawn_context()
    start_at = time.monotonic() + 3.0  # every process spawned and warmed by then
    per = [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]
    pipes, ps, first = [], [], 0
    for n in per:
        parent, child = mp.Pipe(duplex=False)
        p = mp.Process(target=http_worker, args=(port, token, n, first, seconds, start_at,
                                                 child, how), daemon=True)
        p.start()
        pipes.append(parent)
        ps.append(p)
        first += n
    lat: list[float] = []
    errors = 0
    for parent, p in zip(pipes, ps):
        for lat_b, _done_b, err in parent.recv():
            a = array("d")
            a.frombytes(lat_b)
            lat.extend(a)
            errors += err
        p.join(10)
    return {"clients": clients, "posts": len(lat), "posts_per_s": len(lat) / seconds,
            "latency_ms": latency_summary(lat), "errors": errors}


def bare_server(conn) -> None:
    """The ceiling: a Starlette hello-world on the same uvicorn, nothing of ours."""
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def hello(request):
        return Response(b'{"status":"ok"}', media_type="application/json")

    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as chatbox serve does
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    conn.send(sock.getsockname()[1])
    uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/", hello)]), log_config=None,
                                  access_log=False)).run(sockets=[sock])


def bare_phase(clients: int, procs: int, seconds: float) -> dict:
    mp = spawn_context()
    parent, child = mp.Pipe(duplex=False)
    server = mp.Process(target=bare_server, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        return http_phase(port, "-", clients, procs, seconds, ("GET", "/", 200))
    finally:
        server.terminate()
        server.join(5)


# ---------------------------------------------------------------------------- fan-out

async def _open_stream(port: int, token: str) -> tuple[asyncio.StreamReader, object]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write((f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
    await writer.drain()
    while True:  # headers, then the stream's first comment
        line = await reader.readline()
        if not line:
            raise RuntimeError("a stream closed before it was live")
        if line.startswith(b": live"):
            return reader, writer


async def _next_message(reader: asyncio.StreamReader) -> float:
    while True:
        line = await reader.readline()
        if not line:
            raise RuntimeError("a stream ended")
        if line.startswith(b"event: message"):
            return time.perf_counter()


async def fan_out(port: int, token: str, post, streams: int, rounds: int,
                  server_pid: int) -> dict:
    rss_before = rss_kib(server_pid)
    opened = []
    for i in range(0, streams, 50):  # open in slices: the listen backlog is not the test
        opened += await asyncio.gather(*(_open_stream(port, token)
                                         for _ in range(min(50, streams - i))))
    await asyncio.sleep(1.0)  # let the server settle before it is measured idle
    rss_idle = rss_kib(server_pid)
    per_client: list[float] = []
    last: list[float] = []
    from_send: list[float] = []
    loop = asyncio.get_running_loop()
    for r in range(rounds):
        waits = [asyncio.ensure_future(_next_message(rd)) for rd, _ in opened]
        sent = time.perf_counter()
        await loop.run_in_executor(None, post, f"wake round {r}")
        committed = time.perf_counter()
        arrived = await asyncio.gather(*waits)
        per_client.extend(max(0.0, a - committed) for a in arrived)
        last.append(max(arrived) - committed)
        from_send.append(max(arrived) - sent)
    for _, w in opened:
        w.close()
    return {"streams": streams, "rounds": rounds,
            "each_ms": latency_summary(per_client), "last_ms": latency_summary(last),
            "last_from_send_ms": latency_summary(from_send),
            "rss_before_kib": rss_before, "rss_idle_kib": rss_idle}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--bus-clients", type=int, default=8)
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    startup.raise_fd_limit()  # 500 streams and their clients

    with BenchBroker(channel=CHANNEL) as broker:
        server = harness.spawn("serve", [sys.executable, "-m", "chatbox", "serve", "--port", "0",
                                         "--workspace", str(broker.root)],
                               log_dir=broker.root, cwd=broker.root,
                               env=harness.child_env(None, PYTHONPATH=str(
                                   Path(__file__).resolve().parents[1])))
        port = server.wait_ready()["port"]
        bus = run_clients(broker, sequential_worker, args.bus_clients, posts=0,
                          seconds=args.seconds)
        bus.pop("timeline", None)
        web = http_phase(port, broker.admin_token, args.clients, args.procs, args.seconds)
        bare = bare_phase(args.clients, args.procs, args.seconds)
        client = broker.client()

        def post(body: str) -> None:
            client.call(wire.Post(channel=CHANNEL, body=body))

        fan = asyncio.run(fan_out(port, broker.admin_token, post, args.streams, args.rounds,
                                  server.pid))
        client.close()
        server.stop()

    print(table(["path", "clients", "posts/s", "p50 ms", "p99 ms", "max ms", "errors"], [
        ["bus (BusClient)", bus["clients"], bus["posts_per_s"], bus["latency_ms"]["p50"],
         bus["latency_ms"]["p99"], bus["latency_ms"]["max"], bus["errors"]],
        ["HTTP POST /v1/...", web["clients"], web["posts_per_s"], web["latency_ms"]["p50"],
         web["latency_ms"]["p99"], web["latency_ms"]["max"], web["errors"]],
        ["ceiling: bare Starlette GET", bare["clients"], bare["posts_per_s"],
         bare["latency_ms"]["p50"], bare["latency_ms"]["p99"], bare["latency_ms"]["max"],
         bare["errors"]],
    ]))
    print(f"\nHTTP/bus throughput ratio: {web['posts_per_s'] / bus['posts_per_s']:.2f}\n")
    print(table(["fan-out: one post, N streams", "p50 ms", "p90 ms", "p99 ms", "max ms"], [
        [f"each of {fan['streams']} streams, commit -> event", *fan["each_ms"].values()],
        [f"last stream per round ({fan['rounds']} rounds)", *fan["last_ms"].values()],
        ["last stream, from the post sent", *fan["last_from_send_ms"].values()],
    ]))
    print(f"\nserver RSS: {fan['rss_before_kib'] / 1024:.1f} MiB before the streams, "
          f"{fan['rss_idle_kib'] / 1024:.1f} MiB with {fan['streams']} idle streams open "
          f"({(fan['rss_idle_kib'] - fan['rss_before_kib']) / max(1, fan['streams']):.1f} KiB "
          "each)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "bus": bus, "http": web, "bare": bare,
                                               "fan_out": fan}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
