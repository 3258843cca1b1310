"""Never a silent reset (issue 8): a database that is empty, truncated or foreign is refused by
the broker in one line and left as it is — never re-initialised on an empty schema."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatbox.runtime.exits import Exit
from tests.fleet import child_env


def start_broker(fleet) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatbox.broker"], env=child_env(fleet.ws),
                          cwd=fleet.root, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("damage,said", [
    (b"", "empty or truncated"),
    (b"this is no database at all, just some bytes" * 100, "not a SQLite file"),
])
def test_a_damaged_database_is_refused_and_kept(fleet, damage, said):
    for i in range(30):
        fleet.post("#general", f"message {i}")
    assert fleet.stop_broker() == 0
    fleet.ws.db_path.write_bytes(damage)
    for wal in (fleet.ws.db_path.with_name("chatbox.db-wal"), fleet.ws.db_path.with_name("chatbox.db-shm")):
        wal.unlink(missing_ok=True)
    done = start_broker(fleet)
    assert done.returncode == Exit.FAILED
    assert done.stderr.count("\n") == 1 and said in done.stderr, done.stderr
    assert fleet.ws.db_path.read_bytes() == damage  # kept for forensics, not re-created


def test_another_programs_database_is_refused(fleet):
    import apsw
    assert fleet.stop_broker() == 0
    fleet.ws.db_path.unlink()
    db = apsw.Connection(str(fleet.ws.db_path))
    db.execute("CREATE TABLE recipes(name TEXT)")
    db.close()
    done = start_broker(fleet)
    assert done.returncode == Exit.FAILED and "another program's" in done.stderr, done.stderr
