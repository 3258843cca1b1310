"""SQLite through apsw: the schema, its migrations, and the one transaction helper.

Only the broker process opens the database. Every write goes through :meth:`Store.write`, an
``IMMEDIATE`` transaction; a batch of requests shares one transaction (group commit) with a
savepoint per request, so each request is all-or-nothing and the batch costs one fsync.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import apsw
import apsw.bestpractice

from chatbox.broker.errors import StoreError

# Each migration takes the schema from version i to i+1. Never edit one that has shipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE principals(
        name        TEXT PRIMARY KEY,
        role        TEXT NOT NULL CHECK (role IN ('agent', 'human', 'admin')),
        token_hash  TEXT UNIQUE,
        engine      TEXT,
        created_at  REAL NOT NULL,
        revoked_at  REAL
    ) WITHOUT ROWID;

    CREATE TABLE channels(
        name          TEXT PRIMARY KEY,
        topic         TEXT NOT NULL DEFAULT '',
        kind          TEXT NOT NULL CHECK (kind IN ('standing', 'adhoc', 'private', 'canary')),
        created_by    TEXT,
        created_at    REAL NOT NULL,
        last_seq      INTEGER NOT NULL DEFAULT 0,
        last_activity REAL,
        archived      INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;

    CREATE TABLE subscriptions(
        principal  TEXT NOT NULL REFERENCES principals(name),
        channel    TEXT NOT NULL REFERENCES channels(name),
        view       TEXT NOT NULL CHECK (view IN ('headlines', 'digest', 'full')),
        wake       TEXT NOT NULL CHECK (wake IN ('all', 'mentions', 'none')),
        created_at REAL NOT NULL,
        PRIMARY KEY (principal, channel)
    ) WITHOUT ROWID;
    CREATE INDEX subscriptions_channel ON subscriptions(channel);

    CREATE TABLE messages(
        seq         INTEGER PRIMARY KEY,
        channel     TEXT NOT NULL REFERENCES channels(name),
        author      TEXT NOT NULL REFERENCES principals(name),
        kind        TEXT NOT NULL,
        title       TEXT,
        body        TEXT NOT NULL,
        type        TEXT,
        tier        INTEGER NOT NULL DEFAULT 0,
        in_reply_to INTEGER REFERENCES messages(seq),
        mentions    TEXT NOT NULL DEFAULT '',
        chain       INTEGER NOT NULL,
        hop         INTEGER NOT NULL DEFAULT 0,
        turn        INTEGER,
        pinned      INTEGER NOT NULL DEFAULT 0,
        status      TEXT NOT NULL DEFAULT 'open',
        resolution  TEXT,
        created_at  REAL NOT NULL
    );
    CREATE INDEX messages_channel ON messages(channel, seq);
    CREATE INDEX messages_thread ON messages(in_reply_to) WHERE in_reply_to IS NOT NULL;

    -- The full-text index is fed in chunks by Store.index_messages (not by a trigger): FTS5
    -- flushes a segment at every savepoint, and the broker opens one per request.
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        title, body, content='messages', content_rowid='seq');
    CREATE TABLE fts_state(indexed INTEGER NOT NULL);
    INSERT INTO fts_state(indexed) VALUES (0);

    -- Durable consumer offsets: last acked seq, and the newest seq ever delivered (an ack may
    -- not pass it).
    CREATE TABLE offsets(
        principal  TEXT NOT NULL,
        channel    TEXT NOT NULL,
        acked      INTEGER NOT NULL DEFAULT 0,
        delivered  INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (principal, channel)
    ) WITHOUT ROWID;

    CREATE TABLE agent_state(
        agent          TEXT PRIMARY KEY REFERENCES principals(name),
        state          TEXT NOT NULL DEFAULT 'ASLEEP' CHECK (state IN ('ASLEEP', 'WAKING', 'BUSY')),
        epoch          INTEGER NOT NULL DEFAULT 0,
        current_turn   INTEGER,
        supervisor     TEXT,
        paused         INTEGER NOT NULL DEFAULT 0,
        paused_reason  TEXT,
        failures       INTEGER NOT NULL DEFAULT 0,
        resumed_at     REAL NOT NULL DEFAULT 0,
        updated_at     REAL NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE transitions(
        id         INTEGER PRIMARY KEY,
        agent      TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state   TEXT NOT NULL,
        epoch      INTEGER NOT NULL,
        cause      TEXT NOT NULL,
        at         REAL NOT NULL
    );

    CREATE TABLE turns(
        id          INTEGER PRIMARY KEY,
        agent       TEXT NOT NULL,
        epoch       INTEGER NOT NULL,
        batch       TEXT NOT NULL,
        chain       INTEGER NOT NULL DEFAULT 0,
        hop         INTEGER NOT NULL DEFAULT 0,
        started_at  REAL NOT NULL,
        ended_at    REAL,
        outcome     TEXT,
        exit_code   INTEGER,
        digest      TEXT,
        excerpt     TEXT,
        output      TEXT
    );
    CREATE INDEX turns_agent ON turns(agent, id);

    -- How often each message was handed to a turn that was then lost.
    CREATE TABLE redeliveries(
        agent TEXT NOT NULL,
        seq   INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (agent, seq)
    ) WITHOUT ROWID;

    -- Messages addressed to one agent outside its subscriptions (a decision on its post).
    CREATE TABLE direct(
        agent TEXT NOT NULL,
        seq   INTEGER NOT NULL REFERENCES messages(seq),
        acked INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (agent, seq)
    ) WITHOUT ROWID;

    -- Tier-2 decisions: one per post, never overwritten.
    CREATE TABLE approvals(
        seq          INTEGER PRIMARY KEY REFERENCES messages(seq),
        approve      INTEGER NOT NULL,
        decided_by   TEXT NOT NULL REFERENCES principals(name),
        reason       TEXT,
        decision_seq INTEGER NOT NULL REFERENCES messages(seq),
        at           REAL NOT NULL
    );

    -- Every guardrail trip and escalation; at most one hop-budget escalation per chain.
    CREATE TABLE escalations(
        id        INTEGER PRIMARY KEY,
        agent     TEXT,
        chain     INTEGER,
        guardrail TEXT NOT NULL,
        reason    TEXT NOT NULL,
        seq       INTEGER NOT NULL REFERENCES messages(seq),
        at        REAL NOT NULL
    );
    CREATE UNIQUE INDEX escalations_hop_chain ON escalations(chain) WHERE guardrail = 'hop_budget';

    -- Idempotent producer: the first reply to each (principal, key), kept for a day.
    CREATE TABLE requests(
        principal  TEXT NOT NULL,
        key        TEXT NOT NULL,
        reply      BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (principal, key)
    ) WITHOUT ROWID;
    CREATE INDEX requests_created ON requests(created_at);
    """,
    # 3: what a person needs of a turn: whether its agent connected, the cause of a failure,
    #    and the usage the CLI reported
    """
    ALTER TABLE turns ADD COLUMN connected_at REAL;
    ALTER TABLE turns ADD COLUMN cause TEXT;
    ALTER TABLE turns ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE turns ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE turns ADD COLUMN cost_usd REAL;
    """,
    # 4: who supervises each agent, durably: after its own restart the broker checks that
    #    process (on this host: the pid with the same start time) before it accepts another
    """
    ALTER TABLE agent_state ADD COLUMN supervisor_host TEXT;
    ALTER TABLE agent_state ADD COLUMN supervisor_pid INTEGER;
    ALTER TABLE agent_state ADD COLUMN supervisor_started INTEGER;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

# Index new messages once this many are waiting (search() catches up first, so it stays exact).
FTS_CHUNK = 256
# How long an idempotency key is remembered: longer than any client's retry deadline.
REQUEST_TTL = 24 * 3600.0

_bestpractice_applied = False


def _apply_bestpractice() -> None:
    global _bestpractice_applied
    if not _bestpractice_applied:
        apsw.bestpractice.apply(apsw.bestpractice.recommended)
        _bestpractice_applied = True


def index_messages(db: apsw.Connection, at_least: int = 1) -> None:
    """Feed the full-text index every message past its watermark, if ``at_least`` are waiting.

    Messages are never edited, so indexing once, late, in the same transaction is exact.
    """
    indexed = db.execute("SELECT indexed FROM fts_state").get
    newest = db.execute("SELECT coalesce(max(seq), 0) FROM messages").get
    if newest - indexed >= at_least:
        db.execute("INSERT INTO messages_fts(rowid, title, body) SELECT seq, title, body "
                   "FROM messages WHERE seq > ? ORDER BY seq", (indexed,))
        db.execute("UPDATE fts_state SET indexed = ?", (newest,))


_SQLITE_HEADER = b"SQLite format 3\x00"


def _require_database_file(path: Path) -> None:
    """Look at the file before SQLite does: opening it would write a fresh header into an empty
    one, and fail noisily on a foreign one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        raise StoreError(f"no database at {path}; run `chatbox init`") from None
    except OSError as exc:
        raise StoreError(f"cannot read database {path}: {exc.strerror}") from None
    if head != _SQLITE_HEADER:
        what = "empty or truncated" if len(head) < len(_SQLITE_HEADER) and \
            _SQLITE_HEADER.startswith(head) else "not a SQLite file"
        raise StoreError(
            f"database {path} is {what} ({path.stat().st_size} bytes); refusing to start on it, "
            "which would lose every message and principal: restore it from a backup, or move "
            f"{path.parent} away and run `chatbox init` to begin anew")


class Store:
    """The broker's one connection. Not thread-safe: the broker's request loop owns it."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", existing: bool = False):
        """``existing``: the database must already hold ChatBox's schema (the broker's case:
        ``chatbox init`` made it). An empty, truncated or foreign file is then refused, never
        silently initialised — that would lose every message and principal."""
        _apply_bestpractice()
        self.path = path
        if existing:
            _require_database_file(path)
        try:
            self.db = apsw.Connection(str(path))
        except apsw.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        self._depth = 0
        self._savepoints = 0
        try:
            try:
                version = self.db.execute("PRAGMA user_version").get
                tables = self.db.execute("SELECT count(*) FROM sqlite_master").get
            except apsw.Error as exc:
                raise StoreError(f"database {path} is not a ChatBox database ({exc}); "
                                 "restore it from a backup") from None
            if existing and version == 0:
                what = "another program's" if tables else "empty or truncated"
                raise StoreError(
                    f"database {path} holds no ChatBox schema ({what}, "
                    f"{path.stat().st_size} bytes); refusing to start on it, which would lose "
                    "every message and principal: restore it from a backup, or move "
                    f"{path.parent} away and run `chatbox init` to begin anew")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} has schema version {version}, newer than this "
                    f"chatbox ({SCHEMA_VERSION}); upgrade chatbox")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.migrate(version)
        except BaseException:
            self.db.close()
            raise

    def migrate(self, version: int) -> None:
        for i in range(version, SCHEMA_VERSION):
            with self.write():
                self.db.execute(MIGRATIONS[i])
                self.db.execute(f"PRAGMA user_version={i + 1}")

    @contextlib.contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; nested calls become savepoints."""
        if self._depth:
            with self.savepoint():
                yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            self.db.execute("COMMIT")
        except BaseException:
            # a failed COMMIT (a full disk, an I/O error) may leave the transaction open:
            # end it, or every later BEGIN fails and the broker is wedged
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def before_commit(self) -> None:
        """Housekeeping that belongs in the open batch transaction: index a full chunk."""
        index_messages(self.db, FTS_CHUNK)

    def prune_requests(self, now: float, limit: int = 1000) -> int:
        """Forget idempotency keys older than REQUEST_TTL, a bounded number at a time."""
        self.db.execute(
            "DELETE FROM requests WHERE (principal, key) IN (SELECT principal, key FROM requests "
            "WHERE created_at < ? ORDER BY created_at LIMIT ?)", (now - REQUEST_TTL, limit))
        return self.db.changes()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[apsw.Connection]:
        """A savepoint inside the open transaction: all of the block, or none of it."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.db.execute(f"SAVEPOINT {name}")
        try:
            yield self.db
        except BaseException:
            self.db.execute(f"ROLLBACK TO {name}; RELEASE {name}")
            raise
        finally:
            self._savepoints -= 1
        self.db.execute(f"RELEASE {name}")

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def close(self) -> None:
        self.db.close()
