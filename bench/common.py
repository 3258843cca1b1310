"""Shared helpers for the scripts in ``bench/``: a real broker on a temporary workspace, the
machine it runs on, percentiles, tables, and the baselines every figure is compared with.

A benchmark never touches the user's workspace: ``BenchBroker`` makes a short temporary one
(ipc socket paths are limited to ~100 bytes), starts ``python -m broker`` on it with a bounded
wait for the "ready" line, and removes it afterwards. Everything talks over ``ipc://`` only.

``BenchBroker(probe=True)`` runs the same broker with a timing probe laid over it (see
:class:`_Probe`): every batch of the group-commit loop is recorded with its size and the time
spent draining, handling, committing and replying, and written as JSON when the broker stops.
The probe costs a few microseconds per request, so its figures are for the breakdown, never for
the headline numbers.

``BenchBroker(what_if=("fts-batch",))`` runs the broker with an experimental change laid over it
by monkeypatching (see ``WHAT_IFS``), to measure what a proposed product change would gain before
anyone writes it. A what-if figure is never a figure of the product as shipped.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

import apsw  # noqa: E402
import zmq  # noqa: E402

# ---------------------------------------------------------------------------- the broker


def short_tempdir(prefix: str = "cbxb") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


class BenchBroker:
    """A broker process on a fresh temporary workspace; a context manager that always cleans up."""

    def __init__(self, *, synchronous: str = "FULL", probe: bool = False, human: str = "bench",
                 channel: str = "#bench", history: int = 0, what_if: tuple[str, ...] = ()):
        from broker.bootstrap import init_workspace
        from chatbox.workspace import Workspace

        self.synchronous = synchronous
        self.root = short_tempdir()
        self.ws = Workspace(self.root)
        self.human = human
        self.admin_token = init_workspace(self.ws, human)
        self.channel = channel
        prefill(self.ws.db_path, channel, human, history)
        self.probe_path = self.root / "probe.json" if probe else None
        self.what_if = what_if
        self.log_path = self.root / "broker.log"
        self.popen: subprocess.Popen | None = None
        self._log = None

    @property
    def endpoints(self):
        return self.ws.endpoints()

    def start(self, timeout: float = 20.0) -> BenchBroker:
        if self.probe_path is not None or self.what_if:
            argv = [sys.executable, str(Path(__file__)), "broker"]
            if self.probe_path is not None:
                argv += ["--probe", str(self.probe_path)]
            for name in self.what_if:
                argv += ["--what-if", name]
            argv.append("--")
        else:
            argv = [sys.executable, "-m", "broker"]
        argv += ["--workspace", str(self.root), "--synchronous", self.synchronous]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOX_")}
        env["PYTHONPATH"] = str(ROOT)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        deadline = time.monotonic() + timeout
        while b'"ready"' not in self.log_path.read_bytes():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"broker did not get ready:\n{self.log_text()[-2000:]}")
            time.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def client(self, **kw):
        from bus.client import BusClient

        return BusClient(self.endpoints, self.admin_token, **kw)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (graceful), then SIGKILL of the group if it does not exit in time."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode if self.popen else None

    def kill(self) -> None:
        """SIGKILL: no graceful close, no final checkpoint — what a crash leaves on disk."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)

    def count(self, sql: str, params: tuple = ()) -> int:
        """One integer from the database, read directly (the broker must be stopped)."""
        db = apsw.Connection(str(self.ws.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            return db.execute(sql, params).get
        finally:
            db.close()

    def probe_batches(self) -> list[list[float]]:
        """The probe's per-batch records (after stop): see ``PROBE_FIELDS``."""
        if self.probe_path is None or not self.probe_path.exists():
            return []
        return json.loads(self.probe_path.read_text(encoding="utf-8"))["batches"]

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BenchBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefill(db_path: Path, channel: str, author: str, n: int, chunk: int = 1_000) -> None:
    """Create ``channel`` and store ``n`` messages in it, as a broker that had served ``n``
    posts would hold them: rows, full-text index and one idempotency record each.

    For speed the full-text index is fed ``chunk`` rows at a time (the schema's insert trigger
    is dropped meanwhile and put back as it was), so the index has many segments, merged by
    FTS5's automerge as the broker's own index would be."""
    import uuid

    from broker import channels
    from broker.context import Ctx, Principal
    from broker.store import Store
    from bus import wire

    store = Store(db_path)
    try:
        now = time.time()
        with store.write():
            channels.create(Ctx(store.db, Principal(author, "admin"), now), channel,
                            "benchmark posts", "adhoc")
        trigger = store.db.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                                   "AND name = 'messages_fts_insert'").get if n else None
        if trigger:
            with store.write():
                store.db.execute("DROP TRIGGER messages_fts_insert")
        done = 0
        while done < n:
            rows, idem = [], []
            for i in range(done, min(n, done + chunk)):
                body = f"history message {i}: an earlier status note about build {i} on linux"
                rows.append((channel, author, body, now))
                reply = wire.encode(wire.MessageResult(message=wire.Message(
                    seq=i + 1, channel=channel, author=author, kind="chat", body=body, chain=i + 1,
                    created_at=now)))
                idem.append((author, uuid.uuid4().hex, reply, now))
            with store.write():
                store.db.executemany(
                    "INSERT INTO messages(channel, author, kind, body, mentions, chain, "
                    "created_at) VALUES (?, ?, 'chat', ?, '', 0, ?)", rows)
                store.db.executemany("INSERT INTO requests(principal, key, reply, created_at) "
                                     "VALUES (?, ?, ?, ?)", idem)
                if trigger:
                    store.db.execute("INSERT INTO messages_fts(rowid, title, body) "
                                     "SELECT seq, title, body FROM messages WHERE seq > ?",
                                     (done,))
            done += len(rows)
        with store.write():
            if trigger:
                store.db.execute(trigger)
            store.db.execute("UPDATE messages SET chain = seq WHERE chain = 0")
            store.db.execute("UPDATE channels SET last_seq = (SELECT coalesce(max(seq), 0) FROM "
                             "messages), last_activity = ? WHERE name = ?", (now, channel))
    finally:
        store.close()


def background_load(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over ``seconds`` (before a run: what other processes use)."""
    b0, t0 = system_cpu()
    time.sleep(seconds)
    b1, t1 = system_cpu()
    return (b1 - b0) / max(1, t1 - t0)


def wait_for_quiet(max_wait: float, threshold: float = 0.10) -> float:
    """Wait (at most ``max_wait`` s) until other processes use under ``threshold`` of the CPUs;
    return the last load seen. Benchmarks on a shared machine measure the neighbours too."""
    deadline = time.monotonic() + max_wait
    load = background_load()
    while load >= threshold and time.monotonic() < deadline:
        load = background_load()
    return load


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (Linux)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def spawn_context() -> multiprocessing.context.BaseContext:
    """Worker processes are spawned, never forked: a forked ZeroMQ context is unsafe."""
    return multiprocessing.get_context("spawn")


# ---------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0..100) of already-sorted values, linear between ranks."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    v = sorted(latencies_s)
    out = {f"p{p}": percentile(v, p) * 1e3 for p in (50, 90, 99)}
    out["max"] = (v[-1] if v else float("nan")) * 1e3
    return out


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (readable in a terminal as well), numbers right-aligned."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    right = [i > 0 for i in range(len(headers))]  # the first column names, the others measure

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if r else v.ljust(w)
                                 for v, w, r in zip(values, widths, right)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2))
                         for w, r in zip(widths, right)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# ---------------------------------------------------------------------------- the machine


def machine() -> dict[str, str]:
    """What the figures were measured on, for docs/BENCHMARKS.md."""
    cpu = "?"
    family_model = ""
    hypervisor = False
    try:
        info = Path("/proc/cpuinfo").read_text()
        for line in info.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and cpu == "?":
                cpu = value
            elif key == "cpu family" and "family" not in family_model:
                family_model += f"family {value}"
            elif key == "model" and "model" not in family_model:
                family_model += f" model {value}"
            elif key == "flags":
                hypervisor = "hypervisor" in value.split()
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    import msgspec

    tmp = Path(tempfile.gettempdir()).resolve()
    return {
        "cpus": str(os.cpu_count()),
        "cpu": f"{cpu} ({family_model.strip()})" + (", virtual machine" if hypervisor else ""),
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": f"SQLite {apsw.sqlite_lib_version()}, apsw {apsw.apswversion()}",
        "zmq": f"pyzmq {zmq.pyzmq_version()}, libzmq {zmq.zmq_version()}",
        "msgspec": msgspec.__version__,
        "tempdir": f"{tmp}: {_filesystem(tmp)}",
    }


def _filesystem(path: Path) -> str:
    best = ("", "?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, dev, fstype)
    except OSError:
        pass
    return f"{best[2]} on {best[1]} (mounted at {best[0] or '?'})"


# ---------------------------------------------------------------------------- baselines


def sqlite_commit_baseline(seconds: float = 1.5, batch: int = 1000,
                           synchronous: str = "FULL") -> dict[str, float]:
    """Raw apsw in WAL: single-row commits/s, and rows/s when ``batch`` rows share a commit."""
    root = short_tempdir("cbxs")
    try:
        db = apsw.Connection(str(root / "baseline.db"))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL, at REAL NOT NULL)")
        body = "x" * 200
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t(body, at) VALUES (?, ?)", (body, time.time()))
            db.execute("COMMIT")
            n += 1
        single = n / (time.perf_counter() - t0)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            db.execute("BEGIN IMMEDIATE")
            for _ in range(batch):
                db.execute("INSERT INTO t(body, at) VALUES (?, ?)", (body, time.time()))
            db.execute("COMMIT")
            n += batch
        batched = n / (time.perf_counter() - t0)
        db.close()
        return {"single_commits_per_s": single, "batched_rows_per_s": batched,
                "commit_ms": 1e3 / single}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _echo_router(endpoint: str, ready) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)
    ready.set()
    while True:
        frames = router.recv_multipart()
        if frames[-1] == b"stop":
            break
        router.send_multipart(frames)
    router.close()
    ctx.term()


def zmq_round_trip_baseline(n: int = 5000, payload: bytes = b"x" * 300) -> dict[str, float]:
    """A bare DEALER -> ROUTER echo -> DEALER round trip over ipc, echo in another process."""
    root = short_tempdir("cbxz")
    endpoint = f"ipc://{root / 'echo'}"
    mp = spawn_context()
    ready = mp.Event()
    proc = mp.Process(target=_echo_router, args=(endpoint, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(15):
            raise RuntimeError("echo router did not start")
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(endpoint)
        for _ in range(200):  # warm up: connection, caches
            dealer.send(payload)
            dealer.recv()
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            dealer.send(payload)
            dealer.recv()
            lat.append(time.perf_counter() - t)
        dealer.send(b"stop")
        dealer.close()
        ctx.term()
        return latency_summary(lat)
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- sampling profiler


class PySpy:
    """``py-spy record`` of a live process (if py-spy is installed), wall-clock, idle included.

    py-spy is a measurement tool, not a dependency: ``pip install py-spy`` into the venv to use
    it. Idle frames are kept, so the shares are of wall time: a broker blocked in ``poll()`` or
    in ``fsync`` shows as such instead of vanishing from the profile.
    """

    def __init__(self, pid: int, path: Path, seconds: float, rate: int = 500):
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.available = os.access(exe, os.X_OK)
        self.path = path
        self.popen: subprocess.Popen | None = None
        if self.available:
            self.popen = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                 "--rate", str(rate), "--idle", "--nonblocking", "--format", "raw",
                 "--output", str(path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self, timeout: float = 30.0) -> str:
        """Wait for the recording; return an error text, or "" when the profile was written."""
        if self.popen is None:
            return "py-spy not installed"
        try:
            _, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            _, err = self.popen.communicate()
        if not self.path.exists():
            return err.decode(errors="replace").strip()[-500:] or "no profile written"
        return ""

    def summary(self, top: int = 15) -> tuple[int, list[tuple[str, float, float]]]:
        """(samples, [(leaf line, its self share, its function's inclusive share)]): the lines
        where the process spent its wall time, largest first."""
        inclusive: dict[str, int] = {}
        own: dict[str, int] = {}
        total = 0
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [f for f in stack.split(";") if f]
            for f in {_frame_name(f, False) for f in frames}:
                inclusive[f] = inclusive.get(f, 0) + n
            if frames:
                leaf = _frame_name(frames[-1], True)
                own[leaf] = own.get(leaf, 0) + n
        rows = sorted(own, key=own.get, reverse=True)[:top]
        return total, [(f, own[f] / total, inclusive.get(_drop_line(f), 0) / total) for f in rows]


def _frame_name(frame: str, with_line: bool) -> str:
    """``handle (broker/handlers.py:57)`` -> ``handle (handlers.py:57)`` or ``handle
    (handlers.py)``."""
    name, _, where = frame.partition(" (")
    path, _, lineno = where.rstrip(")").rpartition(":")
    if not path:
        return name
    short = "/".join(Path(path).parts[-2:])
    return f"{name} ({short}:{lineno})" if with_line else f"{name} ({short})"


def _drop_line(name: str) -> str:
    head, sep, _ = name.rpartition(":")
    return f"{head})" if sep else name


# ---------------------------------------------------------------------------- the probe

PROBE_FIELDS = ("t", "requests", "drain", "handle", "commit", "send",
                "decode", "auth", "encode", "sql_savepoint", "sql_idem", "sql_insert",
                "sql_wake", "sql_other")
"""One record per batch of the group-commit loop (all times in seconds):

t          monotonic time the batch started (comparable across processes on Linux)
requests   requests in the batch
drain      reading them off the ROUTER socket
handle     from the start of the batch to the start of COMMIT (BEGIN, every request's handling)
commit     the COMMIT statement: WAL write and fsync
send       after the commit: replies on the ROUTER, events on the PUB socket
then what ``handle`` was spent on: envelope decode, token auth, msgpack encode (replies and
stored idempotent results), and SQL by statement — SAVEPOINT/RELEASE, the idempotency lookup
and insert, INSERT INTO messages (with its FTS trigger), the dispatcher's query for agents to
wake, all other statements. What is left of ``handle`` is Python: routing, validation, structs,
context managers.
"""


class _TimedConnection:
    """Forwards to an apsw Connection, timing each ``execute`` into a category by its SQL."""

    def __init__(self, db, acc: dict[str, float]):
        self._db = db
        self._acc = acc

    def execute(self, sql, *args, **kw):
        t = time.perf_counter()
        try:
            return self._db.execute(sql, *args, **kw)
        finally:
            self._acc[_sql_category(sql)] += time.perf_counter() - t

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
    if head.startswith(("INSERT INTO MESSAGES(", "INSERT INTO MESSAGES_FTS(")):
        return "sql_insert"
    if "JOIN agent_state" in sql:
        return "sql_wake"
    return "sql_other"


class _Probe:
    """Timings of the broker's group-commit loop, laid over it by wrapping a few functions."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.acc = dict.fromkeys(PROBE_FIELDS[6:] + ("sql_txn",), 0.0)
        self.drain = 0.0
        self.commit_start = self.commit_end = 0.0
        self.snapshot: list[float] = []

    def install(self) -> None:
        import contextlib

        from broker import handlers, principals, server, store
        from bus import wire

        probe, clock, acc = self, time.perf_counter, self.acc
        keys = PROBE_FIELDS[6:]

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
            if self._depth:
                with orig_write(self) as db:
                    yield db
                return
            with orig_write(self) as db:
                yield db
                probe.snapshot = [acc[k] for k in keys]
                probe.commit_start = clock()
            probe.commit_end = clock()
        store.Store.write = write

        orig_process = server.Server.process

        def process(self, batch, exited=()):
            for k in acc:
                acc[k] = 0.0
            probe.snapshot = []
            t0 = time.monotonic()
            start = clock()
            orig_process(self, batch, exited)
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


# ---------------------------------------------------------------------------- what-ifs


def _what_if_fts(chunk: int) -> None:
    """Full-text indexing out of the per-request savepoints: the schema's trigger is dropped,
    and new messages are indexed with one INSERT ... SELECT just before a COMMIT, once at least
    ``chunk`` of them are waiting. (A real change would also catch up before a search, so that
    search stays exact; the benchmark never searches.)"""
    import contextlib

    from broker import store

    orig_init, orig_write = store.Store.__init__, store.Store.write

    def init(self, *a, **kw):
        orig_init(self, *a, **kw)
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' "
                           "AND name = 'messages_fts_insert'").get:
            with orig_write(self):
                self.db.execute("DROP TRIGGER messages_fts_insert")
        self.fts_indexed = self.db.execute("SELECT coalesce(max(seq), 0) FROM messages").get

    @contextlib.contextmanager
    def write(self):
        if self._depth:
            with orig_write(self) as db:
                yield db
            return
        indexed = self.fts_indexed
        with orig_write(self) as db:
            yield db
            last = self.db.execute("SELECT coalesce(max(seq), 0) FROM messages").get
            if last - indexed >= chunk:
                self.db.execute("INSERT INTO messages_fts(rowid, title, body) SELECT seq, title, "
                                "body FROM messages WHERE seq > ?", (indexed,))
                indexed = last
        self.fts_indexed = indexed  # committed

    store.Store.__init__, store.Store.write = init, write


def _what_if_fts_batch() -> None:
    """Index each batch's new messages once, just before its COMMIT."""
    _what_if_fts(1)


def _what_if_fts_chunk() -> None:
    """Index new messages 256 at a time, just before a COMMIT."""
    _what_if_fts(256)


def _what_if_cache_64m() -> None:
    """A 64 MiB page cache (SQLite's default is 2 MiB)."""
    from broker import store

    orig_init = store.Store.__init__

    def init(self, *a, **kw):
        orig_init(self, *a, **kw)
        self.db.execute("PRAGMA cache_size = -65536")

    store.Store.__init__ = init


def time_ordered_key() -> str:
    """An idempotency key that sorts by creation time (like a UUIDv7): 16 hex digits of
    nanoseconds, then 16 random ones. New keys land at the end of the requests B-tree."""
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"


class _TimeOrderedKeys:
    """Stands in for the ``uuid`` module inside ``bus.client``: ``uuid4().hex`` is time-ordered."""

    class _Key:
        __slots__ = ("hex",)

    @classmethod
    def uuid4(cls):
        key = cls._Key()
        key.hex = time_ordered_key()
        return key


def _what_if_time_keys() -> None:
    """Clients make time-ordered idempotency keys instead of random UUID4s."""
    from bus import client

    client.uuid = _TimeOrderedKeys


def _what_if_client_fast() -> None:
    """BusClient: one plain attempt first, tenacity only once it failed; the endpoint's socket
    path parsed once, not on every call."""
    import functools

    from bus import client, wire
    from bus.errors import Unreachable

    orig_call = client.BusClient.call
    client.ipc_path = functools.lru_cache(maxsize=64)(client.ipc_path)

    def call(self, req, *, idem=None, deadline=None):
        if idem is None and type(req) not in wire.READ_ONLY:
            idem = client.uuid.uuid4().hex
        try:
            return self._round_trip(req, idem)
        except Unreachable:
            return orig_call(self, req, idem=idem, deadline=deadline)

    client.BusClient.call = call


WHAT_IFS = {"fts-batch": _what_if_fts_batch, "fts-chunk": _what_if_fts_chunk,
            "cache-64m": _what_if_cache_64m}
"""Broker-side what-ifs, laid over the broker process."""
CLIENT_WHAT_IFS = {"time-keys": _what_if_time_keys, "client-fast": _what_if_client_fast}
"""Client-side what-ifs, laid over each benchmark client process."""


def _broker_main(argv: list[str]) -> int:
    """``common.py broker [--probe FILE] [--what-if NAME]... -- BROKER ARGS``."""
    import argparse

    p = argparse.ArgumentParser(prog="common.py broker")
    p.add_argument("--probe", metavar="FILE")
    p.add_argument("--what-if", action="append", default=[], choices=sorted(WHAT_IFS))
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    probe = _Probe() if args.probe else None
    if probe is not None:
        probe.install()
    for name in args.what_if:  # over the probe: what they add is timed as part of the batch
        WHAT_IFS[name]()
    from broker.main import main

    try:
        return main(argv[split + 1:])
    finally:
        if probe is not None:
            probe.dump(args.probe)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "broker":
        sys.exit(_broker_main(sys.argv[2:]))
    print("usage: common.py broker [--probe FILE] [--what-if NAME]... -- [broker args...]  "
          "(used by BenchBroker)", file=sys.stderr)
    sys.exit(2)
