"""Durable posts per second through the bus, and the round-trip latency of one post.

Every figure is of a real broker process (``python -m broker --synchronous FULL``) on a temporary
workspace, over ``ipc://``, with posts whose reply means "on disk" (group commit: the broker
commits every batch of queued requests with one fsync before it answers any of them).

Phases::

    baselines   raw apsw single-row commits/s and batched rows/s (WAL, synchronous=FULL);
                a bare DEALER -> ROUTER -> DEALER round trip (echo in another process)
    1 client    one BusClient, N sequential posts (one round trip each)
    8 clients   8 processes, a BusClient each, sequential posts for --seconds
    pipelined   8 processes, raw DEALER, --window posts in flight each, for --seconds
    breakdown   the same three phases, shorter, against a broker with a timing probe: batch
                sizes, commits/s, and where each post's broker time goes
    durability  the broker is SIGKILLed; every acknowledged post must be in the database

Clients run in their own processes (spawned): the GIL would otherwise make the client the
bottleneck. The run stops by itself: about a minute with the defaults.

    .venv/bin/python bench/post_throughput.py [--posts 2000] [--clients 8] [--seconds 5]
        [--window 16] [--synchronous FULL] [--py-spy FILE] [--no-breakdown] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (PROBE_FIELDS, BenchBroker, PySpy, cpu_seconds, latency_summary,  # noqa: E402
                          machine, spawn_context, sqlite_commit_baseline, system_cpu, table,
                          wait_for_quiet, zmq_round_trip_baseline)
from bus import wire  # noqa: E402

CHANNEL = "#bench"
WARMUP = 20
BODY = ("status from worker {w}: build {i} is green on linux and the bench figures for the post "
        "path are ready for review; the numbers are in the usual place, ping me if anything "
        "looks off")


# ---------------------------------------------------------------------------- workers
# Each runs in its own spawned process and sends back one tuple through ``conn``: (start, end,
# latencies as array('d') bytes, posts acknowledged, client CPU seconds, errors, completion
# times as array('d') bytes or b"").

def sequential_worker(endpoints, token: str, worker: int, posts: int, seconds: float,
                      barrier, conn) -> None:
    """A BusClient posting one message at a time: ``posts`` of them, or for ``seconds``."""
    from bus import wire
    from bus.client import BusClient

    client = BusClient(endpoints, token)
    for i in range(WARMUP):
        client.call(wire.Post(channel=CHANNEL, body=BODY.format(w=worker, i=-i)))
    barrier.wait()
    lat = array("d")
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + seconds if seconds else float("inf")
    i = 0
    while (posts and i < posts) or (not posts and time.monotonic() < deadline):
        body = BODY.format(w=worker, i=i)
        t = time.perf_counter()
        client.call(wire.Post(channel=CHANNEL, body=body))
        lat.append(time.perf_counter() - t)
        i += 1
    end = time.monotonic()
    cpu = time.process_time() - cpu0
    client.close()
    conn.send((start, end, lat.tobytes(), WARMUP + len(lat), cpu, 0, b""))


def pipelined_worker(endpoints, token: str, worker: int, window: int, seconds: float,
                     barrier, conn) -> None:
    """A raw DEALER keeping ``window`` posts in flight (distinct rids), for ``seconds``."""
    import zmq

    from bus import wire

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
        env = wire.Envelope(v=wire.PROTOCOL_VERSION, rid=rid, token=token, idem=uuid.uuid4().hex,
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
    done: list[float] = []
    for r in results:
        for blob, into in ((r[2], lat), (r[6], done)):
            a = array("d")
            a.frombytes(blob)
            into.extend(a)
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
        "start": start, "end": end, "done": sorted(done),
    }


# ---------------------------------------------------------------------------- the breakdown

def breakdown(batches: list[list[float]], phase: dict) -> dict:
    """Probe records inside one phase's window: batch sizes, and µs per post by step."""
    rows = [b for b in batches if phase["start"] <= b[0] <= phase["end"]]
    n = sum(b[1] for b in rows) or 1
    wall = phase["end"] - phase["start"]
    sums = {f: sum(b[i] for b in rows) for i, f in enumerate(PROBE_FIELDS) if i >= 2}
    named = ("decode", "auth", "encode", "sql_savepoint", "sql_idem", "sql_insert", "sql_other")
    sums["python"] = sums["handle"] - sum(sums[f] for f in named)
    busy = sums["drain"] + sums["handle"] + sums["commit"] + sums["send"]
    return {
        "batches": len(rows), "requests": int(n), "per_batch": n / max(1, len(rows)),
        "commits_per_s": len(rows) / wall, "posts_per_s": n / wall,
        "commit_ms": 1e3 * sums["commit"] / max(1, len(rows)),
        "busy": busy / wall,
        "us_per_post": {k: 1e6 * v / n for k, v in sums.items()},
    }


# ---------------------------------------------------------------------------- report

def phase_table(phases: dict) -> str:
    return table(
        ["phase", "posts", "posts/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
         "broker CPU µs/post", "client CPU µs/post", "cores: broker+clients+others"],
        [[name, r["posts"], r["posts_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p90"],
          r["latency_ms"]["p99"], r["latency_ms"]["max"], r["broker_cpu_us_per_post"],
          r["client_cpu_us_per_post"],
          f"{r['broker_cores']:.2f} + {r['client_cores']:.2f} + {r['other_cores']:.2f}"]
         for name, r in phases.items()])


def ratios(base: dict, rtt: dict, phases: dict, history: dict | None) -> str:
    single = base["single_commits_per_s"]
    one, many, piped = phases.values()
    rows = [
        ["1 client posts/s ÷ SQLite single-row commits/s", one["posts_per_s"] / single],
        [f"{many['clients']} clients posts/s ÷ SQLite single-row commits/s",
         many["posts_per_s"] / single],
        [f"{many['clients']} clients posts/s ÷ 1 client posts/s",
         many["posts_per_s"] / one["posts_per_s"]],
        [f"{many['clients']} clients posts/s ÷ target 10,000", many["posts_per_s"] / 1e4],
        ["pipelined posts/s ÷ SQLite single-row commits/s", piped["posts_per_s"] / single],
        ["pipelined posts/s ÷ SQLite batched rows/s",
         piped["posts_per_s"] / base["batched_rows_per_s"]],
        ["1 client p50 ÷ ZeroMQ round trip p50", one["latency_ms"]["p50"] / rtt["p50"]],
        ["1 client p50 ÷ (ZeroMQ p50 + one SQLite commit)",
         one["latency_ms"]["p50"] / (rtt["p50"] + base["commit_ms"])],
    ]
    if history:
        for (name, fresh), hist in zip(phases.items(), history.values()):
            rows.append([f"{name}: posts/s on the history ÷ on a fresh database",
                         hist["posts_per_s"] / fresh["posts_per_s"]])
    return table(["ratio", "value"], rows)


def breakdown_table(probe: dict) -> str:
    steps = [("drain (recv from ROUTER)", "drain"), ("decode envelope", "decode"),
             ("auth (token hash)", "auth"), ("SAVEPOINT / RELEASE", "sql_savepoint"),
             ("idempotency lookup + insert", "sql_idem"),
             ("INSERT message (+ FTS trigger)", "sql_insert"),
             ("other SQL (channel, chain, wake query)", "sql_other"),
             ("msgpack encode", "encode"), ("Python (routing, validation, structs)", "python"),
             ("COMMIT (WAL write + fsync)", "commit"), ("send replies + publish events", "send")]
    names = list(probe)
    rows = [["batches (commits)", *(probe[n]["batches"] for n in names)],
            ["posts per batch (mean)", *(probe[n]["per_batch"] for n in names)],
            ["commits/s", *(probe[n]["commits_per_s"] for n in names)],
            ["posts/s (probe on)", *(probe[n]["posts_per_s"] for n in names)],
            ["one COMMIT (ms)", *(probe[n]["commit_ms"] for n in names)],
            ["broker loop busy (not in poll)", *(f"{probe[n]['busy']:.0%}" for n in names)]]
    rows += [[label, *(probe[n]["us_per_post"][key] for n in names)] for label, key in steps]
    rows.append(["total broker µs per post",
                 *(sum(probe[n]["us_per_post"][k] for k in ("drain", "handle", "commit", "send"))
                   for n in names)])
    return table(["µs per post", *names], rows)


def report(mach: dict, load: float, base: dict, rtt: dict, phases: dict, history: dict | None,
           probe: dict | None, spy: tuple | None, durable: tuple[int, int], args) -> str:
    out = ["## Machine", ""]
    out += [f"- {k}: {v}" for k, v in mach.items()]
    out += [f"- load from other processes just before the run: {load:.0%} of all CPUs"]
    out += ["", "## Baselines (same machine, same run)", "",
            table(["baseline", "figure"], [
                [f"SQLite single-row commits/s (WAL, synchronous={args.synchronous})",
                 base["single_commits_per_s"]],
                ["SQLite one commit (ms)", base["commit_ms"]],
                ["SQLite rows/s in batches of 1000", base["batched_rows_per_s"]],
                ["ZeroMQ DEALER/ROUTER round trip p50 (ms)", rtt["p50"]],
                ["ZeroMQ DEALER/ROUTER round trip p99 (ms)", rtt["p99"]],
            ])]
    out += ["", f"## Posts through the bus, fresh database (synchronous={args.synchronous})", "",
            phase_table(phases)]
    if history:
        out += ["", f"## Posts through the bus, on a history of {args.history:,} messages", "",
                phase_table(history)]
    out += ["", "## Ratios", "", ratios(base, rtt, phases, history)]
    if probe:
        out += ["", "## Where the broker's time goes (probe run, µs per post)", "",
                breakdown_table(probe)]
    if spy:
        total, rows = spy
        out += ["", f"## py-spy of the broker, pipelined phase ({total} samples, wall clock, "
                "idle included)", "", table(["frame", "inclusive", "self"],
                                            [[f, f"{inc:.1%}", f"{own:.1%}"]
                                             for f, inc, own in rows])]
    acked, stored = durable
    verdict = "every acknowledged post is there" if stored >= acked else "POSTS WERE LOST"
    out += ["", "## Durability", "",
            f"Broker SIGKILLed after the fresh-database phases: {acked:,} posts acknowledged, "
            f"{stored:,} in the database: {verdict}."]
    return "\n".join(out)


# ---------------------------------------------------------------------------- main

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=2000, help="posts of the 1-client phase")
    p.add_argument("--clients", type=int, default=8, help="client processes (default 8)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each concurrent phase")
    p.add_argument("--window", type=int, default=16, help="posts in flight per pipelined client")
    p.add_argument("--history", type=int, default=50_000,
                   help="also measure on a database already holding this many messages (0: skip)")
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    p.add_argument("--quiet-wait", type=float, default=20.0, metavar="S",
                   help="wait up to S seconds for other processes to go quiet before starting")
    p.add_argument("--py-spy", type=Path, metavar="FILE",
                   help="record the broker with py-spy during the pipelined phase (raw stacks)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the probe runs")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    return p


def run_phases(broker: BenchBroker, args, scale: float = 1.0, py_spy: Path | None = None,
               only_pipelined: bool = False) -> dict:
    out = {}
    if not only_pipelined:
        out["1 client"] = run_clients(broker, sequential_worker, 1,
                                      posts=max(1, int(args.posts * scale)), seconds=0)
        out[f"{args.clients} clients"] = run_clients(broker, sequential_worker, args.clients,
                                                     posts=0, seconds=args.seconds * scale)
    spies = []

    def start_spy() -> None:
        spies.append(PySpy(broker.pid, py_spy, args.seconds * scale))
    out[f"{args.clients} x window {args.window}"] = run_clients(
        broker, pipelined_worker, args.clients, on_start=start_spy if py_spy else None,
        window=args.window, seconds=args.seconds * scale)
    if spies:
        out["py-spy"] = spies[0]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    t0 = time.monotonic()
    mach = machine()
    load = wait_for_quiet(args.quiet_wait)
    print(f"baselines ... (other processes use {load:.0%} of the CPUs)", file=sys.stderr)
    base = sqlite_commit_baseline(synchronous=args.synchronous)
    rtt = zmq_round_trip_baseline()

    print("posts, fresh database ...", file=sys.stderr)
    with BenchBroker(synchronous=args.synchronous) as broker:
        phases = run_phases(broker, args, py_spy=args.py_spy)
        spy = phases.pop("py-spy", None)
        acked = sum(r["acked"] for r in phases.values())
        broker.kill()  # a crash, not a clean stop: what was acknowledged must be on disk
        stored = broker.count("SELECT count(*) FROM messages WHERE channel = ?", (CHANNEL,))
    spy_summary = None
    if spy is not None:
        err = spy.wait()
        if err:
            print(f"py-spy: {err}", file=sys.stderr)
        else:
            spy_summary = spy.summary(20)

    history = None
    if args.history:
        print(f"posts, history of {args.history:,} messages ...", file=sys.stderr)
        with BenchBroker(synchronous=args.synchronous, history=args.history) as broker:
            history = run_phases(broker, args)

    probe = None
    if not args.no_breakdown:
        print("breakdown (probe) ...", file=sys.stderr)
        with BenchBroker(synchronous=args.synchronous, probe=True) as broker:
            probed = run_phases(broker, args, scale=0.5)
            broker.stop()
            batches = broker.probe_batches()
        probe = {name: breakdown(batches, r) for name, r in probed.items()}
        if args.history:
            with BenchBroker(synchronous=args.synchronous, probe=True,
                             history=args.history) as broker:
                probed = run_phases(broker, args, scale=0.5, only_pipelined=True)
                broker.stop()
                batches = broker.probe_batches()
            for name, r in probed.items():
                probe[f"{name}, history {args.history // 1000}k"] = breakdown(batches, r)

    errors = sum(r["errors"] for r in phases.values())
    print(report(mach, load, base, rtt, phases, history, probe, spy_summary, (acked, stored),
                 args))
    print(f"\n(run took {time.monotonic() - t0:.0f} s; command: .venv/bin/python "
          f"bench/post_throughput.py {' '.join(sys.argv[1:])})")
    if args.json:
        def strip(d: dict) -> dict:
            return {k: {kk: vv for kk, vv in v.items() if kk not in ("start", "end")}
                    for k, v in d.items()}
        args.json.write_text(json.dumps({
            "machine": mach, "background_load": load, "sqlite": base, "zmq_rtt_ms": rtt,
            "phases": strip(phases), "history": strip(history) if history else None,
            "probe": probe, "acked": acked, "stored": stored, "py_spy": spy_summary},
            indent=2), encoding="utf-8")
    return 1 if errors or stored < acked else 0


if __name__ == "__main__":
    sys.exit(main())
