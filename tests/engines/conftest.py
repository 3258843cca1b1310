"""The pinned engine CLIs for the tests of this folder: installed once per run by the project's
own installer (deploy/engines/install.sh, a no-op when its stamp matches), or every test here
skipped with the printed reason where that cannot work (no npm, no registry, CHATBOX_ENGINE_TESTS=0)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.engines import cli


def skip(reason: str) -> None:
    print(f"engine tests skipped: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engines_prefix() -> Path:
    if os.environ.get("CHATBOX_ENGINE_TESTS") == "0":
        skip("CHATBOX_ENGINE_TESTS=0")
    prefix = Path(os.environ.get("CHATBOX_ENGINES_PREFIX") or cli.DEFAULT_PREFIX)
    if shutil.which("npm") is None and not (prefix / ".installed").exists():
        skip("engine CLIs not installed and npm not on PATH (deploy/engines/install.sh needs npm)")
    ok, out = cli.install(prefix)
    if not ok:
        skip(f"engine install failed: {out}")
    return prefix


def need(prefix: Path, engine: str) -> None:
    if not os.access(prefix / "bin" / engine, os.X_OK):
        skip(f"{engine} not installed in {prefix}")
