"""What a commit costs while the write-ahead log grows its file, and once it writes over it.

SQLite appends each commit's pages to the log; the log starts again from its beginning only at
the first write after a checkpoint that caught up with all of it. Until then every commit past
the file's end makes the file longer, and an fsync (fdatasync) of a file whose size changed
also commits the file system's journal. ``broker/checkpoint.py`` lets the log start again once
the thread's checkpoint is done; this script measures what that buys on the machine it runs on.

One database in a temporary directory (the bench's tempdir, so the same file system as a
workspace there), WAL, ``synchronous=FULL``, SQLite's own checkpoints off; ``--pages`` small
tables, each commit inserting one row into each (a page each, like a claim's few tables and
indexes). Rounds of ``--commits`` commits alternate: "growing" (the log empty, its file just
truncated: every commit appends past the end), then "writing over" (a RESTART checkpoint has
caught up with the log, so the next commits write from its start over what the file already
holds). Percentiles of the COMMIT statement, in ms. Nothing is asserted.

    .venv/bin/python bench/wal_growth.py [--pages 8] [--commits 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import apsw  # noqa: E402

from bench.common import machine, percentile, short_tempdir, table  # noqa: E402


def commits(db: apsw.Connection, pages: int, n: int) -> list[float]:
    seconds = []
    for _ in range(n):
        db.execute("BEGIN IMMEDIATE")
        for i in range(pages):
            db.execute(f"INSERT INTO t{i} VALUES (?)", (b"x" * 50,))
        t = time.perf_counter()
        db.execute("COMMIT")
        seconds.append(time.perf_counter() - t)
    return sorted(seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, default=8, help="tables written by each commit")
    p.add_argument("--commits", type=int, default=300, help="commits in each round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    root = short_tempdir("cbxwal")
    rows = []
    try:
        path = root / "wal.db"
        db = apsw.Connection(str(path))
        db.execute("PRAGMA journal_mode=WAL").fetchall()
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        for i in range(args.pages):
            db.execute(f"CREATE TABLE t{i}(x)")
        for r in range(1, args.rounds + 1):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # file cut to 0 bytes
            grow = commits(db, args.pages, args.commits)
            db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()  # next writes from its start
            over = commits(db, args.pages, args.commits)
            for name, s in (("growing the file", grow), ("writing over it", over)):
                rows.append([r, name, *(percentile(s, q) * 1e3 for q in (50, 90, 99))])
        db.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("## Machine\n")
    print("\n".join(f"- {k}: {v}" for k, v in machine().items()))
    print(f"\n## COMMIT of {args.pages} pages (WAL, synchronous=FULL), {args.commits} a round\n")
    print(table(["round", "the log", "p50 ms", "p90 ms", "p99 ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
