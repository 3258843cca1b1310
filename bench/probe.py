"""A timing probe over the broker's group-commit loop, and the launcher that lays it over
``python -m chatbox.broker``.

    .venv/bin/python bench/probe.py broker --probe FILE [--what-if cache-64m] -- [broker args]

runs the broker as ``python -m chatbox.broker`` would, with the probe installed first: every batch of
the loop is recorded with its size and where its time went (see ``PROBE_FIELDS``), and the
records are written to FILE as JSON when the broker stops gracefully (SIGINT). The probe wraps
a few functions of the broker (``Server.process`` and ``Server._drain``, ``Store.write``,
``Store.before_commit`` and ``Store.prune_requests``, ``Auth.authenticate``, the wire codec)
and the database connection; it costs a few microseconds per request, so its figures are for
breakdowns, never for headline numbers. If the broker renames what it wraps, ``install``
fails loudly instead of measuring nothing.

``--what-if`` lays a proposed (not adopted) product change over the broker, to measure its gain
before anyone writes it; a what-if figure is never a figure of the product. ``BenchBroker``
(``bench/common.py``) and ``bench/dispatch.py`` start brokers through ``broker_argv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/probe.py` from anywhere
    sys.path.insert(0, str(ROOT))

PROBE_FIELDS = ("t", "requests", "drain", "handle", "commit", "send",
                "decode", "auth", "encode", "sql_savepoint", "sql_idem", "sql_insert",
                "sql_wake", "sql_other", "sql_index")
"""One record per batch of the group-commit loop (all times in seconds):

t          monotonic time the batch started (comparable across processes on Linux)
requests   requests in the batch
drain      reading them off the ROUTER socket
handle     from the start of the batch to the start of COMMIT: BEGIN, every request's handling,
           and the batch's housekeeping (full-text chunk, pruning of old idempotency keys)
commit     the COMMIT statement: WAL write and fsync
send       after the commit: replies on the ROUTER, events on the PUB socket
then what ``handle`` was spent on: envelope decode, token auth, msgpack encode (replies and
stored idempotent results), and SQL by statement — SAVEPOINT/RELEASE, the idempotency lookup
and insert, INSERT INTO messages, the dispatcher's query for agents to wake, all other
statements of the requests, and the batch's housekeeping (``Store.before_commit``: the
full-text watermark and, every 256 messages, the chunk; ``Store.prune_requests``). What is
left of ``handle`` is Python: routing, validation, structs, context managers. A statement is
timed to the return of its ``execute`` (its first step); rows fetched later count as Python.
"""

NAMED = PROBE_FIELDS[6:]
"""The parts of ``handle`` the probe names; ``handle`` minus their sum is Python."""


class _TimedConnection:
    """Forwards to an apsw Connection, timing each ``execute`` into a category by its SQL (or
    into ``route`` while one is set: the batch's housekeeping)."""

    def __init__(self, db, acc: dict[str, float]):
        self._db = db
        self._acc = acc
        self.route: str | None = None

    def execute(self, sql, *args, **kw):
        t = time.perf_counter()
        try:
            return self._db.execute(sql, *args, **kw)
        finally:
            self._acc[self.route or _sql_category(sql)] += time.perf_counter() - t

    def __getattr__(self, name):
        return getattr(self._db, name)


def _sql_category(sql: str) -> str:
    head = sql.lstrip()[:24].upper()
    if head.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
        return "sql_savepoint"
    if head.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
        return "sql_txn"
    if "requests" in sql[:60]:
        return "sql_idem"
    if head.startswith("INSERT INTO MESSAGES("):
        return "sql_insert"
    if "JOIN agent_state" in sql:
        return "sql_wake"
    return "sql_other"


class Probe:
    """Timings of the broker's group-commit loop, laid over it by wrapping a few functions."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.acc = dict.fromkeys(NAMED + ("sql_txn",), 0.0)
        self.drain = 0.0
        self.commit_start = self.commit_end = 0.0
        self.snapshot: list[float] = []

    def install(self) -> None:
        import contextlib

        from chatbox.broker import principals, server, store
        from chatbox.bus import wire

        for owner, name in ((server.Server, "process"), (server.Server, "_drain"),
                            (store.Store, "write"), (store.Store, "before_commit"),
                            (store.Store, "prune_requests"), (principals.Auth, "authenticate"),
                            (wire, "envelope_decoder"), (wire, "encode")):
            if not hasattr(owner, name):
                raise RuntimeError(f"the probe cannot find {owner.__name__}.{name}: the broker "
                                   "changed; update bench/probe.py")

        probe, clock, acc = self, time.perf_counter, self.acc

        def timed(fn, key):
            def wrapper(*a, **kw):
                t = clock()
                try:
                    return fn(*a, **kw)
                finally:
                    acc[key] += clock() - t
            return wrapper

        class TimedDecoder:
            def __init__(self, inner):
                self.decode = timed(inner.decode, "decode")

        wire.envelope_decoder = TimedDecoder(wire.envelope_decoder)
        wire.encode = timed(wire.encode, "encode")
        principals.Auth.authenticate = timed(principals.Auth.authenticate, "auth")

        orig_init = store.Store.__init__

        def init(self, *a, **kw):
            orig_init(self, *a, **kw)
            self.db = _TimedConnection(self.db, acc)
        store.Store.__init__ = init

        def housekeeping(fn):
            def wrapper(self, *a, **kw):
                self.db.route = "sql_index"
                try:
                    return fn(self, *a, **kw)
                finally:
                    self.db.route = None
            return wrapper
        store.Store.before_commit = housekeeping(store.Store.before_commit)
        store.Store.prune_requests = housekeeping(store.Store.prune_requests)

        orig_drain = server.Server._drain

        def drain(self):
            t = clock()
            batch = orig_drain(self)
            probe.drain = clock() - t
            return batch
        server.Server._drain = drain

        orig_write = store.Store.write

        @contextlib.contextmanager
        def write(self):
            if self.in_transaction:
                with orig_write(self) as db:
                    yield db
                return
            with orig_write(self) as db:
                yield db
                probe.snapshot = [acc[k] for k in NAMED]
                probe.commit_start = clock()
            probe.commit_end = clock()
        store.Store.write = write

        orig_process = server.Server.process

        def process(self, batch, *args, **kwargs):  # a batch is one group below REPLY_BUDGET
            for k in acc:
                acc[k] = 0.0
            probe.snapshot = []
            t0 = time.monotonic()
            start = clock()
            orig_process(self, batch, *args, **kwargs)
            end = clock()
            if not probe.snapshot:  # the transaction failed: nothing to split
                return
            probe.batches.append([t0, len(batch), probe.drain, probe.commit_start - start,
                                  probe.commit_end - probe.commit_start, end - probe.commit_end,
                                  *probe.snapshot])
            probe.drain = 0.0
        server.Server.process = process

    def dump(self, path: str) -> None:
        Path(path).write_text(json.dumps({"fields": PROBE_FIELDS, "batches": self.batches}),
                              encoding="utf-8")


def read_batches(path: Path) -> list[list[float]]:
    """The records a probed broker wrote on its graceful stop ([] if it wrote none)."""
    if not path.exists():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["batches"]


# ---------------------------------------------------------------------------- what-ifs


def _what_if_cache_64m() -> None:
    """A 64 MiB page cache (SQLite's default is 2 MiB)."""
    from chatbox.broker import store

    orig_init = store.Store.__init__

    def init(self, *a, **kw):
        orig_init(self, *a, **kw)
        self.db.execute("PRAGMA cache_size = -65536")

    store.Store.__init__ = init


WHAT_IFS = {"cache-64m": _what_if_cache_64m}
"""Proposed broker changes, laid over the broker process: never a figure of the product."""


# ---------------------------------------------------------------------------- launcher


def broker_argv(probe_path: Path | None = None, what_if: tuple[str, ...] = ()) -> list[str]:
    """The argv that starts a broker (broker arguments follow): plain ``python -m chatbox.broker``, or
    this file with the probe writing ``probe_path`` and/or ``what_if`` laid over it."""
    if probe_path is None and not what_if:
        return [sys.executable, "-m", "chatbox.broker"]
    argv = [sys.executable, str(Path(__file__).resolve()), "broker"]
    if probe_path is not None:
        argv += ["--probe", str(probe_path)]
    for name in what_if:
        argv += ["--what-if", name]
    return [*argv, "--"]


def main(argv: list[str]) -> int:
    """``probe.py broker [--probe FILE] [--what-if NAME]... -- BROKER ARGS``."""
    if argv[:1] != ["broker"]:
        print("usage: probe.py broker [--probe FILE] [--what-if NAME]... -- [broker args...]",
              file=sys.stderr)
        return 2
    argv = argv[1:]
    p = argparse.ArgumentParser(prog="probe.py broker")
    p.add_argument("--probe", metavar="FILE", help="record every batch; JSON written on stop")
    p.add_argument("--what-if", action="append", default=[], choices=sorted(WHAT_IFS))
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    probe = Probe() if args.probe else None
    if probe is not None:
        probe.install()
    for name in args.what_if:  # over the probe: what they add is timed as part of the batch
        WHAT_IFS[name]()
    from chatbox.broker.main import main as broker_main

    try:
        return broker_main(argv[split + 1:])
    finally:
        if probe is not None:
            probe.dump(args.probe)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
