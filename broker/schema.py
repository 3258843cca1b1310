"""The schema: the migrations that build it, in order, and the version they reach.

Only the store runs them (``broker/store.py``), each in its own transaction, recorded in
``PRAGMA user_version``.
"""

from __future__ import annotations

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
    # (to version 4) every per-request query an index seek bounded by its LIMIT, whatever the
    #    backlog. `addressed` holds, for each message, whom it addresses (each @name it mentions
    #    and the author of the post it replies to, never its own author): a wake mode of
    #    "mentions" reads it instead of testing every unacked message. A trigger fills it, so
    #    every insert of a message, by any path, is covered; the messages already stored are
    #    indexed here, once. Mentions are split on single spaces, as `instr(' ' || mentions ||
    #    ' ', ' ' || name || ' ')` reads them.
    """
    CREATE TABLE addressed(
        principal TEXT NOT NULL,
        channel   TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        PRIMARY KEY (principal, channel, seq)
    ) WITHOUT ROWID;

    CREATE TRIGGER messages_addressed AFTER INSERT ON messages BEGIN
        INSERT OR IGNORE INTO addressed(principal, channel, seq)
            WITH RECURSIVE words(word, rest) AS (
                SELECT '', NEW.mentions || ' '
                UNION ALL
                SELECT substr(rest, 1, instr(rest, ' ') - 1), substr(rest, instr(rest, ' ') + 1)
                FROM words WHERE rest != '')
            SELECT word, NEW.channel, NEW.seq FROM words WHERE word NOT IN ('', NEW.author)
            UNION
            SELECT author, NEW.channel, NEW.seq FROM messages
            WHERE seq = NEW.in_reply_to AND author != NEW.author;
    END;

    INSERT OR IGNORE INTO addressed(principal, channel, seq)
        WITH RECURSIVE words(seq, channel, author, word, rest) AS (
            SELECT seq, channel, author, '', mentions || ' ' FROM messages WHERE mentions != ''
            UNION ALL
            SELECT seq, channel, author, substr(rest, 1, instr(rest, ' ') - 1),
                   substr(rest, instr(rest, ' ') + 1)
            FROM words WHERE rest != '')
        SELECT word, channel, seq FROM words WHERE word NOT IN ('', author);
    INSERT OR IGNORE INTO addressed(principal, channel, seq)
        SELECT p.author, m.channel, m.seq FROM messages m JOIN messages p ON p.seq = m.in_reply_to
        WHERE m.in_reply_to IS NOT NULL AND p.author != m.author;

    -- what is still unacked of what was addressed to one agent alone
    CREATE INDEX direct_unacked ON direct(agent, seq) WHERE acked = 0;
    -- whether an agent is held by a tier-2 post pending a decision
    CREATE INDEX messages_held ON messages(author) WHERE tier = 2 AND status = 'pending';
    -- the newest decisions, without walking back through every message
    CREATE INDEX messages_decisions ON messages(seq) WHERE kind = 'decision';
    -- an agent's turns of the last day (the spend budget) and since its resume
    CREATE INDEX turns_agent_started ON turns(agent, started_at);
    """,
    # 5: the keyed audit chain (broker/audit.py): its entries, and the MACed marks of its head
    #    and of where the last verification ended. Ids are the chain's own, never reused.
    """
    CREATE TABLE audit(
        id        INTEGER PRIMARY KEY,
        at        REAL NOT NULL,
        principal TEXT NOT NULL,
        action    TEXT NOT NULL,
        subject   TEXT NOT NULL,
        detail    TEXT NOT NULL,
        mac       BLOB NOT NULL
    );
    CREATE TABLE audit_mark(
        name    TEXT PRIMARY KEY CHECK (name IN ('head', 'verified')),
        segment INTEGER NOT NULL,
        id      INTEGER NOT NULL,
        mac     BLOB NOT NULL,
        tag     BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX audit_segments ON audit(id) WHERE action = 'segment';
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
