"""The store: schema migrations, WAL, and the transaction helper (DESIGN §3, STYLE "SQLite")."""

from __future__ import annotations

import apsw
import pytest

from chatbox.broker.errors import StoreError
from chatbox.broker.store import FTS_CHUNK, REQUEST_TTL, SCHEMA_VERSION, Store
from chatbox.bus import wire


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "chatbox.db"


def _tables(store: Store) -> set[str]:
    return {name for (name,) in store.db.execute(
        "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view')")}


def _add(db, name: str) -> None:
    db.execute("INSERT INTO principals(name, role, created_at) VALUES (?, 'human', 0)", (name,))


def _schema(store: Store) -> list[tuple]:
    # sqlite_stat* tables come and go with PRAGMA optimize; they are not our schema.
    return store.db.execute("SELECT name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' "
                            "ORDER BY name").fetchall()


def test_migrations_bring_a_new_database_to_the_schema_version(db_path):
    """DESIGN §3: a new database gets every table of the data model."""
    store = Store(db_path)
    try:
        assert store.db.execute("PRAGMA user_version").get == SCHEMA_VERSION
        assert {"principals", "channels", "subscriptions", "messages", "messages_fts", "offsets",
                "agent_state", "turns", "approvals", "requests"} <= _tables(store)
    finally:
        store.close()


def test_reopening_a_migrated_database_is_idempotent(db_path):
    """DESIGN §3: migrations run once; reopening keeps version and data."""
    store = Store(db_path)
    with store.write() as db:
        db.execute("INSERT INTO principals(name, role, created_at) VALUES ('bob', 'human', 0)")
    schema = _schema(store)
    store.close()
    store = Store(db_path)
    try:
        assert store.db.execute("PRAGMA user_version").get == SCHEMA_VERSION
        assert _schema(store) == schema
        assert store.db.execute("SELECT name FROM principals").fetchall() == [("bob",)]
    finally:
        store.close()


def test_a_database_from_a_newer_chatbox_is_refused_with_a_clear_error(db_path):
    """DESIGN §3: an unknown (newer) schema version is never opened and never downgraded."""
    conn = apsw.Connection(str(db_path))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StoreError) as info:
        Store(db_path)
    assert str(SCHEMA_VERSION + 5) in info.value.message
    assert "newer" in info.value.message
    conn = apsw.Connection(str(db_path))
    try:
        assert conn.execute("PRAGMA user_version").get == SCHEMA_VERSION + 5
        assert conn.execute("SELECT count(*) FROM sqlite_schema").get == 0
    finally:
        conn.close()


def test_the_database_runs_in_wal_mode(db_path):
    """DESIGN §3: SQLite via apsw, WAL."""
    store = Store(db_path)
    try:
        assert store.db.execute("PRAGMA journal_mode").get.lower() == "wal"
    finally:
        store.close()


def test_write_commits_on_success_and_rolls_back_on_error(db_path):
    """STYLE: one transaction helper; a block is all or nothing."""
    store = Store(db_path)
    try:
        with store.write() as db:
            db.execute("INSERT INTO principals(name, role, created_at) VALUES ('a', 'human', 0)")
        with pytest.raises(RuntimeError), store.write() as db:
            db.execute("INSERT INTO principals(name, role, created_at) VALUES ('b', 'human', 0)")
            raise RuntimeError("boom")
        assert not store.in_transaction
        assert [n for (n,) in store.db.execute("SELECT name FROM principals")] == ["a"]
    finally:
        store.close()


def test_a_failing_savepoint_rolls_back_only_itself(db_path):
    """DESIGN §3 / store docstring: one savepoint per request inside a shared batch commit."""
    store = Store(db_path)
    try:
        with store.write() as db:
            with store.savepoint():
                _add(db, "a")
            with pytest.raises(RuntimeError), store.savepoint():
                _add(db, "b")
                raise RuntimeError("boom")
            with store.savepoint():
                _add(db, "c")
        names = [n for (n,) in store.db.execute("SELECT name FROM principals ORDER BY name")]
        assert names == ["a", "c"]
    finally:
        store.close()


def test_a_failing_request_in_a_batch_rolls_back_only_its_own_writes(hub):
    """DESIGN §3: each request is all-or-nothing while the batch shares one commit."""
    # The AddAgent writes its principal, subscribes #general, then fails on the unknown #nope.
    payloads = [
        hub.envelope(wire.Post(channel="#general", body="first")),
        hub.envelope(wire.AddAgent(name="ghost", subscribe=["#general", "#nope"])),
        hub.envelope(wire.Post(channel="#general", body="second")),
    ]
    replies = [wire.reply_decoder.decode(r) for r in hub.handle_many(payloads)]
    assert replies[0].error is None and replies[2].error is None
    assert replies[1].error is not None and replies[1].error.code == "not_found"
    assert [m.body for m in hub.read("#general")] == ["first", "second"]
    db = hub.store.db
    assert db.execute("SELECT count(*) FROM principals WHERE name = 'ghost'").get == 0
    assert db.execute("SELECT count(*) FROM subscriptions WHERE principal = 'ghost'").get == 0
    assert db.execute("SELECT count(*) FROM agent_state WHERE agent = 'ghost'").get == 0
    assert not hub.ws.agent_token_path("ghost").exists()


def test_events_of_a_refused_request_are_not_published(hub):
    """Context docstring: the outbox holds only what a committed request caused."""
    hub.add_agent("kim", "#general")
    replies = hub.handle_many([
        hub.envelope(wire.Post(channel="#general", body="x" * (64 * 1024 + 1))),
    ])
    assert wire.reply_decoder.decode(replies[0]).error.code == "too_large"
    assert hub.events == []


def _seed_messages(store: Store, count: int) -> None:
    with store.write() as db:
        _add(db, "ann")
        db.execute("INSERT INTO channels(name, kind, created_at) VALUES ('#c', 'standing', 0)")
        for i in range(count):
            db.execute("INSERT INTO messages(channel, author, kind, body, chain, created_at) "
                       "VALUES ('#c', 'ann', 'chat', ?, 0, 0)", (f"word{i} common",))


def _indexed(store: Store) -> int:
    return store.db.execute("SELECT indexed FROM fts_state").get


def test_the_index_is_fed_in_chunks_before_a_commit(db_path):
    """bench findings: FTS5 is fed FTS_CHUNK rows at a time, not one segment per request."""
    store = Store(db_path)
    try:
        _seed_messages(store, FTS_CHUNK - 1)
        with store.write():
            store.before_commit()
        assert _indexed(store) == 0  # not a full chunk yet
        with store.write() as db:
            for _ in range(FTS_CHUNK):
                db.execute("INSERT INTO messages(channel, author, kind, body, chain, created_at) "
                           "VALUES ('#c', 'ann', 'chat', 'late', 0, 0)")
            store.before_commit()
        newest = store.db.execute("SELECT max(seq) FROM messages").get
        assert _indexed(store) == newest
        hits = store.db.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH "
                                "'common'").get
        assert hits == FTS_CHUNK - 1
    finally:
        store.close()


def test_search_catches_up_the_index_first(hub):
    """DESIGN §3: search is exact even before a chunk of messages has been indexed."""
    seq = hub.ok(wire.Post(channel="#general", body="a zebra crossing")).message.seq
    assert hub.store.db.execute("SELECT indexed FROM fts_state").get < seq
    found = hub.ok(wire.Search(query="zebra")).messages
    assert [m.seq for m in found] == [seq]


def test_old_idempotency_keys_are_pruned_and_new_ones_kept(db_path):
    """bench findings: the requests table does not grow forever; recent keys still answer."""
    store = Store(db_path)
    try:
        with store.write() as db:
            for i, age in enumerate((REQUEST_TTL + 10, REQUEST_TTL + 5, 60)):
                db.execute("INSERT INTO requests(principal, key, reply, created_at) "
                           "VALUES ('ann', ?, x'00', ?)", (f"k{i}", 1_000_000 - age))
            assert store.prune_requests(1_000_000) == 2
        keys = [k for (k,) in store.db.execute("SELECT key FROM requests")]
        assert keys == ["k2"]
    finally:
        store.close()


def test_the_write_ahead_log_is_checkpointed_by_its_own_thread_not_in_a_commit(db_path):
    """broker/checkpoint.py: with the broker's WAL hook SQLite's own checkpoints are off
    (``wal_autocheckpoint`` reads 0); the thread checkpoints, and under commits back to back the
    log stays under its limit (plus a commit) however much is written; the thread is woken once
    the log has grown by ``PAGES``, not after every commit past it (each checkpoint ends with an
    fsync of the database); everything written is there after a reopen."""
    from chatbox.broker.checkpoint import LIMIT, PAGES
    from tests.fleet import wait_for

    store = Store(db_path)
    checkpointer = store.checkpoint_in_background()
    assert store.db.execute("PRAGMA wal_autocheckpoint").get == 0
    grown, last = [], [0]  # the pages each commit added to the log

    def hook(db, name: str, pages: int) -> int:
        grown.append(pages - last[0] if pages > last[0] else pages)
        last[0] = pages
        return checkpointer.hook(db, name, pages)

    store.db.set_wal_hook(hook)
    page = store.db.execute("PRAGMA page_size").get
    rows = 0
    try:
        for _ in range(60):  # ~250 pages a commit: twice the limit in all
            with store.write() as db:
                for _ in range(100):
                    rows += 1
                    _add(db, f"p{rows}-" + "x" * (page - 200))
        wait_for(lambda: checkpointer.done >= 1, timeout=30, what="a checkpoint by the thread")
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.stat().st_size < (LIMIT + 1000) * page  # reused from its start
        written = sum(grown)
        assert checkpointer.done <= written // PAGES + 1, (
            f"{checkpointer.done} checkpoints for {written} pages written in 60 commits")
    finally:
        store.close()
    again = Store(db_path)
    try:
        assert again.db.execute("SELECT count(*) FROM principals WHERE name LIKE 'p%'").get == rows
    finally:
        again.close()


def test_once_the_thread_has_checkpointed_an_idle_loop_lets_the_log_start_again(db_path):
    """broker/checkpoint.py: a commit made while the thread checkpoints leaves the log behind
    it, and a log never caught up with does not start again from its beginning: it only grows,
    and a commit that grows the file costs about half as much again as one that writes over it
    (``bench/wal_growth.py``). When the loop has nothing to do (``Store.idle``, before the
    server waits for requests) it copies what the thread left, and its next commit starts the
    log again: the file stays near ``PAGES`` pages, however much is written."""
    from chatbox.broker.checkpoint import PAGES
    from tests.fleet import wait_for

    store = Store(db_path)
    checkpointer = store.checkpoint_in_background()
    sizes: list[int] = []  # the log's pages after each commit

    def hook(db, name: str, pages: int) -> int:
        sizes.append(pages)
        return checkpointer.hook(db, name, pages)

    store.db.set_wal_hook(hook)
    page = store.db.execute("PRAGMA page_size").get
    rows = 0

    def commit(n: int) -> None:  # n rows of nearly a page each
        nonlocal rows
        with store.write() as db:
            for _ in range(n):
                rows += 1
                _add(db, f"p{rows}-" + "x" * (page - 200))

    try:
        for cycle in range(1, 5):
            commit(100)
            while sizes[-1] < PAGES:  # up to the commit that wakes the thread
                commit(100)
            commit(1)  # begun before the thread's checkpoint ended: left in the log behind it
            wait_for(lambda: checkpointer.done >= cycle, timeout=30, what="its checkpoint")
            store.idle()
            commit(1)
            assert sizes[-1] < sizes[-2], f"cycle {cycle}: the log did not start again: {sizes}"
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.stat().st_size <= (PAGES + 300) * (page + 24), sizes
        assert checkpointer.caught_up == 4
    finally:
        store.close()
