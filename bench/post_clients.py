"""The client side of ``bench/post_throughput.py``: worker processes that post through the bus,
and the gathering of their figures into one phase.

Each worker runs in its own spawned process (the GIL would otherwise make the client the
bottleneck), waits at a barrier so all start together, and sends back one tuple through its
pipe: (start, end, latencies as array('d') bytes, posts acknowledged, client CPU seconds,
errors, completion times as array('d') bytes).
"""

from __future__ import annotations

import os
import time
from array import array

from bench.common import BenchBroker, cpu_seconds, latency_summary, spawn_context, system_cpu
from chatbox.bus import wire
from chatbox.bus.client import new_key

CHANNEL = "#bench"
WARMUP = 20
BODY = ("status from worker {w}: build {i} is green on linux and the bench figures for the post "
        "path are ready for review; the numbers are in the usual place, ping me if anything "
        "looks off")


def sequential_worker(endpoints, token: str, worker: int, posts: int, seconds: float,
                      barrier, conn) -> None:
    """A BusClient posting one message at a time: ``posts`` of them, or for ``seconds``."""
    from chatbox.bus.client import BusClient

    client = BusClient(endpoints, token)
    for i in range(WARMUP):
        client.call(wire.Post(channel=CHANNEL, body=BODY.format(w=worker, i=-i)))
    barrier.wait()
    lat = array("d")
    done = array("d")
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + seconds if seconds else float("inf")
    i = 0
    while (posts and i < posts) or (not posts and time.monotonic() < deadline):
        body = BODY.format(w=worker, i=i)
        t = time.perf_counter()
        client.call(wire.Post(channel=CHANNEL, body=body))
        lat.append(time.perf_counter() - t)
        done.append(time.monotonic())
        i += 1
    end = time.monotonic()
    cpu = time.process_time() - cpu0
    client.close()
    conn.send((start, end, lat.tobytes(), WARMUP + len(lat), cpu, 0, done.tobytes()))


def pipelined_worker(endpoints, token: str, worker: int, window: int, seconds: float,
                     barrier, conn) -> None:
    """A raw DEALER keeping ``window`` posts in flight (distinct rids), for ``seconds``, each
    post with an idempotency key from the product's ``new_key``, as ``BusClient`` sends it."""
    import zmq

    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoints.request)
    sent: dict[int, float] = {}
    rid = 0
    errors = 0

    def send() -> None:
        nonlocal rid
        rid += 1
        env = wire.Envelope(v=wire.PROTOCOL_VERSION, rid=rid, token=token, idem=new_key(),
                            req=wire.Post(channel=CHANNEL, body=BODY.format(w=worker, i=rid)))
        sent[rid] = time.perf_counter()
        dealer.send(wire.encode(env))

    def receive() -> float:
        nonlocal errors
        reply = wire.reply_decoder.decode(dealer.recv())
        if reply.error is not None:
            errors += 1
        return time.perf_counter() - sent.pop(reply.rid)

    for _ in range(WARMUP):
        send()
        receive()
    barrier.wait()
    lat = array("d")
    done = array("d")  # completion times, for throughput over time
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + seconds
    for _ in range(window):
        send()
    while sent:
        if not dealer.poll(10_000):
            break  # the broker is gone; report what was acknowledged
        lat.append(receive())
        done.append(time.monotonic())
        if time.monotonic() < deadline:
            send()
    end = time.monotonic()
    cpu = time.process_time() - cpu0
    dealer.close()
    ctx.term()
    conn.send((start, end, lat.tobytes(), WARMUP + len(lat), cpu, errors + len(sent),
               done.tobytes()))


def run_clients(broker: BenchBroker, target, n: int, on_start=None, **kw) -> dict:
    """Start ``n`` worker processes, release them together, and gather their figures."""
    mp = spawn_context()
    barrier = mp.Barrier(n + 1)
    pipes, procs = [], []
    for w in range(n):
        parent, child = mp.Pipe(duplex=False)
        p = mp.Process(target=target, args=(broker.endpoints, broker.admin_token, w),
                       kwargs=dict(kw, barrier=barrier, conn=child), daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    barrier.wait(timeout=60)
    if on_start is not None:
        on_start()
    cpu0, sys0 = cpu_seconds(broker.pid), system_cpu()
    results = []
    for parent, p in zip(pipes, procs):
        if not parent.poll(120):
            raise RuntimeError(f"worker {p.pid} did not report")
        results.append(parent.recv())
        p.join(10)
    cpu1, sys1 = cpu_seconds(broker.pid), system_cpu()
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    lat: list[float] = []
    timeline: list[tuple[float, float]] = []  # (completed at, latency) of every post
    for r in results:
        a, d = array("d"), array("d")
        a.frombytes(r[2])
        d.frombytes(r[6])
        lat.extend(a)
        timeline.extend(zip(d, a))
    wall = end - start
    ncpu = os.cpu_count() or 1
    all_cores = ncpu * (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1])
    broker_cores = (cpu1 - cpu0) / wall
    client_cores = sum(r[4] for r in results) / wall
    return {
        "clients": n, "posts": len(lat), "seconds": wall, "posts_per_s": len(lat) / wall,
        "latency_ms": latency_summary(lat), "acked": sum(r[3] for r in results),
        "errors": sum(r[5] for r in results),
        "broker_cores": broker_cores, "client_cores": client_cores,
        "other_cores": max(0.0, all_cores - broker_cores - client_cores),
        "broker_cpu_us_per_post": 1e6 * (cpu1 - cpu0) / max(1, len(lat)),
        "client_cpu_us_per_post": 1e6 * sum(r[4] for r in results) / max(1, len(lat)),
        "start": start, "end": end, "timeline": sorted(timeline),
    }


def slices(phase: dict, count: int, history: int) -> list[dict]:
    """The phase cut into ``count`` equal time slices: posts/s, latency, messages stored."""
    width = (phase["end"] - phase["start"]) / count
    out, stored = [], history
    for i in range(count):
        lo, hi = phase["start"] + i * width, phase["start"] + (i + 1) * width
        lat = [la for t, la in phase["timeline"] if lo <= t < hi or (i == count - 1 and t == hi)]
        out.append({"start": lo, "end": hi, "stored_before": stored, "posts": len(lat),
                    "posts_per_s": len(lat) / width, "latency_ms": latency_summary(lat)})
        stored += len(lat)
    return out
