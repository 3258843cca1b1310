"""The audit chain with a real broker and supervisor: actions land in the chain in order; a
database forged while the broker is down (every plain hash recomputed: a forger without the
key) is flagged at the next start, kept, and a new segment names the break; ``chatbox
verify-audit`` exits 0 with one line, or 1 with one line naming the first bad entry."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys

import apsw
import pytest

from chatbox.broker import audit
from tests.fleet import Fleet, child_env, wait_for

COLUMNS = "id, at, principal, action, subject, detail"


def _entries(f: Fleet) -> list[tuple]:
    db = apsw.Connection(str(f.ws.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return db.execute(f"SELECT {COLUMNS} FROM audit ORDER BY id").fetchall()
    finally:
        db.close()


def _verify_audit(f: Fleet) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatbox", "verify-audit"], cwd=f.root,
                          env=child_env(f.ws), capture_output=True, text=True, timeout=60)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def _forge(f: Fleet, sql: str, first: int) -> None:
    """Rewrite the database as a forger who cannot read the key: ``sql``, then every hash from
    entry ``first`` on and both marks recomputed with SHA-256 in place of HMAC."""
    db = apsw.Connection(str(f.ws.db_path))
    try:
        with db:
            db.execute(sql)
            prev = db.execute("SELECT mac FROM audit WHERE id = ?", (first - 1,)).get
            for row in db.execute(f"SELECT {COLUMNS} FROM audit WHERE id >= ? ORDER BY id",
                                  (first,)).fetchall():
                prev = hashlib.sha256(prev + audit.canonical(*row)).digest()
                db.execute("UPDATE audit SET mac = ? WHERE id = ?", (prev, row[0]))
            last = db.execute("SELECT max(id) FROM audit").get
            db.execute("UPDATE audit_mark SET id = ?, mac = ?, tag = ? WHERE name = 'head'",
                       (last, prev, hashlib.sha256(prev).digest()))
    finally:
        db.close()


def _turn(f: Fleet) -> None:
    """A stub agent's whole turn: woken by alice's post, its reply posted, asleep again."""
    f.write_config('[agents.echo]\nengine = "stub"\n')
    f.add_agent("echo", "#general")
    f.start_supervisor("echo")
    f.post("#general", "hello @echo, the secret is swordfish")
    wait_for(lambda: any(m.author == "echo" for m in f.read("#general")), what="echo's reply")
    wait_for(lambda: f.agent("echo").state == "ASLEEP" and f.agent("echo").last_turn,
             what="echo asleep after its turn")


def test_actions_appear_in_the_chain_in_order(fleet: Fleet) -> None:
    f = fleet
    _turn(f)
    rows = _entries(f)
    steps = [(r[2], r[3], r[4]) for r in rows]
    order = [("alice", "add_agent", "echo"), ("echo", "hello", "echo"),  # supervisor first
             ("alice", "post", "#general"), ("echo", "claim", "echo"), ("echo", "turn", "echo"),
             ("echo", "report", "echo")]
    where = [steps.index(s) for s in order]
    assert where == sorted(where), steps
    reply = next(m for m in f.read("#general") if m.author == "echo")
    report = json.loads(rows[where[-1]][5])
    assert (report["outcome"], report["reply"]) == ("ok", reply.seq)  # the stub's reply
    moves = [(d["from"], d["to"]) for r in rows if r[3] == "transition"
             for d in [json.loads(r[5])]]
    assert moves[-3:] == [("ASLEEP", "WAKING"), ("WAKING", "BUSY"), ("BUSY", "ASLEEP")]
    assert not any("swordfish" in str(r) for r in rows)  # metadata, never a body
    done = _verify_audit(f)  # the broker still running: a read-only snapshot
    assert done.returncode == 0, done.stderr
    assert _one_line(done.stdout) == (f"audit chain verified: {len(rows)} entries in 1 "
                                      f"segment(s), head at entry {rows[-1][0]}")


def test_a_guardrail_escalation_is_in_the_chain(fleet: Fleet) -> None:
    """An escalation the broker posts itself (here: a turn that gave up) has its own entry,
    naming the alert, the agent and the guardrail — not only the pause it caused."""
    f = fleet
    f.write_config('[agents.quitter]\nengine = "stub"\nstub = { behaviour = "give-up" }\n')
    f.add_agent("quitter", "#general")
    f.start_supervisor("quitter")
    f.post("#general", "@quitter please do the impossible")
    alert = wait_for(lambda: next((m for m in f.read("#alerts") if m.kind == "escalation"), None),
                     timeout=30, what="the give-up escalation")
    entries = [json.loads(r[5]) for r in _entries(f) if r[3] == "escalation"]
    assert [(e["seq"], e["agent"]) for e in entries] == [(alert.seq, "quitter")], entries
    assert entries[0]["guardrail"]


@pytest.mark.parametrize("forgery", ["edit", "delete", "truncate"])
def test_a_forged_database_is_flagged_at_the_next_start(fleet: Fleet, forgery: str) -> None:
    f = fleet
    _turn(f)
    assert f.stop_broker(signal.SIGTERM) == 0
    rows = _entries(f)
    victim = next(r[0] for r in rows if r[3] == "claim")
    sql = {"edit": f"UPDATE audit SET principal = 'alice' WHERE id = {victim}",
           "delete": f"DELETE FROM audit WHERE id = {victim}",
           "truncate": f"DELETE FROM audit WHERE id >= {victim}"}[forgery]
    _forge(f, sql, victim)
    forged = _entries(f)

    found = _verify_audit(f)
    assert found.returncode == 1 and found.stdout == ""
    line = _one_line(found.stderr)
    assert line.startswith(f"chatbox verify-audit: audit chain broken at entry {victim} ")

    f.start_broker()  # flagged, not refused: the broker serves on a new segment
    alert = wait_for(lambda: [m for m in f.read("#alerts") if "audit chain" in (m.title or "")],
                     what="the audit alert")[-1]
    assert f"entry {victim}" in alert.body and alert.tier == 2
    after = _entries(f)
    assert after[:len(forged)] == forged  # the broken entries kept as they are, for forensics
    assert [json.loads(r[5])["segment"] for r in after if r[3] == "segment"] == [1, 2]
    f.post("#general", "business as usual")

    again = _verify_audit(f)
    assert again.returncode == 1
    assert f"entry {victim} " in again.stderr and "flagged" in _one_line(again.stderr)
    assert f.stop_broker(signal.SIGTERM) == 0
    f.start_broker()  # flagged once: a second start raises no second alert
    assert len([m for m in f.read("#alerts") if "audit chain" in (m.title or "")]) == 1


def test_verify_audit_without_the_key_says_so(bare_fleet: Fleet) -> None:
    f = bare_fleet
    assert _verify_audit(f).returncode == 0
    audit.key_path(f.ws).unlink()
    done = _verify_audit(f)
    assert done.returncode == 1
    assert _one_line(done.stderr) == (f"chatbox verify-audit: no audit key at "
                                      f"{audit.key_path(f.ws)}: the chain cannot be verified")


PROBE = r'''
import json, os
ws = os.environ["CHATBOX_WORKSPACE"]
def can_read(path):
    try:
        open(os.path.join(ws, path), "rb").read()
        return True
    except OSError as exc:
        return exc.__class__.__name__
print(json.dumps({"key": can_read(".chatbox/audit.key"), "db": can_read(".chatbox/chatbox.db"),
                  "own": can_read(".chatbox/agents/eve.token")}))
'''


def test_a_turn_cannot_read_the_audit_key_or_the_chain(fleet: Fleet) -> None:
    f = fleet
    script = f.root / "probe.py"
    script.write_text(PROBE)
    f.write_config(f'[agents.eve]\nengine = "command"\nreply = true\n'
                   f'command = ["{sys.executable}", "-I", "-S", "{script}"]\n')
    f.add_agent("eve", "#general")
    f.start_supervisor("eve")
    f.post("#general", "@eve look around")
    reply = wait_for(lambda: next((m for m in f.read("#general") if m.author == "eve"), None),
                     timeout=30, what="eve's report")
    seen = json.loads(reply.body)
    assert seen == {"key": "FileNotFoundError", "db": "FileNotFoundError", "own": True}
