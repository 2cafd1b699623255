"""What the loyalty plugin's tests share: a programme and a ruleset written where a test wants
them, and engines with exactly this plugin (fixtures a test module imports).

A module of its own rather than a ``conftest.py``: the plugins' test folders share one import
namespace, and the email plugin's tests import their ``conftest`` by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clm_loyalty
import pytest

from clm_engine import Engine, VirtualClock

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)

PROGRAMME: dict[str, Any] = {
    "loyalty": "points",
    "expire_after": "P365D",
    "qualifying_window": "P365D",
    "tiers": [
        {"name": "member", "threshold": 0},
        {"name": "silver", "threshold": 500},
        {"name": "gold", "threshold": 1000},
    ],
    "downgrade": {"hold": "P365D", "steps": 1},
    "milestones": [
        {"name": "first-order", "earns": 1},
        {"name": "3rd-order", "earns": 3},
        {"name": "1k-points", "lifetime_points": 1000},
    ],
}

RULES: list[dict[str, Any]] = [
    {
        "id": "earn",
        "when": {"event": "purchase"},
        "then": [
            {"action": "loyalty.earn", "with": {"points": 1, "per": "1.00", "currency": "USD"}}
        ],
    },
    {
        "id": "redeem",
        "when": {"event": "reward.claimed"},
        "then": [{"action": "loyalty.redeem", "with": {"points_property": "points"}}],
    },
    {
        "id": "goodwill",
        "when": {"event": "support.goodwill"},
        "then": [
            {"action": "loyalty.adjust", "with": {"points_property": "points", "reason": "support"}}
        ],
    },
    {
        "id": "gold-tag",
        "when": {
            "event": "loyalty.tier_changed",
            "where": {"fact": "event.properties.to", "op": "eq", "value": "gold"},
        },
        "then": [{"action": "tag.add", "with": {"tag": "gold"}}],
    },
    {
        "id": "third-order-tag",
        "when": {
            "event": "loyalty.milestone",
            "where": {"fact": "event.properties.milestone", "op": "eq", "value": "3rd-order"},
        },
        "then": [{"action": "tag.add", "with": {"tag": "regular"}}],
    },
]


def write_rules(
    folder: Path, programme: dict[str, Any] | None = None, rules: list[dict[str, Any]] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "programme.json").write_text(json.dumps(programme or PROGRAMME), encoding="utf-8")
    ruleset = {"ruleset": "points", "version": 1, "rules": RULES if rules is None else rules}
    (folder / "points.json").write_text(json.dumps(ruleset), encoding="utf-8")
    return folder


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return write_rules(tmp_path / "rules")


@pytest.fixture
def rules_with(tmp_path: Path) -> Callable[..., Path]:
    """``rules_with(extra_rules=(), programme=None)``: a folder with the test's programme and
    the standard rules plus ``extra_rules``."""

    def make(extra_rules: Any = (), programme: dict[str, Any] | None = None) -> Path:
        folder = tmp_path / f"rules-{len(list(tmp_path.glob('rules-*')))}"
        return write_rules(folder, programme, [*RULES, *extra_rules])

    return make


@pytest.fixture
def open_engine(
    clock: VirtualClock, rules: Path, new_store: Callable[[str], Any]
) -> Callable[..., Engine]:
    """``open_engine()``: an engine with this plugin on the test's store (SQLite or
    PostgreSQL: tests taking it run on both), the same store each call."""
    where = new_store("clm.db")

    def make(rulesets: Path | None = None) -> Engine:
        return Engine(
            where,
            clock=clock,
            plugins={"loyalty": clm_loyalty},
            rulesets=[rulesets or rules],
        )

    return make
