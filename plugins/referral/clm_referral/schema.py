"""The plugin's tables, declared for any store (``register_tables``).

Why the ledger looks like this:

- ``referral_rewards`` is one row per reward *granted*: who earns it, for whom, how much. A
  unique key on (referred contact, kind, role) makes a second grant for the same referred
  contact impossible, whatever retries, replays or concurrent workers try.
- ``referral_entries`` and ``referral_lines`` are a double-entry journal: each entry moves
  money between accounts with lines that sum to zero per currency; a state change (approval,
  rejection, reversal, redemption) is a new entry, never an update. A reward's state is the
  state of its latest entry, and balances are sums of lines. The three tables are
  append-only: the store refuses updates and deletes.
- ``referral_fingerprints`` remembers the device and payment fingerprints events carried, for
  the fraud checks.

Stores made by the plugin's former ``sqlite_utils`` migrations (``clm_referral`` m001, m002)
have these columns and indexes already (the partial index ``referral_codes_one_active`` by its
name); their "immutable" triggers stay and agree with ``append_only``.
"""

from __future__ import annotations

from clm_engine import Column, Index, Table

CODES = Table(
    "referral_codes",
    columns=(
        Column("code", "text"),
        Column("contact_id", "text", nullable=False),  # the referrer who shares the code
        Column("created_at", "timestamp"),
        # A rotated code is retired, not deleted: an old link still says whose it was.
        Column("retired_at", "timestamp"),
    ),
    primary_key=("code",),
    indexes=(
        Index(("contact_id",), name="referral_codes_by_contact"),
        # One active code per contact.
        Index(
            ("contact_id",),
            unique=True,
            where={"retired_at": None},
            name="referral_codes_one_active",
        ),
    ),
    description="Referral codes: whose each is, and when it was retired",
)

ATTRIBUTIONS = Table(
    "referral_attributions",
    columns=(
        Column("referred_contact_id", "text"),  # a contact is referred at most once
        Column("referrer_contact_id", "text"),
        Column("code", "text"),
        Column("attributed_at", "timestamp"),
        Column("event_id", "text"),
    ),
    primary_key=("referred_contact_id",),
    indexes=(Index(("referrer_contact_id",), name="referral_attributions_by_referrer"),),
    description="Who referred whom (the first attribution by event time wins)",
)

REWARDS = Table(
    "referral_rewards",
    columns=(
        Column("id", "text"),  # rw-...: derived from the unique key below
        Column("referred_contact_id", "text", nullable=False),
        Column("referrer_contact_id", "text", nullable=False),
        Column("beneficiary_contact_id", "text", nullable=False),  # whose account is credited
        Column("role", "text", nullable=False),  # 'referrer' or 'referred'
        Column("kind", "text", nullable=False),  # 'onboarding', 'first-purchase' ... (the rule's)
        Column("amount_minor", "integer", nullable=False),  # > 0
        Column("currency", "text", nullable=False),
        Column("earned_at", "timestamp", nullable=False),  # when the rewarded event happened
        Column("approve_after", "timestamp"),  # automatic approval from then; NULL if held
        Column("held_reasons", "json", nullable=False),  # a list; not empty: held for review
        Column("action_key", "text"),  # the outbox row that granted it
        Column("ruleset", "text"),
        Column("rule", "text"),
        Column("created_at", "timestamp", nullable=False),
    ),
    primary_key=("id",),
    unique=(("referred_contact_id", "kind", "role"),),
    indexes=(
        Index(("beneficiary_contact_id",), name="referral_rewards_by_beneficiary"),
        Index(("referrer_contact_id", "earned_at"), name="referral_rewards_by_referrer"),
    ),
    append_only=True,
    description="Rewards granted, one per referred contact, kind and role",
)

ENTRIES = Table(
    "referral_entries",
    columns=(
        Column("seq", "integer", auto_increment=True),
        Column("key", "text", nullable=False),  # reward id / kind: each transition once
        Column("reward_id", "text", nullable=False),
        Column("kind", "text", nullable=False),  # credit, approve, reject, reverse, redeem
        Column("state", "text", nullable=False),  # pending, approved, rejected, reversed ...
        Column("at", "timestamp", nullable=False),
        Column("actor", "text", nullable=False),  # the rule, the reviewer, 'auto-approval' ...
        Column("reason", "text"),
    ),
    primary_key=("seq",),
    unique=(("key",),),
    indexes=(Index(("reward_id", "seq"), name="referral_entries_by_reward"),),
    append_only=True,
    description="The ledger's entries: each state change of a reward, once",
)

LINES = Table(
    "referral_lines",
    columns=(
        Column("id", "integer", auto_increment=True),
        Column("entry_seq", "integer", nullable=False),
        Column("account", "text", nullable=False),  # referral_expense, contact:<id>:pending ...
        Column("contact_id", "text"),  # the contact owning the account, if any
        Column("amount_minor", "integer", nullable=False),  # debit > 0, credit < 0
        Column("currency", "text", nullable=False),
    ),
    primary_key=("id",),
    indexes=(
        Index(("entry_seq",), name="referral_lines_by_entry"),
        Index(("contact_id", "account"), name="referral_lines_by_contact"),
    ),
    append_only=True,
    description="The ledger's lines: each entry's sum to zero per currency",
)

FINGERPRINTS = Table(
    "referral_fingerprints",
    columns=(
        Column("contact_id", "text"),
        Column("kind", "text"),  # 'device' or 'payment'
        Column("value", "text"),
        Column("first_seen_at", "timestamp", nullable=False),
        Column("event_id", "text"),
    ),
    primary_key=("contact_id", "kind", "value"),
    indexes=(Index(("kind", "value"), name="referral_fingerprints_by_value"),),
    description="Device and payment fingerprints events carried, for the fraud checks",
)

TABLES = (CODES, ATTRIBUTIONS, REWARDS, ENTRIES, LINES, FINGERPRINTS)
TABLE_NAMES = frozenset(table.name for table in TABLES)
