"""The plugin's tables, as the ``clm_referral`` migration set (m001 shipped: never edit it).

Why the ledger looks like this:

- ``referral_rewards`` is one row per reward *granted*: who earns it, for whom, how much. A
  unique key on (referred contact, kind, role) makes a second grant for the same referred
  contact impossible, whatever retries, replays or concurrent workers try.
- ``referral_entries`` and ``referral_lines`` are a double-entry journal: each entry moves
  money between accounts with lines that sum to zero per currency; a state change (approval,
  rejection, reversal, redemption) is a new entry, never an update. A reward's state is the
  state of its latest entry, and balances are sums of lines. Triggers refuse updates.
- ``referral_fingerprints`` remembers the device and payment fingerprints events carried, for
  the fraud checks.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("clm_referral")


@migrations()
def m001_initial(db: Database) -> None:
    # One statement at a time: sqlite3's executescript() would COMMIT the caller's transaction.
    db.execute(
        """
        CREATE TABLE referral_codes (
            code TEXT PRIMARY KEY,
            contact_id TEXT NOT NULL,         -- the referrer who shares the code
            created_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX referral_codes_by_contact ON referral_codes (contact_id)")
    db.execute(
        """
        CREATE TABLE referral_attributions (
            referred_contact_id TEXT PRIMARY KEY,   -- a contact is referred at most once
            referrer_contact_id TEXT,
            code TEXT,
            attributed_at TEXT
        )
        """
    )
    db.execute(
        "CREATE INDEX referral_attributions_by_referrer ON referral_attributions "
        "(referrer_contact_id)"
    )


_M002 = [
    # A rotated code is retired, not deleted: an old link still says whose it was.
    "ALTER TABLE referral_codes ADD COLUMN retired_at TEXT",
    "CREATE UNIQUE INDEX referral_codes_one_active ON referral_codes (contact_id) "
    "WHERE retired_at IS NULL",
    "ALTER TABLE referral_attributions ADD COLUMN event_id TEXT",
    """
    CREATE TABLE referral_rewards (
        id TEXT PRIMARY KEY,                  -- rw-...: derived from the unique key below
        referred_contact_id TEXT NOT NULL,
        referrer_contact_id TEXT NOT NULL,
        beneficiary_contact_id TEXT NOT NULL, -- whose account is credited
        role TEXT NOT NULL CHECK (role IN ('referrer', 'referred')),
        kind TEXT NOT NULL,                   -- 'onboarding', 'first-purchase' ... (the rule's)
        amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
        currency TEXT NOT NULL,
        earned_at TEXT NOT NULL,              -- when the rewarded event happened
        approve_after TEXT,                   -- automatic approval from then; NULL if held
        held_reasons TEXT NOT NULL DEFAULT '[]',  -- JSON list; not empty: held for review
        action_key TEXT,                      -- the outbox row that granted it
        ruleset TEXT,
        rule TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (referred_contact_id, kind, role)
    )
    """,
    "CREATE INDEX referral_rewards_by_beneficiary ON referral_rewards (beneficiary_contact_id)",
    "CREATE INDEX referral_rewards_by_referrer ON referral_rewards "
    "(referrer_contact_id, earned_at)",
    """
    CREATE TABLE referral_entries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,             -- reward id / kind: each transition once
        reward_id TEXT NOT NULL REFERENCES referral_rewards (id),
        kind TEXT NOT NULL CHECK (kind IN ('credit', 'approve', 'reject', 'reverse', 'redeem')),
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'approved', 'rejected', 'reversed', 'redeemed')),
        at TEXT NOT NULL,
        actor TEXT NOT NULL,                  -- the rule, the reviewer, 'auto-approval' ...
        reason TEXT
    )
    """,
    "CREATE INDEX referral_entries_by_reward ON referral_entries (reward_id, seq)",
    """
    CREATE TABLE referral_lines (
        id INTEGER PRIMARY KEY,
        entry_seq INTEGER NOT NULL REFERENCES referral_entries (seq),
        account TEXT NOT NULL,                -- referral_expense, payouts, contact:<id>:pending ...
        contact_id TEXT,                      -- the contact owning the account, if any
        amount_minor INTEGER NOT NULL,        -- debit > 0, credit < 0; each entry sums to 0
        currency TEXT NOT NULL
    )
    """,
    "CREATE INDEX referral_lines_by_entry ON referral_lines (entry_seq)",
    "CREATE INDEX referral_lines_by_contact ON referral_lines (contact_id, account)",
    "CREATE TRIGGER referral_rewards_immutable BEFORE UPDATE ON referral_rewards "
    "BEGIN SELECT RAISE(ABORT, 'referral rewards are immutable: post an entry'); END",
    "CREATE TRIGGER referral_entries_immutable BEFORE UPDATE ON referral_entries "
    "BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable: post a new entry'); END",
    "CREATE TRIGGER referral_lines_immutable BEFORE UPDATE ON referral_lines "
    "BEGIN SELECT RAISE(ABORT, 'ledger lines are immutable: post a new entry'); END",
    """
    CREATE TABLE referral_fingerprints (
        contact_id TEXT NOT NULL,
        kind TEXT NOT NULL,                   -- 'device' or 'payment'
        value TEXT NOT NULL,
        first_seen_at TEXT NOT NULL,
        event_id TEXT,
        PRIMARY KEY (contact_id, kind, value)
    )
    """,
    "CREATE INDEX referral_fingerprints_by_value ON referral_fingerprints (kind, value)",
]


@migrations()
def m002_ledger(db: Database) -> None:
    for statement in _M002:  # one at a time, inside the engine's transaction
        db.execute(statement)


TABLES = {
    "referral_codes",
    "referral_attributions",
    "referral_rewards",
    "referral_entries",
    "referral_lines",
    "referral_fingerprints",
}
