"""Fraud rules, as plugins of this plugin: a pluggy hook of its own, ``register_fraud_checks``.

Why a hook: what counts as farming differs by business (a fintech checks payment
fingerprints, a marketplace checks shipping addresses), so checks are contributed the same
way clm-engine's actions are. A distribution adds its own with an entry point in the group
``clm_referral``::

    [project.entry-points.clm_referral]
    my_checks = "my_package.checks"

    # my_package/checks.py
    from clm_referral.fraud import hookimpl

    @hookimpl
    def register_fraud_checks(register):
        register("same-postcode", check_postcode, description="...")

A check is ``check(claim, tables) -> str | list[str] | None``: the reason(s) to hold the
reward for review, or ``None``. It reads (never writes) the declared tables of the
transaction through ``tables`` (``tables["referral_rewards"].count(...)``: the table API of
``docs/plugin-hooks.md``, the same on every store; a check of your own may read tables your
plugin declares). A check written for the former ``check(claim, db)`` gets ``tables`` in
that place: port its SQL to the table API. A check that raises holds
the reward with the error as its reason: a reward no check could clear is not paid out
automatically. The built-in checks are in :mod:`clm_referral.checks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pluggy

from clm_engine import Once, load_entry_points

if TYPE_CHECKING:
    from clm_engine import Tables

hookspec = pluggy.HookspecMarker("clm_referral")
hookimpl = pluggy.HookimplMarker("clm_referral")

ENTRY_POINT_GROUP = "clm_referral"


class _Specs:
    @hookspec
    def register_fraud_checks(self, register: Callable[..., None]) -> None:
        """Contribute fraud checks: call ``register(name, check, *, description="")`` once per
        check. ``name`` is unique across plugins; a clash raises ``ValueError`` naming both.
        ``check(claim, tables)`` returns the reason(s) to hold a reward, or ``None``: it reads
        the declared tables (``tables["referral_rewards"]``) of the transaction, never writes."""


@dataclass(frozen=True)
class FraudSettings:
    """Thresholds for the built-in checks; a rule sets them in ``referral.reward``'s ``with``."""

    monthly_cap: int | None = 10  # rewards per referrer per calendar month (UTC)
    burst_count: int | None = 5  # referred signups of one referrer ...
    burst_hours: int = 24  # ... within this many hours: a burst


@dataclass(frozen=True)
class Claim:
    """A reward about to be granted, as fraud checks see it."""

    referrer_id: str
    referred_id: str
    role: str  # who would be credited: 'referrer' or 'referred'
    kind: str
    amount_minor: int
    currency: str
    at: datetime  # when the rewarded event happened
    referrer_email: str | None
    referred_email: str | None
    attributed_at: str | None  # utc_text of the referred contact's attribution
    settings: FraudSettings = field(default_factory=FraudSettings)


@dataclass(frozen=True)
class FraudCheck:
    name: str
    check: Callable[[Claim, Any], str | list[str] | None]
    description: str
    plugin: str


pm = pluggy.PluginManager("clm_referral")
pm.add_hookspecs(_Specs)


def load_checks() -> None:
    """Register the built-in checks and the installed ones (entry points), once.

    ``CLM_LOAD_PLUGINS``, when set, is honoured as for clm-engine: only the entry points named
    in it are loaded (the built-ins always are). Safe from many threads (the engine's
    ``Once``: a second thread waits until loading has finished).
    """
    _checks_once()


def _load_checks() -> None:
    from . import checks

    if pm.get_plugin("referral.builtin") is None:
        pm.register(checks, name="referral.builtin")
    load_entry_points(pm, ENTRY_POINT_GROUP, what="fraud check plugin")
    pm.check_pending()


_checks_once = Once(_load_checks)


def get_fraud_checks() -> dict[str, FraudCheck]:
    """Every registered fraud check, by name, in registration order (built-ins first)."""
    load_checks()
    found: dict[str, FraudCheck] = {}
    for impl in pm.hook.register_fraud_checks.get_hookimpls():

        def register(
            name: str,
            check: Callable[..., Any],
            *,
            description: str = "",
            _plugin: str = impl.plugin_name,
        ) -> None:
            if name in found:
                raise ValueError(
                    f"fraud check {name!r} is registered by both {found[name].plugin!r} "
                    f"and {_plugin!r}"
                )
            if not callable(check):
                raise ValueError(f"plugin {_plugin!r} registered fraud check {name!r} badly")
            found[name] = FraudCheck(name, check, description, _plugin)

        impl.function(register=register)
    return found


def run_checks(claim: Claim, tables: Tables) -> list[str]:
    """The reasons to hold this reward, from every check; empty when none objects."""
    reasons: list[str] = []
    for spec in get_fraud_checks().values():
        try:
            found = spec.check(claim, tables)
        except Exception as error:
            reasons.append(f"{spec.name}: the check failed ({type(error).__name__}: {error})")
            continue
        if found:
            for reason in [found] if isinstance(found, str) else found:
                reasons.append(f"{spec.name}: {reason}")
    return reasons
