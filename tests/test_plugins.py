from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from clm_engine import (
    ClmError,
    Column,
    Engine,
    FactContext,
    PluginError,
    Table,
    hookimpl,
    hookspec,
)
from clm_engine.cli import cli
from clm_engine.registry import Registry
from tests.helpers import event
from tests.plugins import sample_plugin

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sample():
    """The sample plugin, for an engine's ``plugins=``."""
    return {"sample": sample_plugin}


def hook_names() -> list[str]:
    return sorted(name for name in dir(Registry().hook) if not name.startswith("_"))


def test_hook_register_reducers(sample, db_path):
    with Engine(db_path, plugins=sample) as engine:
        engine.ingest(event("c1", "points.earned", "2026-10-01", points=5))
        engine.ingest(event("c1", "points.earned", "2026-10-02", points=7))
        assert engine.contact("c1").scores == {"loyalty": 12.0}
    names = [name for name, _ in engine.registry.reducers.for_type("points.earned")]
    assert names == ["core.track_activity", "sample.earn_points"]


def test_hook_register_migrations(sample, db_path):
    with Engine(db_path, plugins=sample) as engine:
        assert "sample_notes" in engine.store.db.table_names()
        assert engine.store.migrate(engine.registry.migrations) == []


def test_hook_register_commands(sample):
    result = CliRunner().invoke(cli, ["sample-hello", "Ada"], obj=Registry(sample))
    assert result.exit_code == 0, result.output
    assert result.output == "hello Ada from the sample plugin\n"
    # Another run of clm, without the plugin, has no such command.
    assert CliRunner().invoke(cli, ["sample-hello", "Ada"]).exit_code == 2


def test_hook_forget_contact(sample, db_path):
    with Engine(db_path, plugins=sample) as engine:
        engine.ingest(event("c1", "signup", "2026-10-01"))
        engine.store.db["sample_notes"].insert_all(
            [
                {"contact_id": "c1", "note": "likes red"},
                {"contact_id": "c2", "note": "keep me"},
            ]
        )
        report = engine.forget("c1")
        assert report.removed == {
            "events": 1,
            "stage_transitions": 1,
            "contacts": 1,
            "sample_notes": 1,
        }
        assert [r["contact_id"] for r in engine.store.db["sample_notes"].rows] == ["c2"]
        assert engine.store.db["erasures"].count == 1
        again = engine.forget("c1")  # nothing held any more: nothing changes
        assert (again.removed, again.pseudonymised, again.found) == ({}, {}, False)


class GreetingSpecs:
    @hookspec
    def register_greetings(self, register):
        """A plugin's own extension point: other plugins add greetings."""


class Greeter:
    """A plugin that opens its own hook and runs what the engine's plugins register for it."""

    class Params(sample_plugin.Shout):
        pass

    @hookimpl
    def register_hookspecs(self, register):
        register(GreetingSpecs)

    @hookimpl
    def register_greetings(self, register):
        register("hello")

    @hookimpl
    def register_actions(self, register):
        def greet(ctx, params):
            words = [args[0] for _, args, _ in ctx.registry.registrations("register_greetings")]
            ctx.emit("greeted", {"words": words})

        register("greeter.greet", greet, self.Params)


class French:
    @hookimpl(optionalhook=True)  # an engine without the greeter ignores it
    def register_greetings(self, register):
        register("bonjour")


def test_hook_register_hookspecs(db_path, tmp_path):
    """A plugin's own hooks join each engine's plugin manager: two engines in one process see
    their own implementations, attributed to their plugins; a hook declared twice is a
    PluginError; an optional implementation loads without the plugin that declares it."""
    rules = tmp_path / "greet.json"
    rule = {
        "id": "greet",
        "when": {"event": "signup"},
        "then": [{"action": "greeter.greet", "with": {"word": "x"}}],
    }
    rules.write_text(json.dumps({"ruleset": "greet", "version": 1, "rules": [rule]}))
    both = Registry({"greeter": Greeter(), "french": French()}, installed=False)
    assert both.registrations("register_greetings") == [
        ("greeter", ("hello",), {}),
        ("french", ("bonjour",), {}),
    ]
    for plugins, words in (
        ({"greeter": Greeter(), "french": French()}, ["hello", "bonjour"]),
        ({"greeter": Greeter()}, ["hello"]),
    ):
        path = tmp_path / f"{len(plugins)}.db"
        with Engine(path, plugins=plugins, rulesets=[rules]) as engine:
            engine.ingest(event("c1", "signup", "2026-10-01"))
            [greeted] = [e for e in engine.store.recent_events("c1") if e.type == "greeted"]
            assert greeted.properties["words"] == words
    assert Registry({"french": French()}, installed=False).actions is not None
    with pytest.raises(PluginError, match="register_greetings"):
        Registry(
            {
                "greeter": Greeter(),
                "again": type(
                    "Again",
                    (),
                    {
                        "register_hookspecs": hookimpl(
                            lambda self, register: register(GreetingSpecs)
                        )
                    },
                )(),
            },
            installed=False,
        )
    with pytest.raises(PluginError, match="no hook 'register_nothing'"):
        both.registrations("register_nothing")


def _sample_rules(tmp_path, if_=None):
    path = tmp_path / "sample.json"
    rule = {
        "id": "shout",
        "when": {"event": "signup"},
        "then": [{"action": "sample.shout", "with": {"word": "hello"}}],
    }
    if if_:
        rule["if"] = if_
    path.write_text(json.dumps({"ruleset": "sample", "version": 1, "rules": [rule]}))
    return path


def test_hook_register_actions(sample, db_path, tmp_path):
    with Engine(db_path, rulesets=[_sample_rules(tmp_path)], plugins=sample) as engine:
        assert engine.ingest(event("c1", "signup", "2026-10-01")).ran_inline == 1
        assert engine.contact("c1").scores == {"loyalty": 5.0}
        [row] = engine.store.actions_for("c1")
        assert (row.status, row.result) == ("done", {"shouted": "HELLO"})


def test_hook_register_operators(sample, db_path, tmp_path):
    cond = {"fact": "contact.metrics.events_count", "op": "divisible_by", "value": 1}
    with Engine(db_path, rulesets=[_sample_rules(tmp_path, cond)], plugins=sample) as engine:
        assert engine.ingest(event("c1", "signup", "2026-10-01")).enqueued == 1
    bad = {"fact": "contact.metrics.events_count", "op": "divisible_by", "value": 0}
    with pytest.raises(ClmError, match="divisible_by needs a positive whole number"):
        Engine(db_path, rulesets=[_sample_rules(tmp_path, bad)], plugins=sample)


def test_hook_register_facts(sample, db_path, tmp_path):
    cond = {"fact": "contact.name_length", "op": "gte", "value": 3}
    with Engine(db_path, rulesets=[_sample_rules(tmp_path, cond)], plugins=sample) as engine:
        assert engine.ingest(event("c1", "signup", "2026-10-01", first_name="Al")).enqueued == 0
        assert engine.ingest(event("c2", "signup", "2026-10-01", first_name="Ada")).enqueued == 1


def test_hook_dispatch_policy(sample, db_path, tmp_path):
    with Engine(db_path, rulesets=[_sample_rules(tmp_path)], plugins=sample) as engine:
        engine.ingest(event("c1", "clm.tag.add", "2026-10-01T09:00:00Z", tag="quiet"))
        engine.ingest(event("c1", "signup", "2026-10-01"))  # its action is asked inline
        [row] = engine.store.actions_for("c1")
        assert (row.status, row.note) == ("vetoed", "this contact asked for quiet")


class Clash:
    @hookimpl
    def register_reducers(self, register):
        register("points.earned", lambda contact, event: None, name="sample.earn_points")


def test_two_plugins_registering_one_name_fail_at_load_naming_both(sample, db_path):
    with pytest.raises(
        PluginError,
        match=r"'sample\.earn_points' is registered by both plugin 'sample' and plugin 'clash'",
    ):
        Engine(db_path, plugins={**sample, "clash": Clash()})


class SecondSampleMigrations:
    @hookimpl
    def register_migrations(self, register):
        register(sample_plugin.migrations)


def test_two_migration_sets_with_one_name_fail_at_load(sample, db_path):
    with pytest.raises(PluginError, match=r"migration set 'sample_plugin'.*'sample'.*'again'"):
        Engine(db_path, plugins={**sample, "again": SecondSampleMigrations()})


def _run_clm(args: list[str], extra_path: Path | None = None, **env: str):
    environ = {**os.environ, **env}
    if extra_path:
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(extra_path), environ.get("PYTHONPATH")])
        )
    return subprocess.run(
        [sys.executable, "-m", "clm_engine", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def _fake_distribution(folder: Path, name: str, module_source: str) -> Path:
    """An installed distribution with a clm_engine entry point, as pip would leave it."""
    (folder / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[clm_engine]\n{name} = {name}\n")
    return folder


def test_entry_point_plugins_load_and_the_allow_list_filters_them(tmp_path):
    _fake_distribution(
        tmp_path,
        "clm_hello",
        """
        from clm_engine import hookimpl

        @hookimpl
        def register_reducers(register):
            register("hello", lambda contact, event: None)
    """,
    )
    loaded = _run_clm(["plugins", "--json"], tmp_path, CLM_LOAD_PLUGINS="clm_hello")
    assert loaded.returncode == 0, loaded.stderr
    listed = {p["name"]: p for p in json.loads(loaded.stdout)["plugins"]}
    assert listed["clm_hello"]["source"] == "clm_hello"
    assert listed["clm_hello"]["hooks"] == ["register_reducers"]
    filtered = _run_clm(["plugins", "--json"], tmp_path, CLM_LOAD_PLUGINS="something-else")
    assert "clm_hello" not in {p["name"] for p in json.loads(filtered.stdout)["plugins"]}


def test_a_plugin_that_fails_to_import_is_skipped_and_reported(tmp_path):
    _fake_distribution(tmp_path, "clm_broken", "raise ImportError('needs libfoo')\n")
    result = _run_clm(["plugins", "--json"], tmp_path, CLM_LOAD_PLUGINS="clm_broken")
    assert result.returncode == 0
    assert json.loads(result.stdout)["failed"] == {"clm_broken": "ImportError: needs libfoo"}
    assert "plugin 'clm_broken' failed to load and was skipped" in result.stderr


def test_hook_register_event_handlers(db_path):
    from tests.plugins import credits_plugin

    credits_plugin.CALLS["handler"] = 0
    with Engine(db_path, plugins={"credits": credits_plugin}) as engine:
        engine.ingest(event("bob", "invite.accepted", "2026-10-01", inviter="ann"))
        engine.ingest(event("bob", "invite.accepted", "2026-10-01", inviter="ann"))
        rows = engine.store.read().db.execute("SELECT * FROM credit_invites").fetchall()
    assert [row[:2] for row in rows] == [("bob", "ann")]
    assert credits_plugin.CALLS["handler"] == 1  # not again for the duplicate


class Visits:
    """A plugin keeping a table of its own through the table API only."""

    VISITS = Table(
        "visits_pages",
        columns=(
            Column("contact_id", "text"),
            Column("page", "text"),
            Column("seen", "integer", nullable=False, default=0),
            Column("last_at", "timestamp"),
        ),
        primary_key=("contact_id", "page"),
    )

    @hookimpl
    def register_tables(self, register):
        register(self.VISITS)

    @hookimpl
    def register_event_handlers(self, register):
        def on_view(tables, contact, event):
            pages = tables["visits_pages"]
            key = {"contact_id": contact.id, "page": event.properties["page"]}
            pages.insert(key, on_conflict="ignore")
            pages.update(key, {"last_at": event.occurred_at}, add={"seen": 1})

        register("page.viewed", on_view, name="visits.on_view")

    @hookimpl
    def register_facts(self, register):
        def pages_seen(ctx):
            return ctx.tables["visits_pages"].count({"contact_id": ctx.contact.id})

        register("visits.pages", pages_seen, type="number")


def test_hook_register_tables(db_path):
    with Engine(db_path, plugins={"visits": Visits()}) as engine:
        for day, page in enumerate(("/", "/pricing", "/"), start=1):
            engine.ingest(event("ann", "page.viewed", f"2026-10-0{day}", page=page))
        rows = engine.store.tables["visits_pages"].rows(order_by=["page"])
        assert [(r["page"], r["seen"]) for r in rows] == [("/", 2), ("/pricing", 1)]
        assert rows[0]["last_at"] == "2026-10-03T10:00:00.000000Z"
        ctx = FactContext(engine.contact("ann"), datetime.now(UTC), tables=engine.store.tables)
        assert engine.registry.facts["visits.pages"].compute(ctx) == 2
        assert engine.store.migrate(engine.registry.migrations, engine.registry.tables) == []
    with pytest.raises(PluginError, match="table 'visits_pages' is registered by both"):
        Engine(db_path, plugins={"visits": Visits(), "again": VisitsAgain()})


class VisitsAgain:
    @hookimpl
    def register_tables(self, register):
        register(Visits.VISITS)


def test_hook_register_documents(db_path, tmp_path):
    from tests.plugins import credits_plugin

    (tmp_path / "gold.json").write_text(json.dumps({"tier": "gold", "amount": 50}))
    with Engine(
        db_path, rulesets=[tmp_path / "gold.json"], plugins={"credits": credits_plugin}
    ) as engine:
        assert engine.documents["tier"]["gold"].amount == 50


def test_every_hook_is_documented():
    docs = (ROOT / "docs" / "plugin-hooks.md").read_text()
    documented = set(re.findall(r"^## `?(\w+)", docs, re.MULTILINE))
    assert set(hook_names()) <= documented, set(hook_names()) - documented


def test_every_hook_is_tested():
    tests = {name for name in globals() if name.startswith("test_hook_")}
    assert {f"test_hook_{name}" for name in hook_names()} <= tests


class ActionClash:
    @hookimpl
    def register_actions(self, register):
        register("sample.shout", lambda ctx, params: None, sample_plugin.Shout)


class BadAction:
    @hookimpl
    def register_actions(self, register):
        register("bad.action", lambda ctx, params: None, dict)


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (
            ActionClash(),
            r"action 'sample\.shout' is registered by both plugin 'sample' and "
            r"plugin 'other'",
        ),
        (BadAction(), r"plugin 'other' registered action 'bad\.action' without a pydantic model"),
    ],
)
def test_actions_are_checked_when_registered(sample, db_path, plugin, message):
    with pytest.raises(PluginError, match=message):
        Engine(db_path, plugins={**sample, "other": plugin})


class RenamingWrapper:
    """A wrapper around ``register_actions``: it sees every plugin's registrations go by."""

    def __init__(self):
        self.calls = 0

    @hookimpl(wrapper=True)
    def register_actions(self, register):
        self.calls += 1
        return (yield)


def test_registration_hooks_go_through_pluggy_so_wrappers_and_tracing_work(sample, db_path):
    wrapper = RenamingWrapper()
    registry = Registry({**sample, "wrapper": wrapper})
    traced: list[str] = []
    registry.pm.trace.root.setwriter(traced.append)
    registry.pm.enable_tracing()
    with Engine(db_path, registry=registry) as engine:
        assert "sample.shout" in engine.actions  # the plugin's actions, through the wrapper
        assert engine.actions["sample.shout"].plugin == "sample"
    assert wrapper.calls == 1
    assert any("register_actions" in line for line in traced)


def test_two_engines_with_different_plugins_live_side_by_side(sample, tmp_path):
    with (
        Engine(tmp_path / "a.db", plugins=sample) as with_sample,
        Engine(tmp_path / "b.db") as without,
    ):
        assert "sample.shout" in with_sample.actions
        assert "sample.shout" not in without.actions
        assert "sample_notes" in with_sample.store.db.table_names()
        assert "sample_notes" not in without.store.db.table_names()
        with_sample.ingest(event("c1", "points.earned", "2026-10-01", points=5))
        without.ingest(event("c1", "points.earned", "2026-10-01", points=5))
        assert with_sample.contact("c1").scores == {"loyalty": 5.0}
        assert without.contact("c1").scores == {}


def test_register_kept_and_called_after_its_hook_is_refused(db_path):
    kept = []

    class Hoarder:
        @hookimpl
        def register_facts(self, register):
            kept.append(register)

    Registry({"hoarder": Hoarder()}).facts  # noqa: B018 (reads the registrations)
    with pytest.raises(PluginError, match="outside a registration hook"):
        kept[0]("late.fact", lambda ctx: 1)


def test_a_registration_hook_that_raises_names_its_plugin(db_path):
    class Broken:
        @hookimpl
        def register_facts(self, register):
            raise RuntimeError("no facts today")

    with pytest.raises(PluginError, match=r"plugin 'broken': register_facts failed: .*today"):
        Engine(db_path, plugins={"broken": Broken()})


def test_hook_map_segment_message(sample, db_path):
    from tests.http_helpers import bearer, served

    registry = Registry(sample)
    with served(db_path, registry=registry) as client:
        headers = bearer(client.keys["ingest"])
        batch = {
            "batch": [
                {
                    "type": "track",
                    "userId": "u1",
                    "event": "Points Earned",
                    "messageId": "m1",
                    "properties": {"points": 5},
                    "timestamp": "2026-10-01T10:00:00Z",
                },
                {"type": "track", "userId": "u1", "event": "Ignored", "messageId": "m2"},
                {
                    "type": "track",
                    "userId": "u1",
                    "event": "Song Played",
                    "messageId": "m3",
                    "timestamp": "2026-10-01T11:00:00Z",
                },
            ]
        }
        answer = client.post("/v1/batch", json=batch, headers=headers).json()
        assert [r["status"] for r in answer["results"]] == ["ingested", "ingested", "ingested"]
        contact = client.get("/v1/contacts/u1", headers=bearer(client.keys["read"])).json()
        assert contact["scores"] == {"loyalty": 5.0}  # the plugin's mapping, then its reducer
        events = client.get("/v1/contacts/u1/events", headers=bearer(client.keys["read"])).json()
        assert sorted(e["type"] for e in events) == ["points.earned", "song_played"]


def test_hook_check_unsubscribe_token(sample, db_path):
    from tests.http_helpers import served

    with served(db_path, registry=Registry(sample)) as client:
        client.post(
            "/v1/events",
            json=event("ada", "signup", "2026-10-01", consent={"email": True}),
            headers={"Authorization": f"Bearer {client.keys['ingest']}"},
        )
        refused = client.post("/v1/unsubscribe?contact=ada&token=sample-wrong")
        assert refused.status_code == 403
        unknown = client.post("/v1/unsubscribe?contact=ada&token=nobody-knows-me")
        assert unknown.status_code == 403
        done = client.post("/v1/unsubscribe?contact=ada&token=sample-ada")
        assert done.status_code == 200
    with Engine(db_path, plugins=sample) as engine:
        assert engine.contact("ada").consent == {"email": False}
