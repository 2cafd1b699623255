"""Fraud rules, as plugins of this plugin: a pluggy hook of its own, ``register_fraud_checks``.

Why a hook: what counts as farming differs by business (a fintech checks payment
fingerprints, a marketplace checks shipping addresses), so checks are contributed the same
way clm-engine's actions are. The plugin adds the hook to each engine's plugin manager (the
engine's ``register_hookspecs``), so a distribution adds its checks as an ordinary clm-engine
plugin, and each engine has its own::

    [project.entry-points.clm_engine]
    my_checks = "my_package.checks"

    # my_package/checks.py
    from clm_engine import hookimpl

    @hookimpl(optionalhook=True)  # optional: an engine without clm-referral ignores it
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

from clm_engine import hookspec

if TYPE_CHECKING:
    from clm_engine import Tables


class Specs:
    """The plugin's own hook, added to each engine's (``register_hookspecs``)."""

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


def get_fraud_checks(registry: Any) -> dict[str, FraudCheck]:
    """Every fraud check the engine's plugins register, by name, in the plugins' order
    (the built-ins first)."""
    found: dict[str, FraudCheck] = {}
    for plugin, args, kwargs in registry.registrations("register_fraud_checks"):
        check = _check_of(plugin, *args, **kwargs)
        if check.name in found:
            raise ValueError(
                f"fraud check {check.name!r} is registered by both {found[check.name].plugin!r} "
                f"and {plugin!r}"
            )
        found[check.name] = check
    return found


def _check_of(
    plugin: str, name: str, check: Callable[..., Any], *, description: str = ""
) -> FraudCheck:
    if not isinstance(name, str) or not name or not callable(check):
        raise ValueError(f"plugin {plugin!r} registered fraud check {name!r} badly")
    return FraudCheck(name, check, description, plugin)


def run_checks(claim: Claim, tables: Tables, registry: Any) -> list[str]:
    """The reasons to hold this reward, from every check; empty when none objects."""
    reasons: list[str] = []
    for spec in get_fraud_checks(registry).values():
        try:
            found = spec.check(claim, tables)
        except Exception as error:
            reasons.append(f"{spec.name}: the check failed ({type(error).__name__}: {error})")
            continue
        if found:
            for reason in [found] if isinstance(found, str) else found:
                reasons.append(f"{spec.name}: {reason}")
    return reasons
