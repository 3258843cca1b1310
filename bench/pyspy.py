"""A sampling profile of a live process with py-spy, summarised by source line.

Used by ``bench/post_throughput.py --py-spy FILE``. py-spy is a measurement tool, not a
dependency of the project: ``.venv/bin/python -m pip install py-spy`` to use it; without it the
profile is skipped with a note.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path



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

