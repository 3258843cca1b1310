"""The audit chain's two costs: verifying it at a million entries, and what it adds to a post.

Phases, on temporary workspaces::

    build     --entries entries appended with the broker's own Chain, 10 000 per transaction
              (appends/s: the chain's cost alone, without a request around it)
    verify    the whole chain from its first entry, as ``chatbox verify-audit`` does (read-only
              connection, one snapshot): seconds, and entries/s
    start     the broker's start-up check, from the ``verified`` mark: with nothing new since
              it, and with --since entries appended after it
    posts     the broker's post path in process — ``Handlers.handle`` on encoded envelopes with
              idempotency keys, --batch posts per transaction (group commit), synchronous=FULL —
              with the chain and without it (a Chain built with ``enabled=False``, the
              benchmark's switch alone), interleaved over --rounds rounds in the same run; the
              medians, and the chain's cost in percent. No sockets: the ratio is the worst case
              (a real broker adds the bus's constant time to both sides).

    .venv/bin/python bench/audit.py [--entries 1000000] [--since 10000] [--posts 4000]
        [--batch 64] [--rounds 7]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatbox.broker import audit, audit_start, channels  # noqa: E402
from chatbox.broker.bootstrap import init_workspace  # noqa: E402
from chatbox.broker.context import Ctx, Principal  # noqa: E402
from chatbox.broker.dispatcher import Dispatcher  # noqa: E402
from chatbox.broker.handlers import Handlers  # noqa: E402
from chatbox.broker.store import Store  # noqa: E402
from chatbox.bus import wire  # noqa: E402
from chatbox.guardrails.limits import Limits  # noqa: E402
from chatbox.runtime.workspace import Workspace  # noqa: E402

BROKER = Principal("broker", "admin")
CHUNK = 10_000


def _workspace(root: Path) -> tuple[Workspace, str]:
    ws = Workspace(root)
    return ws, init_workspace(ws, "bench")


def _append(store: Store, chain: audit.Chain, n: int) -> float:
    """Append ``n`` entries like a post's; the seconds it took."""
    detail = {"seq": 0, "kind": "chat", "tier": 0, "in_reply_to": None, "chain": 1, "hop": 0,
              "turn": None, "bytes": 120}
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        with store.write():
            for i in range(start, min(n, start + CHUNK)):
                chain.append(store.db, time.time(), "bench", "post", "#general",
                             {**detail, "seq": i + 1})
    return time.perf_counter() - t0


def bench_chain(root: Path, entries: int, since: int) -> None:
    ws, _ = _workspace(root)
    store = Store(ws.db_path, synchronous="NORMAL")
    chain = audit.Chain(audit.read_key(audit.key_path(ws)))
    audit.attach(store.db, chain)
    took = _append(store, chain, entries)
    print(f"build     {entries:>9,} entries in {took:6.1f} s  ({entries / took:,.0f} appends/s, "
          f"{took / entries * 1e6:.1f} µs each)")
    store.close()

    t0 = time.perf_counter()
    ok, line = audit_start.verify_workspace(ws)
    took = time.perf_counter() - t0
    assert ok, line
    print(f"verify    {entries:>9,} entries in {took:6.2f} s  ({entries / took:,.0f} entries/s)"
          f"  — {line}")

    store = Store(ws.db_path)
    for label, extra in (("nothing new", 0), (f"{since:,} new", since)):
        _starting(store, ws)  # the mark at the head
        if extra:
            _append(store, audit.Chain(audit.read_key(audit.key_path(ws))), extra)
        t0 = time.perf_counter()
        _starting(store, ws)
        took = time.perf_counter() - t0
        print(f"start     {label:>17} since the mark: {took * 1e3:8.1f} ms")
    store.close()


def _starting(store: Store, ws: Workspace) -> None:
    with store.write():
        audit_start.start(ws, Ctx(store.db, BROKER, time.time()))


def bench_posts(root: Path, posts: int, batch: int, rounds: int) -> None:
    ws, token = _workspace(root)
    store = Store(ws.db_path)
    with store.write():
        channels.create_standing(Ctx(store.db, BROKER, time.time()))
    handlers = Handlers(store, ws, Dispatcher(lambda name: Limits()), "bench", time.time())
    key = audit.read_key(audit.key_path(ws))
    chains = {"with": audit.Chain(key), "without": audit.Chain(key, enabled=False)}
    rids = itertools.count(1)
    body = "a post of a hundred and twenty bytes or so, about what a chat line is: " * 2

    def run(chain: audit.Chain) -> float:
        audit.attach(store.db, chain)
        payloads = [wire.encode(wire.Envelope(
            v=wire.PROTOCOL_VERSION, rid=(rid := next(rids)), token=token, idem=f"k{rid}",
            req=wire.Post(channel="#general", body=body[:120]))) for _ in range(posts)]
        outbox: list = []
        t0 = time.perf_counter()
        for start in range(0, posts, batch):
            with store.write():
                now = time.time()
                for p in payloads[start:start + batch]:
                    handlers.handle(p, now, outbox)
                store.before_commit()
            outbox.clear()
        return posts / (time.perf_counter() - t0)

    rates: dict[str, list[float]] = {"with": [], "without": []}
    run(chains["with"])  # warm-up
    for r in range(rounds):
        order = ("with", "without") if r % 2 == 0 else ("without", "with")
        for name in order:
            rates[name].append(run(chains[name]))
    med = {name: statistics.median(v) for name, v in rates.items()}
    cost = (med["without"] - med["with"]) / med["without"] * 100
    print(f"posts     {posts:,} posts × {rounds} rounds, {batch} per commit (synchronous=FULL)")
    for name in ("without", "with"):
        v = sorted(rates[name])
        print(f"          {name:>7} the chain: median {med[name]:8,.0f} posts/s "
              f"(min {v[0]:,.0f}, max {v[-1]:,.0f})")
    print(f"          the chain's cost on the post path: {cost:+.1f} % (goal: under 10 %)")
    ok, line = audit_start.verify_workspace(ws)
    print(f"          after: {line}")
    store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--since", type=int, default=10_000)
    p.add_argument("--posts", type=int, default=4_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cbx-audit-") as tmp:
        bench_posts(Path(tmp) / "posts", args.posts, args.batch, args.rounds)
        bench_chain(Path(tmp) / "chain", args.entries, args.since)
    return 0


if __name__ == "__main__":
    sys.exit(main())
