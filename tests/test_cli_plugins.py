"""``clm plugins``: every plugin, and everything registered, with its plugin and distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
from click.testing import CliRunner

from clm_engine import hookimpl
from clm_engine.cli import cli
from clm_engine.registry import Registry

KEYS = {
    "plugins",
    "actions",
    "facts",
    "operators",
    "policies",
    "documents",
    "commands",
    "event_handlers",
    "reducers",
    "failed",
    "problems",
}


def run(*args: str, registry: Registry | None = None):
    result = CliRunner().invoke(cli, ["plugins", *args], catch_exceptions=False, obj=registry)
    assert result.exit_code == 0, result.output
    return result.output


def by_name(rows):
    return {row["name"]: row for row in rows}


@pytest.mark.usefixtures("example_plugins")
def test_json_lists_everything_with_its_plugin_and_distribution():
    listing = json.loads(run("--json"))
    assert set(listing) == KEYS
    email = metadata.version("clm-email")
    core = metadata.version("clm-engine")
    actions = by_name(listing["actions"])
    assert actions["email.send"] | {"description": ""} == {
        "name": "email.send",
        "plugin": "email",
        "distribution": "clm-email",
        "version": email,
        "description": "",
        "external": True,
        "pure": False,
    }
    assert actions["stage.set"]["plugin"] == "clm_engine.builtins.actions"
    assert (actions["stage.set"]["distribution"], actions["stage.set"]["version"]) == (
        "clm-engine",
        core,
    )
    assert actions["referral.reward"]["distribution"] == "clm-referral"
    facts = by_name(listing["facts"])
    assert facts["events.count"] | {"description": ""} == {
        "name": "events.count",
        "type": "number",
        "plugin": "clm_engine.builtins.facts",
        "distribution": "clm-engine",
        "version": core,
        "description": "",
    }
    assert facts["product.warranty_ends_at"]["type"] == "dates"
    assert (facts["referral.count"]["type"], facts["referral.count"]["plugin"]) == (
        "number",
        "referral",
    )
    operators = by_name(listing["operators"])
    assert operators["gt"]["fact_types"] == ["number", "text", "time"]
    assert operators["exists"]["fact_types"] is None
    assert len(operators) == 23
    assert sorted((p["plugin"], p["distribution"]) for p in listing["policies"]) == [
        ("email", "clm-email"),
        ("sms", "clm-sms"),
        ("webhook", "clm-webhook"),
    ]
    assert {d["name"]: d["plugin"] for d in listing["documents"]} == {
        "sequence": "email",
        "email_template": "email",
        "catalogue": "warranty",
        "health": "clm_engine.analytics.facts",
        "loyalty": "loyalty",
    }
    assert {c["name"]: c["plugin"] for c in listing["commands"]} == {
        "email": "email",
        "referral": "referral",
        "warranty": "warranty",
        "sms": "sms",
        "loyalty": "loyalty",
    }
    handlers = by_name(listing["event_handlers"])
    assert handlers["email.log_sent"]["event_type"] == "email.sent"
    assert handlers["warranty.registered"]["distribution"] == "clm-warranty"
    reducers = {(r["name"], r["event_type"]): r["plugin"] for r in listing["reducers"]}
    assert reducers["core.purchase", "purchase"] == "clm_engine.builtins.reducers"
    assert listing["failed"] == {}
    assert listing["problems"] == []
    loaded = by_name(listing["plugins"])
    assert loaded["email"]["distribution"] == "clm-email"
    assert loaded["clm_engine.builtins.facts"]["source"] == "built-in"


@pytest.mark.usefixtures("example_plugins")
def test_the_table_shows_each_kind_with_its_plugin(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    output = run()
    for title in (
        "plugins",
        "actions",
        "facts",
        "operators",
        "dispatch policies",
        "document kinds",
        "commands",
        "event handlers",
        "reducers",
    ):
        assert f"\n{title}" in f"\n{output}"
    lines = output.splitlines()

    def line_of(name: str) -> str:
        return next(line for line in lines if f" {name} " in line)

    assert "email" in line_of("email.send") and "clm-email" in line_of("email.send")
    assert "clm_engine.builtins.actions" in line_of("stage.set")
    assert "number" in line_of("events.count")
    assert "within [low, high], inclusive" in output  # text, not rich markup


def test_only_the_built_ins_when_no_plugin_is_installed():
    listing = json.loads(run("--json"))
    assert {row["plugin"] for row in listing["actions"]} == {
        "clm_engine.builtins.actions",
        "clm_engine.builtins.surveys",
    }
    assert listing["policies"] == []
    assert listing["commands"] == []


def test_plugins_that_failed_to_load_are_shown():
    registry = Registry()
    registry.load_failures["clm_broken"] = "ImportError: needs libfoo"  # as the loader records
    listing = json.loads(run("--json", registry=registry))
    assert listing["failed"] == {"clm_broken": "ImportError: needs libfoo"}
    assert "failed to load clm_broken: ImportError: needs libfoo" in run(registry=registry)


class Clashing:
    @hookimpl
    def register_facts(self, register):
        register("events.count", lambda ctx, **args: 0, type="number")


def test_a_name_two_plugins_claim_is_a_problem_not_a_crash():
    registry = Registry({"clashing": Clashing()})
    listing = json.loads(run("--json", registry=registry))
    output = run(registry=registry)
    assert listing["facts"] == []
    assert listing["actions"]  # the rest is still listed
    (problem,) = listing["problems"]
    assert "'events.count' is registered by both plugin" in problem
    assert "problem fact 'events.count' is registered by both" in " ".join(output.split())


def test_installed_plugins_are_found_by_entry_point():
    environ = {k: v for k, v in os.environ.items() if k != "CLM_LOAD_PLUGINS"}
    result = subprocess.run(
        [sys.executable, "-m", "clm_engine", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    send = by_name(listing["actions"])["email.send"]
    assert (send["plugin"], send["distribution"], send["version"]) == (
        "email",
        "clm-email",
        metadata.version("clm-email"),
    )
    assert by_name(listing["plugins"])["warranty"]["source"] == "clm-warranty"


class BrokenReducers:
    @hookimpl
    def register_reducers(self, register):
        raise RuntimeError("no reducers today")


def test_a_registration_hook_that_raises_is_a_problem_and_the_rest_is_listed():
    listing = json.loads(run("--json", registry=Registry({"broken": BrokenReducers()})))
    assert listing["problems"] == [
        "plugin 'broken': register_reducers failed: RuntimeError: no reducers today"
    ]
    assert "broken" in by_name(listing["plugins"])
    assert by_name(listing["actions"])["stage.set"]
