"""The plugin's tables, declared for any store (``register_tables``).

Why the ledger looks like this:

- ``loyalty_entries`` is the points ledger: one row per movement (earn, redeem, expire,
  adjust), signed points, append-only (the store refuses updates and deletes). A balance is
  the sum of a contact's entries; nothing else holds a balance that could drift from it. Each
  entry has a ``key`` derived from the decision that caused it (the outbox key of the action,
  or the lot it expires), and a unique constraint on it: a replayed event, a retried action or
  a second worker writes nothing new.
- An earn (or a positive adjustment) is also a *lot*: its points expire at ``expires_at``
  unless spent first. Which lot a redemption spends is not stored but derived, FIFO, from the
  entries in ``seq`` order (``ledger.replay``): the entries alone say what is left of each lot.
- ``loyalty_tiers`` is each contact's tier history, one row per change (append-only, keyed
  by the decision); the current tier is the latest row.
- ``loyalty_milestones``: a milestone is reached once per contact and programme, ever (the
  primary key says so), whatever replays or re-judgements happen.
"""

from __future__ import annotations

from clm_engine import Column, Index, Table

ENTRIES = Table(
    "loyalty_entries",
    columns=(
        Column("seq", "integer", auto_increment=True),
        Column("key", "text", nullable=False),  # the decision's outbox key (+ a suffix)
        Column("contact_id", "text", nullable=False),
        Column("programme", "text", nullable=False),
        Column("kind", "text", nullable=False),  # earn, redeem, expire, adjust
        Column("points", "integer", nullable=False),  # signed: earn > 0, redeem/expire < 0
        # When it happened in the contact's time line; never before the contact's previous
        # entry, so a prefix of the ledger in seq order is the ledger as of a time.
        Column("at", "timestamp", nullable=False),
        Column("expires_at", "timestamp"),  # a lot (earn, positive adjust): when it expires
        Column("lot_key", "text"),  # an expire entry: the lot it expires
        Column("qualifying", "boolean", nullable=False, default=False),  # counts for tiers
        Column("event_id", "text"),  # the event that caused it, if any
        Column("source", "text"),  # ruleset/rule, or who adjusted
        Column("reason", "text"),
    ),
    primary_key=("seq",),
    unique=(("key",),),
    indexes=(Index(("contact_id", "programme", "seq"), name="loyalty_entries_by_contact"),),
    append_only=True,
    description="The points ledger: earn, redeem, expire and adjust entries, once each",
)

TIERS = Table(
    "loyalty_tiers",
    columns=(
        Column("seq", "integer", auto_increment=True),
        Column("key", "text", nullable=False),
        Column("contact_id", "text", nullable=False),
        Column("programme", "text", nullable=False),
        Column("tier", "text", nullable=False),
        Column("previous", "text"),
        Column("direction", "text", nullable=False),  # up or down
        Column("at", "timestamp", nullable=False),
        Column("qualifying_points", "integer", nullable=False),
        Column("reason", "text"),
    ),
    primary_key=("seq",),
    unique=(("key",),),
    indexes=(Index(("contact_id", "programme", "seq"), name="loyalty_tiers_by_contact"),),
    append_only=True,
    description="Tier changes: each contact's tier history, once per decision",
)

MILESTONES = Table(
    "loyalty_milestones",
    columns=(
        Column("contact_id", "text"),
        Column("programme", "text"),
        Column("milestone", "text"),
        Column("at", "timestamp", nullable=False),
        Column("key", "text", nullable=False),  # the entry that reached it
    ),
    primary_key=("contact_id", "programme", "milestone"),
    indexes=(Index(("programme", "milestone"), name="loyalty_milestones_by_name"),),
    append_only=True,
    description="Milestones reached: once per contact, programme and milestone, ever",
)

TABLES = (ENTRIES, TIERS, MILESTONES)
