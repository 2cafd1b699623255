"""The core's SQLite schema, as migrations: the SQLite store applies them itself when it
migrates (``SQLiteStore.migrate``), as the PostgreSQL store applies ``postgres_schema``.
Never edit one that has been released: add the next (and its PostgreSQL twin)."""

from __future__ import annotations

import json

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("clm_engine")


def _run(db: Database, script: str) -> None:
    """Run a schema script one statement at a time: sqlite3's executescript() would COMMIT
    the transaction every migration runs in."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@migrations()
def m001_initial(db: Database) -> None:
    _run(db, _M001)


_M001 = """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,          -- arrival order: breaks ties of equal times
            id TEXT NOT NULL UNIQUE,          -- the idempotency key
            contact_id TEXT NOT NULL,
            type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,        -- fixed-width UTC text: text order is time order
            properties TEXT NOT NULL,         -- JSON
            received_at TEXT NOT NULL
        );
        CREATE INDEX events_by_contact ON events (contact_id, occurred_at);

        CREATE TABLE contacts (
            id TEXT PRIMARY KEY,
            email TEXT,
            stage TEXT,
            timezone TEXT NOT NULL DEFAULT 'UTC',
            created_at TEXT,
            updated_at TEXT,
            last_event_at TEXT,
            data TEXT NOT NULL                -- the whole Contact as JSON
        );
        CREATE INDEX contacts_by_stage ON contacts (stage);
        CREATE INDEX contacts_by_email ON contacts (email);

        CREATE TABLE stage_transitions (
            id INTEGER PRIMARY KEY,
            contact_id TEXT NOT NULL,
            from_stage TEXT,
            to_stage TEXT NOT NULL,
            at TEXT NOT NULL,                 -- when the cause happened
            cause TEXT NOT NULL,              -- why, in words
            event_id TEXT                     -- the event that caused it, if any
        );
        CREATE INDEX stage_transitions_by_contact ON stage_transitions (contact_id, at);

        CREATE TABLE ingest_failures (
            event_id TEXT PRIMARY KEY,
            contact_id TEXT NOT NULL,
            type TEXT NOT NULL,
            event TEXT NOT NULL,              -- the event as JSON, to retry it
            reducer TEXT NOT NULL,
            error TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            failed_at TEXT NOT NULL
        );
        CREATE INDEX ingest_failures_by_contact ON ingest_failures (contact_id);

        CREATE TABLE erasures (
            id INTEGER PRIMARY KEY,
            contact_hash TEXT NOT NULL,       -- sha256 of the id: proves the erasure, holds no data
            erased_at TEXT NOT NULL,
            removed TEXT NOT NULL             -- JSON: table -> rows removed
        );
"""


@migrations()
def m002_rules(db: Database) -> None:
    _run(db, _M002)


_M002 = """
        CREATE TABLE rulesets (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            content_hash TEXT NOT NULL,       -- sha256 of the file: what a decision ran on
            path TEXT NOT NULL,
            content TEXT NOT NULL,
            loaded_at TEXT NOT NULL,
            PRIMARY KEY (name, content_hash)
        );

        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,          -- enqueue order: priority ties run in this order
            key TEXT NOT NULL UNIQUE,         -- ruleset/rule/contact/occurrence/action: idempotency
            ruleset TEXT NOT NULL,
            version INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            rule TEXT NOT NULL,
            contact_id TEXT NOT NULL,
            action TEXT NOT NULL,
            params TEXT NOT NULL,             -- JSON, validated by the action's model
            priority INTEGER NOT NULL DEFAULT 0,
            depth INTEGER NOT NULL DEFAULT 0, -- how many actions led to this one (loop guard)
            status TEXT NOT NULL DEFAULT 'pending',  -- pending, done, skipped, vetoed, dead
            due_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            note TEXT,                        -- the last deferral, veto, error or skip reason
            result TEXT,                      -- JSON returned by the action
            created_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX outbox_due ON outbox (status, due_at);
        CREATE INDEX outbox_by_contact ON outbox (contact_id, rule);

        CREATE TABLE rule_limits (
            ruleset TEXT NOT NULL,
            rule TEXT NOT NULL,
            contact_id TEXT NOT NULL,
            entity TEXT NOT NULL,             -- '' for once per contact / cooldown
            last_fired_at TEXT NOT NULL,
            fired INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (ruleset, rule, contact_id, entity)
        );

        CREATE TABLE traces (
            id INTEGER PRIMARY KEY,
            contact_id TEXT NOT NULL,
            ruleset TEXT NOT NULL,
            version INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            rule TEXT NOT NULL,
            occurrence TEXT NOT NULL,         -- what triggered it: event id, stage change ...
            trigger TEXT NOT NULL,            -- the trigger, in words
            decision TEXT NOT NULL,           -- fired, no_match, blocked_by_limit
            detail TEXT,
            tree TEXT,                        -- JSON: each condition, the value it saw, its result
            actions TEXT,                     -- JSON: outbox keys enqueued
            at TEXT NOT NULL,                 -- when the occurrence happened
            recorded_at TEXT NOT NULL
        );
        CREATE INDEX traces_by_contact ON traces (contact_id, rule, at)
"""


@migrations()
def m003_time(db: Database) -> None:
    _run(db, _M003)


_M003 = """
        CREATE TABLE anchors (
            ruleset TEXT NOT NULL,
            rule TEXT NOT NULL,
            contact_id TEXT NOT NULL,
            entity TEXT NOT NULL DEFAULT '',  -- '' for a date of the contact itself
            anchor_at TEXT NOT NULL,          -- the date the rule counts from
            fire_at TEXT NOT NULL,            -- anchor_at plus or minus the rule's offset
            status TEXT NOT NULL DEFAULT 'pending',  -- pending, fired, skipped
            note TEXT,
            PRIMARY KEY (ruleset, rule, contact_id, entity)
        );
        CREATE INDEX anchors_due ON anchors (status, fire_at);

        CREATE TABLE anchor_rules (
            ruleset TEXT NOT NULL,
            rule TEXT NOT NULL,
            definition TEXT NOT NULL,         -- anchor fact and offset the rows were built for
            PRIMARY KEY (ruleset, rule)
        );

        CREATE TABLE schedules (
            ruleset TEXT NOT NULL,
            rule TEXT NOT NULL,
            timezone TEXT NOT NULL,
            last_slot TEXT NOT NULL,          -- the latest slot run (or skipped): UTC text
            PRIMARY KEY (ruleset, rule, timezone)
        )
"""


@migrations()
def m004_time_indexes(db: Database) -> None:
    # Measured by benchmarks/simulate.py: refreshing a contact's anchors scanned the whole
    # table (its key starts with the rule), and listing contact timezones scanned contacts.
    db.execute("CREATE INDEX anchors_by_contact ON anchors (contact_id)")
    db.execute("CREATE INDEX contacts_by_timezone ON contacts (timezone)")


@migrations()
def m005_outbox_entity(db: Database) -> None:
    # The entity an action is about (a product, for a rule timed on its warranty), so the
    # plugin's action knows which one is meant.
    db.execute("ALTER TABLE outbox ADD COLUMN entity TEXT")


@migrations()
def m006_outbox_lease(db: Database) -> None:
    # Until when a worker holds an external action it claimed (an email being sent), so that
    # policies can count what is on its way (two sends due together must not both slip under
    # a frequency cap). NULL when nobody holds the row.
    db.execute("ALTER TABLE outbox ADD COLUMN lease_until TEXT")


@migrations()
def m007_same_history_same_outcome(db: Database) -> None:
    # Internal effects now run inline, while the contact's events are folded; a late event
    # re-judges the events after it. For that the store must tell apart:
    # * events that are the effect of a decision run inline (``origin``: its outbox key), which
    #   a re-judgement recomputes, from events that happened (``origin`` NULL);
    # * outbox rows run inline, and rows decided on a re-judgement (``late``: a staleness limit
    #   applies to their external actions);
    # * every fire of a limited rule (``rule_fires``), not only the last: a re-judgement drops
    #   the fires it recomputes and must still see those before them.
    _run(db, _M007)
    migrate_outbox_keys(db)


_M007 = """
        ALTER TABLE events ADD COLUMN origin TEXT;
        CREATE INDEX events_by_origin ON events (origin) WHERE origin IS NOT NULL;
        ALTER TABLE outbox ADD COLUMN inline INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE outbox ADD COLUMN late INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE rule_fires (
            contact_id TEXT NOT NULL,
            ruleset TEXT NOT NULL,
            rule TEXT NOT NULL,
            entity TEXT NOT NULL,             -- '' for once per contact / cooldown
            occurrence TEXT NOT NULL,         -- what fired it ('' for fires kept from m002)
            at TEXT NOT NULL,                 -- when the occurrence happened
            PRIMARY KEY (contact_id, ruleset, rule, entity, occurrence)
        );
        INSERT INTO rule_fires (contact_id, ruleset, rule, entity, occurrence, at)
            SELECT contact_id, ruleset, rule, entity, '', last_fired_at FROM rule_limits;
        DROP TABLE rule_limits
"""


def migrate_outbox_keys(db: Database) -> None:
    """Re-encode the outbox keys whose components held ``/`` or ``%``.

    Keys used to join (ruleset, rule, contact, occurrence, index) with ``/`` as they were, so
    contact ``a/b`` with event ``x`` and contact ``a`` with event ``b/x`` shared a key. Keys
    now escape each component (``decision_key``); a key without ``/`` or ``%`` in its parts is
    the same in both, so only the rows below change. The traces name each decision's
    occurrence and keys, which is what it takes to rebuild a key exactly.
    """
    from ..evaluation import decision_key

    renamed: dict[str, str] = {}
    rows = db.execute(
        "SELECT ruleset, rule, contact_id, occurrence, actions FROM traces WHERE actions != '[]' "
        "AND (instr(contact_id, '/') OR instr(contact_id, '%') OR instr(occurrence, '/') "
        "OR instr(occurrence, '%'))"
    ).fetchall()
    for ruleset, rule, contact_id, occurrence, actions in rows:
        for index in range(len(json.loads(actions))):
            old = f"{ruleset}/{rule}/{contact_id}/{occurrence}/{index}"
            renamed[old] = decision_key(ruleset, rule, contact_id, occurrence, index)
    for old, new in renamed.items():
        if old == new:
            continue
        # The row itself and its follow-ups (drip steps: the parent's key, "/", their part).
        db.execute(
            "UPDATE outbox SET key = ? || substr(key, ?) WHERE key = ? OR substr(key, 1, ?) = ?",
            [new, len(old) + 1, old, len(old) + 1, old + "/"],
        )
        db.execute(
            "UPDATE traces SET actions = replace(actions, ?, ?) WHERE instr(actions, ?)",
            [json.dumps(old), json.dumps(new), json.dumps(old)],
        )


@migrations()
def m008_ruleset_sets(db: Database) -> None:
    # Every valid set of rulesets and documents the engine loaded, whole (each file's path and
    # text), so that a restart with an invalid folder runs on the last good set instead of
    # stopping automation; and what a running engine says about itself (``clm status``).
    _run(db, _M008)


_M008 = """
        CREATE TABLE ruleset_sets (
            id INTEGER PRIMARY KEY,
            content_hash TEXT NOT NULL UNIQUE,  -- sha256 over every file's name and text
            files TEXT NOT NULL,                -- JSON: [{"name", "path", "source"}], in order
            summary TEXT NOT NULL,              -- JSON: [[ruleset, version], ...]
            first_loaded_at TEXT NOT NULL,
            last_loaded_at TEXT NOT NULL
        );
        CREATE TABLE runtime_status (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,                -- JSON
            updated_at TEXT NOT NULL
        )
"""


@migrations()
def m009_compact_traces(db: Database) -> None:
    # A trace records the values its condition read (``seen``), not the explained condition
    # tree: ``clm explain`` rebuilds the tree from them and the ruleset version the trace names.
    # Traces written before keep their ``tree``, and explain shows it as it was. Traces can be
    # pruned by age (``clm prune``); each prune is remembered, so that explain can say a
    # decision's trace was pruned rather than that the rule never decided.
    _run(db, _M009)


_M009 = """
        ALTER TABLE traces ADD COLUMN seen TEXT;  -- JSON: fact key -> value the condition read
        CREATE TABLE trace_prunes (
            id INTEGER PRIMARY KEY,
            before TEXT NOT NULL,               -- traces of decisions before this time went
            removed INTEGER NOT NULL,           -- how many
            pruned_at TEXT NOT NULL
        )
"""


@migrations()
def m010_erasure_records(db: Database) -> None:
    # Erasures prove themselves without personal data: the record's id is the random
    # pseudonym the erasure put in other contacts' rows (an unsalted sha256 of a guessable id
    # is the id, to anyone who guesses), with who asked and what was removed and
    # pseudonymised. The rejects files ``clm ingest`` writes are listed, so an erasure can
    # scrub them; and a random key, for the keyed hashes an erasure keeps (suppressions).
    _run(db, _M010)


_M010 = """
        ALTER TABLE erasures RENAME COLUMN contact_hash TO erasure_id;
        UPDATE erasures SET erasure_id = 'erased-' || lower(hex(randomblob(8)));
        ALTER TABLE erasures ADD COLUMN requested_by TEXT;
        ALTER TABLE erasures ADD COLUMN pseudonymised TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE erasures ADD COLUMN files TEXT NOT NULL DEFAULT '{}';
        CREATE TABLE rejects_files (
            path TEXT PRIMARY KEY,            -- absolute path of a rejects file clm ingest wrote
            written_at TEXT NOT NULL
        );
        CREATE TABLE erasure_key (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            key TEXT NOT NULL                 -- hex: keys the hashes an erasure keeps
        );
        INSERT INTO erasure_key (id, key) VALUES (1, lower(hex(randomblob(32))))
"""


@migrations()
def m011_api_keys(db: Database) -> None:
    # API keys of ``clm serve``: only a SHA-256 of each token is kept (a token is 32 random
    # bytes, so a plain hash is as good as a slow one), with its scope; revoked keys stay, with
    # when, so that ``clm keys list`` shows what was cut off.
    _run(db, _M011)


_M011 = """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,                -- the public part of the token: clm_<id>_<secret>
            name TEXT NOT NULL,
            scope TEXT NOT NULL,                -- ingest / read / admin
            token_hash TEXT NOT NULL,           -- hex sha256 of the whole token
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )
"""


@migrations()
def m012_analytics(db: Database) -> None:
    # Lifecycle analytics (``clm_engine.analytics``): the fitted predictive models, each
    # customer's purchase summary and predictions, and RFM scores and segments, all written
    # set-based by ``clm analytics refresh``.
    _run(db, _M012)


_M012 = """
        CREATE TABLE analytics_models (
            name TEXT PRIMARY KEY,              -- 'bgnbd', 'gamma_gamma'
            params TEXT NOT NULL,               -- JSON: the fitted parameters
            calibration_end TEXT NOT NULL,      -- the last day of the data fitted (UTC date)
            customers INTEGER NOT NULL,         -- rows fitted
            log_likelihood REAL,
            fitted_at TEXT NOT NULL
        );
        CREATE TABLE analytics_customers (
            contact_id TEXT PRIMARY KEY,
            first_day TEXT NOT NULL,            -- first purchase day (UTC date)
            last_day TEXT NOT NULL,             -- last purchase day
            x INTEGER NOT NULL,                 -- repeat purchase days
            repeat_mean REAL NOT NULL,          -- mean value of the repeat purchase days
            p_alive REAL,
            expected_purchases REAL,
            expected_value REAL,
            predicted_clv REAL,
            as_of TEXT NOT NULL                 -- the day the predictions are for
        );
        CREATE TABLE analytics_rfm (
            contact_id TEXT PRIMARY KEY,
            recency_days INTEGER NOT NULL,      -- since the last purchase
            frequency INTEGER NOT NULL,         -- purchases in the window
            monetary REAL NOT NULL,             -- their value
            r INTEGER NOT NULL,
            f INTEGER NOT NULL,
            m INTEGER NOT NULL,
            segment TEXT NOT NULL,
            as_of TEXT NOT NULL
        );
        CREATE INDEX analytics_rfm_by_segment ON analytics_rfm (segment)
"""


@migrations()
def m013_ops_action_history(db: Database) -> None:
    # What the dispatcher did with each outbox row (deferred, retried, vetoed, done...), kept
    # after the row finished, for ``clm explain`` and ``clm email queue``. Append-only; pruned
    # with the traces (``clm prune``); erased with the contact (by ``contact_id``, unindexed:
    # an erasure reads every table anyway, and each index costs every dispatched action).
    _run(db, _M013)


_M013 = """
        CREATE TABLE action_history (
            id INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL,               -- the outbox row
            contact_id TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- deferred / retried / done / vetoed / ...
            at TEXT NOT NULL,                   -- when the dispatcher acted
            due_at TEXT NOT NULL,               -- when the row was due as it was taken up
            attempts INTEGER NOT NULL,
            note TEXT,
            until TEXT                          -- deferred or retried: due again then
        );
        CREATE INDEX action_history_by_seq ON action_history (seq)
"""


@migrations()
def m014_pgworkers_claims(db: Database) -> None:
    # Which worker claimed an outbox row (with its lease_until), and how far a cron slot's
    # run has got (the last contact id it judged; NULL when no run is under way), so that a
    # run cut short by a crash carries on from there instead of losing the rest.
    db.execute("ALTER TABLE outbox ADD COLUMN worker TEXT")
    db.execute("ALTER TABLE schedules ADD COLUMN run_cursor TEXT")


@migrations()
def m015_no_origin_index(db: Database) -> None:
    # ``events_by_origin`` (m007) was never read: an effect's ``origin`` is only read with the
    # contact's history, by ``contact_id``. It cost an index entry for every event an action
    # emitted (1.1 MB of 40 on the 50,000-event benchmark) and a B-tree insert each.
    db.execute("DROP INDEX IF EXISTS events_by_origin")


@migrations()
def m016_due_index_of_pending_rows(db: Database) -> None:
    # ``outbox_due`` serves one query, the due pending rows (``status = 'pending' AND due_at
    # <= ?``), yet it held every row: the finished ones (an internal action run inline is
    # written finished) are most of the outbox and never read through it. Only pending rows
    # now, so a row written finished costs no entry in it.
    db.execute("DROP INDEX IF EXISTS outbox_due")
    db.execute("CREATE INDEX outbox_due ON outbox (due_at) WHERE status = 'pending'")
