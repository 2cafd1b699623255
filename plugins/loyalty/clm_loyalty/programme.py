"""The loyalty programme: a JSON document beside the rulesets (kind ``loyalty``).

```json
{"loyalty": "points",
 "expire_after": "P365D",
 "qualifying_window": "P365D",
 "tiers": [{"name": "member", "threshold": 0},
           {"name": "silver", "threshold": 500},
           {"name": "gold", "threshold": 2000}],
 "downgrade": {"hold": "P365D", "steps": 1},
 "milestones": [{"name": "first-order", "earns": 1},
                {"name": "100th-order", "earns": 100},
                {"name": "10k-points", "lifetime_points": 10000}]}
```

Why a document and not parameters of each rule: the expiry period, the tiers and the
milestones are one programme's terms, shared by every rule that earns or spends its points;
stated once, they cannot disagree between two rules, and ``clm validate`` checks them with the
rulesets (file, line and JSON pointer).

- ``expire_after``: an earned lot expires this long after it was earned, unless spent first
  (spending is FIFO: the oldest points go first). Absent: points never expire.
- ``tiers``: ordered by ``threshold``, the first at 0 (every member's tier). A contact's tier
  is the highest whose threshold their *qualifying points* reach: the points earned (and
  adjusted with ``"qualifying": true``) within the last ``qualifying_window``. An upgrade
  happens at once, when an earn crosses a threshold.
- ``downgrade``: a tier is kept at least ``hold`` after it was reached; once the hold is over,
  the tier is re-evaluated whenever qualifying points fall (when an earn leaves the window),
  and moves down at most ``steps`` tiers at a time (absent: to the tier the points reach).
- ``milestones``: reached once per contact, ever: after ``earns`` earn entries (one per order
  for a rule that earns on purchases: "100th order") or ``lifetime_points`` points earned.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clm_engine import DurationSpec, Name, closest, duration_to_timedelta

#: The document kind (and key) of a programme.
KIND = "loyalty"


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    threshold: int = Field(ge=0, le=2**53, description="Qualifying points to reach it.")
    label: str = Field(default="", max_length=100, description="How people see it: 'Gold'.")

    @property
    def title(self) -> str:
        return self.label or self.name.capitalize()


class Downgrade(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hold: DurationSpec = Field(
        default="P365D", description="A tier is kept at least this long after it was reached."
    )
    steps: int | None = Field(
        default=None, ge=1, description="At most this many tiers down at a time."
    )


class Milestone(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    earns: int | None = Field(default=None, ge=1, le=2**53, description="After this many earns.")
    lifetime_points: int | None = Field(
        default=None, ge=1, le=2**53, description="After this many points earned in all."
    )

    @model_validator(mode="after")
    def _one_measure(self) -> Milestone:
        if (self.earns is None) == (self.lifetime_points is None):
            raise ValueError(
                f"milestone {self.name!r} needs exactly one of 'earns' or 'lifetime_points'"
            )
        return self


class Programme(BaseModel):
    """A loyalty programme document."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    loyalty: Name
    description: str = ""
    expire_after: DurationSpec | None = None
    qualifying_window: DurationSpec = "P365D"
    tiers: list[Tier] = Field(default_factory=list)
    downgrade: Downgrade = Field(default_factory=Downgrade)
    milestones: list[Milestone] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tiers_in_order(self) -> Programme:
        if self.tiers and self.tiers[0].threshold != 0:
            raise ValueError(
                f"the first tier ({self.tiers[0].name!r}) is every member's: its threshold "
                f"must be 0 (got {self.tiers[0].threshold})"
            )
        for lower, higher in zip(self.tiers, self.tiers[1:], strict=False):
            if higher.threshold <= lower.threshold:
                raise ValueError(
                    f"tiers go up: {higher.name!r} needs a threshold above {lower.name!r}'s "
                    f"{lower.threshold} (got {higher.threshold})"
                )
        for what, names in (
            ("tier", [t.name for t in self.tiers]),
            ("milestone", [m.name for m in self.milestones]),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what} names must differ: {', '.join(twice)} twice")
        return self

    @property
    def expiry(self) -> timedelta | None:
        return duration_to_timedelta(self.expire_after) if self.expire_after else None

    @property
    def window(self) -> timedelta:
        return duration_to_timedelta(self.qualifying_window)

    @property
    def hold(self) -> timedelta:
        return duration_to_timedelta(self.downgrade.hold)

    @property
    def base_tier(self) -> str | None:
        return self.tiers[0].name if self.tiers else None

    def rank(self, tier: str | None) -> int:
        """The tier's place (0: the base tier); -1 for none or a tier no longer defined."""
        names = [t.name for t in self.tiers]
        return names.index(tier) if tier in names else -1

    def tier_for(self, qualifying_points: int) -> str | None:
        """The highest tier these qualifying points reach (``None`` without tiers)."""
        reached = [t.name for t in self.tiers if qualifying_points >= t.threshold]
        return reached[-1] if reached else None


def programmes(documents: Any) -> dict[str, Programme]:
    found: dict[str, Programme] = dict((documents or {}).get(KIND, {}))
    return found


def unknown(name: str, known: Any) -> str:
    close = closest(name, known)
    if close:
        return f"no loyalty programme {name!r}; did you mean {close!r}?"
    return f"no loyalty programme {name!r}; known: {', '.join(sorted(known)) or 'none'}"


def resolve(documents: Any, name: str | None) -> Programme:
    """The programme ``name``, or the only one loaded when ``name`` is ``None``; a
    ``ValueError`` that says what to write otherwise."""
    known = programmes(documents)
    if name is None:
        if len(known) == 1:
            return next(iter(known.values()))
        if not known:
            raise ValueError(
                'no loyalty programme is loaded: add a {"loyalty": "<name>", ...} document '
                "beside the rulesets"
            )
        raise ValueError(
            f"{len(known)} loyalty programmes are loaded ({', '.join(sorted(known))}): "
            'say which with "programme"'
        )
    if name not in known:
        raise ValueError(unknown(name, known))
    return known[name]


def check_reference(name: str | None, documents: Any) -> list[str]:
    """For an action's ``check_references``: the programme it names must be loaded."""
    try:
        resolve(documents, name)
    except ValueError as error:
        return [str(error)]
    return []
