"""`chatbox init --import-agentchat DIR`: a seed workspace's channels, messages, subscriptions and
read cursors carried into a new ChatBox workspace, then served by a real broker and read with the
seed's own calls through `chatbox mcp`. The seed database is written here in the seed's format
(its tables and columns as its broker creates them, and rows as its broker writes them).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import tomllib
from pathlib import Path

import anyio
import pytest

from chatbox.bus import wire
from tests.fleet import Fleet, short_tempdir
from tests.integration.test_mcp import mcp_agent
from tests.integration.test_seed_compat import LEGACY, chatbox

SEED_SCHEMA = """
CREATE TABLE channels (name TEXT PRIMARY KEY, description TEXT NOT NULL,
    is_standing INTEGER NOT NULL, created_at REAL NOT NULL, last_activity REAL NOT NULL,
    parent TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL,
    author TEXT NOT NULL, phase TEXT NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL,
    body TEXT NOT NULL, in_reply_to INTEGER, title TEXT, description TEXT, msg_type TEXT,
    tier INTEGER, pinned INTEGER DEFAULT 0, closed_resolution TEXT{resolved});
CREATE TABLE subscriptions (agent TEXT NOT NULL, channel TEXT NOT NULL,
    view TEXT NOT NULL DEFAULT 'full', PRIMARY KEY (agent, channel));
CREATE TABLE agents (name TEXT PRIMARY KEY, phase TEXT NOT NULL,
    session_token_hash TEXT NOT NULL, session_issued_ts REAL NOT NULL,
    session_expires_ts REAL NOT NULL, last_seen_ts REAL NOT NULL);
CREATE TABLE cursors (agent TEXT NOT NULL, channel TEXT NOT NULL,
    last_read_id INTEGER NOT NULL DEFAULT 0, updated_ts REAL, PRIMARY KEY (agent, channel));
CREATE TABLE liveness (agent TEXT PRIMARY KEY, state TEXT NOT NULL DEFAULT 'ASLEEP',
    session_id TEXT, waking_ts REAL, updated_ts REAL);
"""
T0 = 1_780_000_000.0
CHANNELS = [("#general", "Project-wide, user direction", 1), ("#dispatch", "Orchestration", 1),
            ("#change-orders", "Changes to agreed work", 1), ("#alerts", "Alerts", 1),
            ("#debug", "Debugging", 1), ("#observations", "Observations", 1),
            ("#phase-3", "Phase 3 workspace", 1), ("#side", "Ad-hoc channel created by kimi", 0)]


def seed_post(title: str, description: str) -> tuple[str, None, str, str]:
    """A post as the seed stores it (body, in_reply_to, title, description): its body is its
    title and description together."""
    return f"{title}\n\n{description}", None, title, description


# (channel, author, kind, body, in_reply_to, title, description, msg_type, tier, pinned,
#  closed_resolution, resolved) in id order, ids 1..
MESSAGES = [
    ("#phase-3", "claude", "chat", "hello @kimi", None, None, None, None, None, 0, None, 0),
    ("#change-orders", "claude", "post", *seed_post("CO-001: rename", "Rename the module"),
     "change-order", 2, 1, None, 0),
    ("#change-orders", "kimi", "reply", "looks right", 2, None, None, None, None, 0, None, 0),
    ("#dispatch", "claude", "post", *seed_post("PLAN: ship", "Ship on Friday"), "plan", 1, 0,
     "shipped", 0),
    ("#general", "nate", "chat", "morning, everyone", None, None, None, None, None, 0, None, 1),
    ("#nowhere", "kimi", "chat", "a channel the seed never created", None, None, None, None,
     None, 0, None, 0),
    ("#change-orders", "claude", "reply", "second thoughts: keep the old name", 2, None, None,
     None, None, 0, None, 0),
    ("#alerts", "broker", "chat", "Audit chain integrity violation detected", None, None, None,
     "alert", None, 0, None, 0),
]
SUBSCRIPTIONS = [("claude", "#phase-3", "full"), ("claude", "#general", "full"),
                 ("kimi", "#change-orders", "digest"), ("kimi", "#alerts", "full"),
                 ("nate", "#general", "headlines")]
CURSORS = [("claude", "#phase-3", 1), ("kimi", "#change-orders", 3), ("kimi", "#gone", 9)]


def make_seed(root: Path, *, resolved_column: bool = True, messages=MESSAGES) -> Path:
    """A seed workspace in ``root``: ``root/.agentchat/db.sqlite``."""
    (root / ".agentchat").mkdir(parents=True)
    path = root / ".agentchat" / "db.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SEED_SCHEMA.format(
        resolved=", resolved INTEGER DEFAULT 0" if resolved_column else ""))
    db.executemany("INSERT INTO channels VALUES (?, ?, ?, ?, ?, NULL)",
                   [(n, d, s, T0, T0 + 100) for n, d, s in CHANNELS])
    cols = ("channel, author, phase, ts, kind, body, in_reply_to, title, description, msg_type, "
            "tier, pinned, closed_resolution" + (", resolved" if resolved_column else ""))
    for i, m in enumerate(messages, 1):
        row = (m[0], m[1], "3", T0 + i, *(m[2:] if resolved_column else m[2:-1]))
        db.execute(f"INSERT INTO messages({cols}) VALUES ({', '.join('?' * len(row))})", row)
    db.executemany("INSERT INTO subscriptions VALUES (?, ?, ?)", SUBSCRIPTIONS)
    db.executemany("INSERT INTO cursors VALUES (?, ?, ?, ?)",
                   [(a, c, n, T0) for a, c, n in CURSORS])
    db.execute("INSERT INTO liveness(agent, state) VALUES ('gemini', 'ASLEEP')")
    db.commit()
    db.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def seed_root():
    root = short_tempdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_seeds_channels_messages_subscriptions_and_cursors_come_in_whole(seed_root):
    """Every seed message under its own id with its fields, every channel, subscription and
    cursor; the seed's files unchanged; the seed's calls then read the imported state."""
    db_path = make_seed(seed_root)
    before = digest(db_path)
    init = chatbox("init", "--human", "nate", "--import-agentchat", str(seed_root), cwd=seed_root)
    assert init.returncode == 0, init.stderr
    assert "8 messages (ids kept)" in init.stdout, init.stdout
    assert "held:   1 tier-2 posts" in init.stdout and "#2" in init.stdout, init.stdout
    assert "kimi's subscription to #alerts (read by humans only)" in init.stdout
    assert "agent:  claude, engine claude;" in init.stdout, init.stdout
    assert "agent:  gemini, engine gemini;" in init.stdout, init.stdout
    assert digest(db_path) == before
    config = tomllib.loads((seed_root / "chatbox.toml").read_text(encoding="utf-8"))
    assert {n: a["engine"] for n, a in config["agents"].items()} == \
        {"claude": "claude", "gemini": "gemini", "kimi": "kimi"}
    fleet = Fleet(seed_root, "nate", initialised=True)
    try:
        fleet.start_broker()
        admin = fleet.client()
        got = {}
        for ch in ("#phase-3", "#change-orders", "#dispatch", "#general", "#nowhere", "#alerts"):
            got.update({m.seq: m for m in admin.call(wire.Read(channel=ch, limit=50)).messages})
        assert sorted(got) == list(range(1, len(MESSAGES) + 1))
        for seq, (channel, author, kind, body, reply_to, title, description, msg_type, tier,
                  pinned, closed, resolved) in enumerate(MESSAGES, 1):
            m = got[seq]
            assert (m.channel, m.kind, m.in_reply_to, m.type, m.tier, m.pinned) == \
                (channel, kind, reply_to, msg_type, tier or 0, bool(pinned)), seq
            assert m.author == ("system" if author == "broker" else author), seq
            assert m.body == (description if kind == "post" else body), seq
            assert m.title == title and m.created_at == T0 + seq, seq
        assert (got[2].status, got[4].status, got[4].resolution, got[5].status) == \
            ("pending", "closed", "shipped", "resolved")
        assert got[1].mentions == ["kimi"]
        rooms = {c.name: c for c in admin.call(wire.Rooms()).channels}
        assert (rooms["#phase-3"].kind, rooms["#phase-3"].topic) == \
            ("standing", "Phase 3 workspace")
        assert (rooms["#side"].kind, rooms["#nowhere"].kind) == ("adhoc", "adhoc")
        agents = admin.call(wire.ListAgents()).agents
        assert {a.name for a in agents} == {"claude", "kimi", "gemini"}
        hits = admin.call(wire.Search(query="second thoughts")).messages
        assert [m.seq for m in hits] == [7]
        new = fleet.post("#general", "the first ChatBox message")
        assert new.seq == len(MESSAGES) + 1

        as_claude = LEGACY | {"agent_name": "claude"}
        listen = {"view": "full", "since_id": 0, "timeout_ms": 0}

        async def seed_calls():
            async with mcp_agent(fleet, "claude") as claude:
                phase = await claude.call("listen", channels=["#phase-3"], **listen, **as_claude)
                general = await claude.call("listen", channels=["#general"], **listen,
                                            **as_claude)
                thread = await claude.call("get_post", post_id=2, **as_claude)
            async with mcp_agent(fleet, "kimi") as kimi:
                orders = await kimi.call("listen", channels=["#change-orders"], **listen, **LEGACY)
            return phase, general, thread, orders
        phase, general, thread, orders = anyio.run(seed_calls)
        # claude had read #phase-3 up to 1; #general it never acked: it starts at the newest
        assert phase["messages"] == []
        assert [m["id"] for m in general["messages"]] == [new.seq]
        assert [m["id"] for m in orders["messages"]] == [7]  # kimi read up to 3
        post = thread["post"]
        assert (post["description"], post["msg_type"], post["title"]) == \
            ("Rename the module", "change-order", "CO-001: rename")
        assert post["ts"] == T0 + 2 and post["closed_resolution"] is None
        assert [r["id"] for r in thread["replies"]] == [3, 7]
        assert [m["ts"] for m in orders["messages"]] == [T0 + 7]
        verify = chatbox("verify-audit", cwd=seed_root)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        fleet.close()


def test_an_import_chatbox_cannot_hold_makes_nothing_and_names_each_problem(seed_root):
    """Names ChatBox cannot take are named with the way out, and nothing is made; with
    --rename the same seed comes in, an older seed database (no resolved column) included."""
    messages = [("#general", "Claude", *MESSAGES[0][2:]), ("#general", "nate", *MESSAGES[4][2:]),
                ("#Build Log", "kimi", *MESSAGES[5][2:])]
    make_seed(seed_root, resolved_column=False, messages=messages)
    refused = chatbox("init", "--human", "nate", "--import-agentchat", str(seed_root),
                      cwd=seed_root)
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()
    assert "nothing was made" in line, line
    assert "'Claude'" in line and "--rename Claude=NEW" in line, line
    assert "'#Build Log'" in line and "--rename #Build Log=#NEW" in line, line
    assert not (seed_root / ".chatbox").exists() and not (seed_root / "chatbox.toml").exists()

    done = chatbox("init", "--human", "nate", "--import-agentchat", str(seed_root),
                   "--rename", "Claude=claude", "--rename", "#Build Log=#build-log", cwd=seed_root)
    assert done.returncode == 0, done.stderr
    fleet = Fleet(seed_root, "nate", initialised=True)
    try:
        fleet.start_broker()
        msgs = fleet.read("#general") + fleet.read("#build-log")
        assert [(m.seq, m.author, m.status) for m in msgs] == \
            [(1, "claude", "open"), (2, "nate", "open"), (3, "kimi", "open")]
    finally:
        fleet.close()


def test_a_path_that_holds_no_seed_is_refused_in_one_line(seed_root):
    (seed_root / ".agentchat").mkdir()
    proc = chatbox("init", "--import-agentchat", str(seed_root), cwd=seed_root)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "no seed database there" in line and "db.sqlite" in line, line
    assert not (seed_root / ".chatbox").exists()


def test_a_text_chatbox_cannot_hold_is_named_with_its_message_and_nothing_is_made(seed_root):
    """The seed allowed 100,000 characters, any type and any title; what is out of ChatBox's
    bounds is named by message, never cut or dropped."""
    messages = [("#general", "kimi", "post", *seed_post("two\nlines", "d"), "plan", None, 0,
                 None, 0),
                ("#general", "kimi", "post", *seed_post("CO-2", "d"), "Change Order", None, 0,
                 None, 0),
                ("#general", "kimi", "chat", "é" * 40_000, None, None, None, None, None, 0,
                 None, 0)]
    make_seed(seed_root, messages=messages)
    proc = chatbox("init", "--human", "nate", "--import-agentchat", str(seed_root),
                   cwd=seed_root)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "the title of message 1 (in #general) is not one line" in line, line
    assert "the type of message 2 (in #general), 'Change Order', is invalid" in line, line
    assert "the body of message 3 (in #general) is 80000 bytes, over ChatBox's limit" in line
    assert not (seed_root / ".chatbox").exists()
