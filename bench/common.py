"""Shared helpers for the scripts in ``bench/``: a real broker on a temporary workspace, the
machine it runs on, percentiles, tables, and the baselines every figure is compared with.

A benchmark never touches the user's workspace: ``BenchBroker`` makes a short temporary one
(ipc socket paths are limited to ~100 bytes), starts ``python -m chatbox.broker`` on it through
the process harness (``chatbox.harness``: a bounded wait for the "ready" line, a kill of the
group at the end), and removes it afterwards. Everything talks over ``ipc://`` only.

``BenchBroker(probe=True)`` runs the same broker under the timing probe of ``bench/probe.py``
(per batch: its size and the time spent draining, handling, committing and replying), for
breakdowns, never for headline figures. ``BenchBroker(what_if=(...))`` lays a proposed change
over it (``bench/probe.py`` ``WHAT_IFS``): never a figure of the product.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

import apsw  # noqa: E402
import zmq  # noqa: E402

from chatbox import harness  # noqa: E402
from chatbox.harness import short_tempdir  # noqa: E402

# ---------------------------------------------------------------------------- the broker


class BenchBroker:
    """A broker process on a fresh temporary workspace; a context manager that always cleans up.
    The process itself is a ``chatbox.harness.Process``."""

    def __init__(self, *, synchronous: str = "FULL", probe: bool = False, human: str = "bench",
                 channel: str = "#bench", history: int = 0, what_if: tuple[str, ...] = ()):
        from chatbox.broker.bootstrap import init_workspace
        from chatbox.runtime.workspace import Workspace

        self.synchronous = synchronous
        self.root = short_tempdir("cbxb")
        self.ws = Workspace(self.root)
        self.human = human
        self.admin_token = init_workspace(self.ws, human)
        self.channel = channel
        prefill(self.ws.db_path, channel, human, history)
        self.probe_path = self.root / "probe.json" if probe else None
        self.what_if = what_if
        self.proc: harness.Process | None = None

    @property
    def endpoints(self):
        return self.ws.endpoints()

    def start(self, timeout: float = 20.0) -> BenchBroker:
        from bench.probe import broker_argv

        argv = broker_argv(self.probe_path, self.what_if)
        argv += ["--workspace", str(self.root), "--synchronous", self.synchronous]
        self.proc = harness.spawn("broker", argv, log_dir=self.root, cwd=self.root,
                                  env=harness.child_env(None, PYTHONPATH=str(ROOT)),
                                  ready_timeout=timeout)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, **kw):
        from chatbox.bus.client import BusClient

        return BusClient(self.endpoints, self.admin_token, **kw)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (graceful), then SIGKILL of the group if it does not exit in time."""
        return self.proc.stop(timeout=timeout) if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL: no graceful close, no final checkpoint — what a crash leaves on disk."""
        if self.proc is not None:
            self.proc.kill()

    def count(self, sql: str, params: tuple = ()) -> int:
        """One integer from the database, read directly (the broker must be stopped)."""
        db = apsw.Connection(str(self.ws.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            return db.execute(sql, params).get
        finally:
            db.close()

    def probe_batches(self) -> list[list[float]]:
        """The probe's per-batch records (after stop): see ``bench/probe.py`` ``PROBE_FIELDS``."""
        from bench.probe import read_batches

        return read_batches(self.probe_path) if self.probe_path is not None else []

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BenchBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefill(db_path: Path, channel: str, author: str, n: int, chunk: int = 1_000) -> None:
    """Create ``channel`` and store ``n`` messages in it, as a broker that had served ``n``
    posts would hold them: rows, full-text index and one idempotency record each (keyed by the
    product's own ``new_key``).

    The full-text index is fed ``chunk`` rows at a time by the broker's own
    ``broker.store.index_messages`` (it moves the watermark too), so the index has many
    segments, merged by FTS5's automerge as the broker's own index would be."""
    from chatbox.broker import channels
    from chatbox.broker.context import Ctx, Principal
    from chatbox.broker.store import Store, index_messages
    from chatbox.bus import wire
    from chatbox.bus.client import new_key

    store = Store(db_path)
    try:
        now = time.time()
        with store.write():
            channels.create(Ctx(store.db, Principal(author, "admin"), now), channel,
                            "benchmark posts", "adhoc")
        done = 0
        while done < n:
            rows, idem = [], []
            for i in range(done, min(n, done + chunk)):
                body = f"history message {i}: an earlier status note about build {i} on linux"
                rows.append((channel, author, body, now))
                reply = wire.encode(wire.MessageResult(message=wire.Message(
                    seq=i + 1, channel=channel, author=author, kind="chat", body=body, chain=i + 1,
                    created_at=now)))
                idem.append((author, new_key(), reply, now))
            with store.write():
                store.db.executemany(
                    "INSERT INTO messages(channel, author, kind, body, mentions, chain, "
                    "created_at) VALUES (?, ?, 'chat', ?, '', 0, ?)", rows)
                store.db.executemany("INSERT INTO requests(principal, key, reply, created_at) "
                                     "VALUES (?, ?, ?, ?)", idem)
                index_messages(store.db)
            done += len(rows)
        with store.write():
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
