"""A long backlog does not slow the queue: inbox, claim and report read about as many rows as
they return, through index seeks, however many messages are unacked (DESIGN §4.2).

The backlog is stored in bulk (one ``executemany`` in one transaction) into the broker's own
schema; the requests go through ``Handlers.handle`` as the server's do. Work is measured in
SQLite virtual-machine steps (a progress handler), never in time, and every statement a request
runs is looked at with EXPLAIN QUERY PLAN. The merged heads are checked against the plain
query they replace, over random subscriptions, offsets, wake modes, authors, mentions, replies,
hops and direct deliveries.
"""

from __future__ import annotations

import contextlib
import time

import apsw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbox.broker import offsets
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.messages import M_COLUMNS, to_wire
from chatbox.broker.schema import MIGRATIONS, SCHEMA_VERSION
from chatbox.broker.store import Store
from chatbox.bus import wire
from chatbox.guardrails.limits import Limits

# --------------------------------------------------------------------------- the backlog


def _backlog(hub, n: int, *, channel: str = "#general", author: str = "alice") -> None:
    """Store ``n`` more messages by ``author`` in ``channel`` in one transaction, as posts
    would have left them (chain = seq, the channel's last seq moved)."""
    now = hub.now()
    with hub.store.write() as db:
        db.executemany(
            "INSERT INTO messages(channel, author, kind, body, mentions, chain, created_at) "
            "VALUES (?, ?, 'chat', ?, '', 0, ?)",
            ((channel, author, f"backlog message {i}", now) for i in range(n)))
        db.execute("UPDATE messages SET chain = seq WHERE chain = 0")
        db.execute("UPDATE channels SET last_seq = (SELECT max(seq) FROM messages WHERE "
                   "channel = ?1), last_activity = ?2 WHERE name = ?1", (channel, now))


class Work:
    """What one request costs SQLite: VM steps (counted every 100), and each statement run
    with its query plan."""

    def __init__(self, db: apsw.Connection):
        self.db = db
        self.steps = 0
        self.statements: list[tuple[str, object]] = []

    def __enter__(self) -> Work:
        def count() -> bool:
            self.steps += 100
            return False

        def trace(_cursor, sql: str, bindings) -> bool:
            self.statements.append((sql, bindings))
            return True

        self.db.set_progress_handler(count, 100)
        self.db.exec_trace = trace
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.set_progress_handler(None)
        self.db.exec_trace = None

    def plans(self) -> list[str]:
        """Every step of every traced statement's plan, with the statement it belongs to."""
        out = []
        for sql, bindings in self.statements:
            if not sql.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
                continue
            for row in self.db.execute("EXPLAIN QUERY PLAN " + sql, bindings or ()):
                out.append(f"{row[3]}    <- {' '.join(sql.split())[:160]}")
        return out


def _scans(work: Work) -> list[str]:
    """Plan steps that read a table or index from its start, or sort: none is bounded."""
    return [p for p in work.plans()
            if (p.startswith("SCAN") and not p.startswith("SCAN CONSTANT ROW"))
            or "TEMP B-TREE" in p]


def _world(hub) -> None:
    """kim follows #general (wake all), #dispatch (mentions) and #ops (none); bob talks."""
    hub.limits = Limits(max_batch=10)
    hub.ok(wire.CreateChannel(name="#ops", topic="operations"))
    hub.add_agent("kim", "#general")
    hub.ok(wire.Subscribe(channel="#dispatch", wake="mentions", agent="kim"))
    hub.ok(wire.Subscribe(channel="#ops", wake="none", agent="kim"))
    hub.add_agent("bob", "#general")


def _cycle(hub) -> dict[str, Work]:
    """An inbox, then hello, claim and a failed report (which leaves the batch due) for kim:
    the work of each request."""
    token = hub.tokens["kim"]
    out = {}
    with Work(hub.store.db) as out["inbox"]:
        inbox = hub.ok(wire.Inbox(limit=10), token)
    assert len(inbox.messages) == 10 and inbox.more
    hello = hub.hello("kim", "sup-1")
    assert hello.state == "WAKING"
    with Work(hub.store.db) as out["claim"]:
        claimed = hub.claim("kim", "sup-1", hello.epoch)
    assert len(claimed.messages) == 10
    with Work(hub.store.db) as out["report"]:
        reported = hub.report("kim", "sup-1", claimed, outcome="failed")
    assert reported.state == "WAKING"  # the batch is due again: the next cycle claims it
    return out


def test_inbox_claim_and_report_do_not_read_the_backlog(hub):
    """A backlog ten times longer costs inbox, claim and report no more work: each reads its
    batch through index seeks, never every unacked message before it sorts and cuts."""
    _world(hub)
    for channel in ("#general", "#dispatch", "#ops"):
        _backlog(hub, 2_000, channel=channel, author="bob")
    small = _cycle(hub)
    for channel in ("#general", "#dispatch", "#ops"):
        _backlog(hub, 20_000, channel=channel, author="bob")
    large = _cycle(hub)
    for name, work in large.items():
        assert _scans(work) == [], f"{name} scans or sorts:\n" + "\n".join(_scans(work))
        assert work.steps < 1.5 * small[name].steps + 5_000, (
            f"{name}: {small[name].steps} VM steps at a backlog of 6,000, {work.steps} at "
            "66,000")


def test_the_plans_stay_index_seeks_once_sqlite_has_statistics(hub):
    """PRAGMA optimize (run at every open) may ANALYZE a large table; the plans must not
    change into scans when statistics exist."""
    _world(hub)
    for channel in ("#general", "#dispatch", "#ops"):
        _backlog(hub, 5_000, channel=channel, author="bob")
    hub.store.db.execute("ANALYZE")
    for name, work in _cycle(hub).items():
        assert _scans(work) == [], f"{name} scans or sorts:\n" + "\n".join(_scans(work))


def test_no_statement_is_compiled_again_for_new_values_once_sqlite_has_statistics(hub):
    """With ``sqlite_stat4`` present, SQLite by default expires a statement whenever a value
    compared with an indexed column is bound anew, and compiles it again at its next run — at
    every request, since every request binds new values. The broker's connection keeps its
    plans (the query planner stability guarantee): a request repeated with new values compiles
    nothing. Compilation is seen through the authorizer, which SQLite asks only then."""
    _world(hub)
    for channel in ("#general", "#dispatch", "#ops"):
        _backlog(hub, 5_000, channel=channel, author="bob")
    hub.store.db.execute("ANALYZE")
    assert hub.store.db.execute("SELECT count(*) FROM sqlite_stat4").get > 0
    compiled: list[tuple] = []
    counting = False

    def authorizer(*what) -> int:
        if counting:
            compiled.append(what)
        return apsw.SQLITE_OK

    hub.store.db.authorizer = authorizer  # (setting it expires every statement: set it first)
    try:
        _cycle(hub)  # every statement of the cycle is compiled and cached now
        counting = True
        _cycle(hub)  # the same requests, with new offsets, epochs, turns and times
    finally:
        hub.store.db.authorizer = None
    assert compiled == [], f"statements were compiled again: {compiled}"


def test_a_mentions_subscription_finds_the_one_mention_in_a_long_backlog(hub):
    """With wake mode "mentions", a claim reads what mentions the agent or replies to its
    posts, not the thousands of messages before them."""
    _world(hub)
    kim = hub.tokens["kim"]
    own = hub.post("#dispatch", "a question of mine", kim)
    _backlog(hub, 20_000, channel="#dispatch", author="bob")
    mention = hub.post("#dispatch", "@kim the build is red", hub.tokens["bob"])
    reply = hub.post(None, "an answer", hub.tokens["bob"], in_reply_to=own.seq)
    hello = hub.hello("kim", "sup-1")
    with Work(hub.store.db) as work:
        claimed = hub.claim("kim", "sup-1", hello.epoch)
    assert [m.seq for m in claimed.messages] == [mention.seq, reply.seq]
    assert _scans(work) == []
    assert work.steps < 20_000, f"{work.steps} VM steps for a batch of two"


def test_a_held_agent_is_known_without_reading_every_message(hub):
    """Whether an agent's tier-2 post is pending is asked at every claim, report and post to a
    channel it follows: an index answers it."""
    _world(hub)
    _backlog(hub, 20_000, author="bob")
    ctx = Ctx(hub.store.db, Principal("broker", "admin"), hub.now())
    from chatbox.broker import escalations

    with Work(hub.store.db) as work:
        assert escalations.held(ctx, "kim") is False
    assert _scans(work) == []


# --------------------------------------------------------------------------- same results

# The query the heads replace: every unacked row of every subscription, sorted, cut.
_WAKE_MATCH = (
    " AND s.wake != 'none' AND (s.wake = 'all'"
    " OR instr(' ' || m.mentions || ' ', ' ' || :me || ' ')"
    " OR EXISTS (SELECT 1 FROM messages p WHERE p.seq = m.in_reply_to AND p.author = :me))")


def _reference(db, who: str, limit: int, due_only: bool, max_hops: int) -> list[wire.Message]:
    sql = (f"SELECT {M_COLUMNS} FROM subscriptions s "
           "JOIN offsets o ON o.principal = s.principal AND o.channel = s.channel "
           "JOIN messages m ON m.channel = s.channel AND m.seq > o.acked "
           "WHERE s.principal = :me AND m.author != :me"
           + (_WAKE_MATCH + " AND m.hop < :max_hops" if due_only else "") +
           f" UNION SELECT {M_COLUMNS} FROM direct d JOIN messages m ON m.seq = d.seq "
           "WHERE d.agent = :me AND d.acked = 0 ORDER BY 1 LIMIT :lim")
    return [to_wire(r) for r in db.execute(sql, {"me": who, "lim": limit,
                                                 "max_hops": max_hops})]


NAMES = ["kim", "bob", "eve"]
CHANNELS = ["#c0", "#c1", "#c2"]


@st.composite
def worlds(draw):
    """Messages (author, channel, mentions, reply to an earlier root, hop), the
    subscriptions and offsets of every principal, and direct deliveries."""
    n = draw(st.integers(0, 40))
    msgs = []
    for i in range(n):
        roots = [j for j, m in enumerate(msgs) if m[3] is None]
        parent = draw(st.one_of(st.none(), st.sampled_from(roots))) if roots else None
        names = draw(st.lists(st.sampled_from(NAMES + ["kimberly", "ki"]), max_size=3,
                              unique=True))
        sep = draw(st.sampled_from([" ", " ", "  "]))  # what posts store, and worse
        channel = msgs[parent][1] if parent is not None else draw(st.sampled_from(CHANNELS))
        msgs.append((draw(st.sampled_from(NAMES)), channel, sep.join(names),
                     None if parent is None else parent + 1, draw(st.integers(0, 4))))
    subs = {}
    for who in NAMES:
        for channel in CHANNELS:
            kind = draw(st.sampled_from(["none", "sub", "sub", "sub-no-offset", "offset-only"]))
            if kind != "none":
                subs[who, channel] = (kind, draw(st.sampled_from(["all", "mentions", "none"])),
                                      draw(st.integers(0, n + 1)))
    direct = draw(st.lists(st.tuples(st.sampled_from(NAMES), st.integers(1, max(1, n)),
                                     st.booleans()), max_size=8)) if n else []
    return msgs, subs, direct


def _populate(db, world) -> None:
    msgs, subs, direct = world
    for table in ("addressed", "direct", "offsets", "subscriptions", "messages", "channels",
                  "agent_state", "principals"):
        db.execute(f"DELETE FROM {table}")
    for name in NAMES:
        db.execute("INSERT INTO principals(name, role, created_at) VALUES (?, 'agent', 0)", (name,))
    for channel in CHANNELS:
        db.execute("INSERT INTO channels(name, kind, topic, created_at) "
                   "VALUES (?, 'adhoc', 't', 0)", (channel,))
    for seq, (author, channel, mentions, reply_to, hop) in enumerate(msgs, 1):
        db.execute("INSERT INTO messages(seq, channel, author, kind, body, mentions, in_reply_to, "
                   "chain, hop, created_at) VALUES (?, ?, ?, 'chat', 'b', ?, ?, ?, ?, 0)",
                   (seq, channel, author, mentions, reply_to, seq, hop))
    for (who, channel), (kind, wake, acked) in subs.items():
        if kind in ("sub", "sub-no-offset"):
            db.execute("INSERT INTO subscriptions VALUES (?, ?, 'full', ?, 0)",
                       (who, channel, wake))
        if kind in ("sub", "offset-only"):
            db.execute("INSERT INTO offsets VALUES (?, ?, ?, ?, 0)", (who, channel, acked, acked))
    for who, seq, acked in direct:
        db.execute("INSERT OR IGNORE INTO direct(agent, seq, acked) VALUES (?, ?, ?)",
                   (who, seq, int(acked)))


class _Rollback(Exception):
    pass


def test_the_merged_heads_return_exactly_what_the_plain_query_did(tmp_path):
    """Random subscriptions, offsets, wake modes, authors, mentions, replies, hops and direct
    deliveries: the heads merged give the rows, in the order, of the one query they replace
    (inbox and a turn's batch alike, at every limit and hop budget)."""
    store = Store(tmp_path / "chatbox.db")

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds(), who=st.sampled_from(NAMES), limit=st.integers(1, 12),
           due_only=st.booleans(), max_hops=st.integers(1, 5))
    def check(world, who, limit, due_only, max_hops):
        with contextlib.suppress(_Rollback), store.write() as db:
            _populate(db, world)
            ctx = Ctx(db, Principal(who, "agent"), time.time())
            got = offsets.unacked(ctx, who, limit, due_only=due_only, max_hops=max_hops)
            assert got == _reference(db, who, limit, due_only, max_hops)
            raise _Rollback

    try:
        check()
    finally:
        store.close()


def test_the_migration_indexes_the_messages_already_stored(tmp_path):
    """A database from before ``addressed`` existed gets it filled at upgrade with exactly what
    the trigger writes for new messages: each word of the mentions, and the replied-to author,
    never the message's own author."""
    path = tmp_path / "chatbox.db"
    old = apsw.Connection(str(path))
    old.execute("PRAGMA foreign_keys=ON")
    before = next(i for i, m in enumerate(MIGRATIONS) if "CREATE TABLE addressed" in m)
    for version, migration in enumerate(MIGRATIONS[:before], 1):
        old.execute(migration)
        old.execute(f"PRAGMA user_version={version}")
    rows = [("kim", "#c0", "bob eve", None), ("bob", "#c0", "", 1),
            ("kim", "#c1", "kim  eve", None), ("eve", "#c1", "kim", 3), ("bob", "#c1", "", 3),
            ("kim", "#c1", "", 3)]
    for name in NAMES:
        old.execute("INSERT INTO principals(name, role, created_at) VALUES (?, 'agent', 0)",
                    (name,))
    for channel in ("#c0", "#c1"):
        old.execute("INSERT INTO channels(name, kind, topic, created_at) "
                    "VALUES (?, 'adhoc', 't', 0)", (channel,))
    for seq, (author, channel, mentions, reply_to) in enumerate(rows, 1):
        old.execute("INSERT INTO messages(seq, channel, author, kind, body, mentions, in_reply_to, "
                    "chain, created_at) VALUES (?, ?, ?, 'chat', 'b', ?, ?, ?, 0)",
                    (seq, channel, author, mentions, reply_to, seq))
    old.close()
    store = Store(path)
    try:
        assert store.db.execute("PRAGMA user_version").get == SCHEMA_VERSION
        migrated = store.db.execute("SELECT principal, channel, seq FROM addressed "
                                    "ORDER BY seq, principal").fetchall()
        with store.write() as db:  # the same messages again, through the trigger
            db.execute("DELETE FROM addressed")
            db.execute("CREATE TEMP TABLE copy AS SELECT * FROM messages")
            db.execute("DELETE FROM messages")
            db.execute("INSERT INTO messages SELECT * FROM copy ORDER BY seq")
            triggered = db.execute("SELECT principal, channel, seq FROM addressed "
                                   "ORDER BY seq, principal").fetchall()
    finally:
        store.close()
    assert migrated == triggered == [
        ("bob", "#c0", 1), ("eve", "#c0", 1), ("kim", "#c0", 2), ("eve", "#c1", 3),
        ("kim", "#c1", 4), ("kim", "#c1", 5)]


# --------------------------------------------------------------------------- a day of turns


def _turn(hub, agent: str, body: str, **report) -> wire.ClaimResult:
    """One post to ``agent`` and the turn that handles it, reported ok with ``report``."""
    hub.post("#general", body)
    hello = hub.hello(agent, "sup-1")
    claimed = hub.claim(agent, "sup-1", hello.epoch)
    if claimed.turn is not None:
        hub.report(agent, "sup-1", claimed, **report)
    return claimed


def test_a_spend_budget_still_refuses_the_turn_past_the_days_usage(hub):
    """The day's usage is summed only for an agent with a spend budget (a row per turn of the
    day); with one, the claim past the budget opens no turn and pauses the agent."""
    hub.add_agent("kim", "#general")
    hub.limits = Limits(max_tokens_per_day=1_000)
    assert _turn(hub, "kim", "first", output="one", input_tokens=600, output_tokens=500).turn
    assert _turn(hub, "kim", "second").turn is None
    info = hub.agent("kim")
    assert info.paused and "max_tokens_per_day" in info.paused_reason


def test_without_a_spend_budget_a_claim_does_not_sum_the_days_turns(hub):
    """No budget, no sum: a claim reads no more rows after a hundred turns than after one."""
    hub.add_agent("kim", "#general")
    hub.limits = Limits(max_turns_per_hour=10_000, repeat_threshold=10_000)

    def claim_work() -> int:
        hub.post("#general", "more")
        hello = hub.hello("kim", "sup-1")
        with Work(hub.store.db) as work:
            claimed = hub.claim("kim", "sup-1", hello.epoch)
        hub.report("kim", "sup-1", claimed, output=f"done {claimed.turn}")
        assert not any("sum(" in sql for sql, _ in work.statements)
        return work.steps

    first = claim_work()
    for i in range(100):
        _turn(hub, "kim", f"message {i}", output=f"output {i}", input_tokens=1)
    assert claim_work() < 1.5 * first + 5_000
