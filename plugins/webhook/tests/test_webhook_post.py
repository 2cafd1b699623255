"""``webhook.post`` end to end: rules in, signed posts out to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from clm_webhook import signing
from webhook_receiver import Receiver, Reply

from clm_engine import Engine, VirtualClock

START = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
SECRET = "s3cret-for-the-webhook-tests"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


class Workspace:
    def __init__(self, root, monkeypatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.clock = VirtualClock(START)
        self.rules = root / "rules"
        self.rules.mkdir()
        self.engine: Engine | None = None

    def settings(self, **values) -> None:
        path = self.root / "webhook-settings.json"
        path.write_text(json.dumps(values))
        self.monkeypatch.setenv("CLM_WEBHOOK_SETTINGS", str(path))

    def rule(self, rule_id: str = "notify", event: str = "signup", **with_) -> None:
        ruleset = {
            "ruleset": "hooks",
            "version": 1,
            "rules": [
                {
                    "id": rule_id,
                    "when": {"event": event},
                    "then": [{"action": "webhook.post", "with": with_}],
                }
            ],
        }
        (self.rules / "hooks.json").write_text(json.dumps(ruleset))

    def open(self) -> Engine:
        self.engine = Engine(self.root / "clm.db", clock=self.clock)
        self.engine.load_rulesets([self.rules])
        return self.engine

    def posts(self) -> list:
        assert self.engine is not None
        return [r for r in self.engine.store.actions_for("c1") if r.action == "webhook.post"]

    def events(self, type_: str) -> list:
        assert self.engine is not None
        return [e for e in self.engine.store.recent_events("c1", limit=1000) if e.type == type_]


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", "webhook")
    monkeypatch.setenv("CLM_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("CLM_WEBHOOK_SETTINGS", raising=False)
    monkeypatch.delenv("CLM_CHANNEL_POLICY", raising=False)
    space = Workspace(tmp_path, monkeypatch)
    yield space
    if space.engine is not None:
        space.engine.close()


def signup(name: str = 'Ada "the Countess" Lovelace') -> dict:
    return {
        "contact_id": "c1",
        "type": "signup",
        "occurred_at": "2026-11-02T12:00:00Z",
        "properties": {"email": "ada@example.com", "first_name": name, "plan": "pro"},
    }


BODY = {
    "title": "Call {{ first_name }}",
    "contact": "{{ contact_id }}",
    "plan": "{{ plan }}",
    "tags": ["new", "{{ event.type }}"],
    "static": 3,
}
FALLBACKS = {"first_name": "there", "plan": "none"}


def test_loopback_is_refused_by_default_and_nothing_reaches_the_server(hooks, receiver):
    hooks.rule(url=f"{receiver.url}/hooks", body=BODY, fallbacks=FALLBACKS)
    engine = hooks.open()
    engine.ingest(signup())
    report = engine.dispatch()
    assert report.outcomes["failed"] == 1
    [row] = hooks.posts()
    assert row.status == "failed"
    assert "resolves to 127.0.0.1, a loopback address: refused" in row.note
    assert receiver.received == []
    [failed] = hooks.events("webhook.failed")
    assert "loopback" in failed.properties["reason"]


def test_a_post_is_rendered_signed_and_carries_the_outbox_key(hooks, receiver):
    hooks.settings(allowed_networks=["127.0.0.1/32"])
    hooks.rule(url=f"{receiver.url}/hooks?src=clm", body=BODY, fallbacks=FALLBACKS)
    engine = hooks.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["done"] == 1
    [request] = receiver.received
    assert request.path == "/hooks?src=clm"
    # A quote in a name stays inside its string: each string is rendered, never the JSON text.
    assert json.loads(request.body) == {
        "title": 'Call Ada "the Countess" Lovelace',
        "contact": "c1",
        "plan": "pro",
        "tags": ["new", "signup"],
        "static": 3,
    }
    headers = request.headers
    assert headers["content-type"] == "application/json; charset=utf-8"
    [row] = hooks.posts()
    assert headers["idempotency-key"] == row.key
    assert headers["x-clm-timestamp"] == str(int(START.timestamp()))
    assert signing.verify(
        [SECRET.encode()],
        timestamp=headers["x-clm-timestamp"],
        header=headers["x-clm-signature"],
        body=request.body,
        now=START.timestamp() + 10,
    )
    assert not signing.verify(
        [SECRET.encode()],
        timestamp=headers["x-clm-timestamp"],
        header=headers["x-clm-signature"],
        body=request.body.replace(b"c1", b"c2"),
        now=START.timestamp(),
    )
    [sent] = hooks.events("webhook.sent")
    assert (sent.properties["status"], sent.properties["host"]) == (200, "127.0.0.1")


def test_a_5xx_is_retried_with_backoff_and_the_retry_carries_the_same_key_and_body(hooks, receiver):
    hooks.settings(allowed_networks=["127.0.0.0/8"])
    hooks.rule(url=f"{receiver.url}/hooks", body=BODY, fallbacks=FALLBACKS)
    receiver.replies = [Reply(503, b"busy"), Reply(429, b"", {"Retry-After": "30"})]
    engine = hooks.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["retried"] == 1
    [row] = hooks.posts()
    assert row.status == "pending"
    assert "HTTP 503 from 127.0.0.1: busy" in row.note
    first_retry = datetime.fromisoformat(row.due_at)
    assert first_retry == START + timedelta(seconds=30)
    hooks.clock.set(first_retry)
    assert engine.dispatch().outcomes["retried"] == 1
    [row] = hooks.posts()
    assert "HTTP 429 from 127.0.0.1 (Retry-After: 30)" in row.note
    hooks.clock.set(datetime.fromisoformat(row.due_at))
    assert engine.dispatch().outcomes["done"] == 1
    assert len(receiver.received) == 3
    assert len({r.headers["idempotency-key"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1
    assert [r.headers["x-clm-attempt"] for r in receiver.received] == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("3600", timedelta(hours=1)),  # seconds, longer than the first backoff (30 s)
        ("Mon, 02 Nov 2026 14:00:00 GMT", timedelta(hours=2)),  # an HTTP date: that moment
        ("Thu, 05 Mar 2026 12:00:00 GMT", timedelta(seconds=30)),  # past: the usual backoff
        ("99999999999999999999", timedelta(days=1)),  # absurd: capped at a day
        ("soon, please", timedelta(seconds=30)),  # unreadable: the usual backoff
    ],
)
def test_a_retry_after_longer_than_the_backoff_is_honoured(hooks, receiver, header, wait):
    hooks.settings(allowed_networks=["127.0.0.0/8"])
    hooks.rule(url=f"{receiver.url}/hooks", body=BODY, fallbacks=FALLBACKS)
    receiver.replies = [Reply(429, b"slow down", {"Retry-After": header})]
    engine = hooks.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["retried"] == 1
    [row] = hooks.posts()
    assert row.status == "pending"
    assert f"(Retry-After: {header})" in row.note
    due = datetime.fromisoformat(row.due_at)
    assert due == START + wait
    hooks.clock.set(due - timedelta(seconds=1))
    assert not engine.dispatch().outcomes  # not before the time the endpoint gave
    hooks.clock.set(due)
    assert engine.dispatch().outcomes["done"] == 1
    assert len(receiver.received) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_other_4xx_fail_at_once_and_are_not_retried(hooks, receiver, status):
    hooks.settings(allowed_networks=["127.0.0.1/32"])
    hooks.rule(url=f"{receiver.url}/gone", body=BODY, fallbacks=FALLBACKS)
    receiver.default = Reply(status, b"no such hook")
    engine = hooks.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["failed"] == 1
    [row] = hooks.posts()
    assert row.status == "failed"
    assert row.note == f"HTTP {status} from 127.0.0.1, not retried: no such hook"
    hooks.clock.advance(timedelta(days=2))
    assert engine.dispatch().total == 0
    assert len(receiver.received) == 1


def test_a_server_that_keeps_failing_is_dead_lettered_after_the_engines_attempts(hooks, receiver):
    hooks.settings(allowed_networks=["127.0.0.1/32"])
    hooks.rule(url=f"{receiver.url}/hooks", body=BODY, fallbacks=FALLBACKS)
    receiver.default = Reply(500, b"")
    engine = hooks.open()
    engine.ingest(signup())
    for _ in range(10):
        engine.dispatch()
        hooks.clock.advance(timedelta(hours=7))
    [row] = hooks.posts()
    assert row.status == "dead"
    assert row.note.startswith("failed 5 times; last: TransientFailure: HTTP 500 from 127.0.0.1")
    assert len(receiver.received) == 5


def test_a_timeout_is_retried(hooks, receiver):
    hooks.settings(allowed_networks=["127.0.0.1/32"], timeout=0.3)
    hooks.rule(url=f"{receiver.url}/slow", body=BODY, fallbacks=FALLBACKS)
    receiver.replies = [Reply(200, b"", delay=1.0)]
    engine = hooks.open()
    engine.ingest(signup())
    began = time.monotonic()
    assert engine.dispatch().outcomes["retried"] == 1
    assert time.monotonic() - began < 0.9
    [row] = hooks.posts()
    assert "timed out after 0.3 s" in row.note


def test_redirects_are_refused_unless_allowed_and_then_checked_like_the_first_hop(hooks, receiver):
    hooks.settings(allowed_networks=["127.0.0.1/32"])
    hooks.rule(url=f"{receiver.url}/old", body=BODY, fallbacks=FALLBACKS)
    receiver.replies = [Reply(307, b"", {"Location": "/new"})]
    engine = hooks.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["failed"] == 1
    [row] = hooks.posts()
    assert "307 redirect to " in row.note and "not followed" in row.note
    assert len(receiver.received) == 1


def test_a_followed_redirect_to_a_private_address_is_refused(hooks, receiver):
    hooks.settings(allowed_networks=["127.0.0.1/32"], follow_redirects=True)
    hooks.rule(url=f"{receiver.url}/old", body=BODY, fallbacks=FALLBACKS)
    receiver.replies = [
        Reply(308, b"", {"Location": "/new"}),
        Reply(307, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}),
    ]
    engine = hooks.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["failed"] == 1
    [row] = hooks.posts()
    assert "resolves to 169.254.169.254, a link-local address: refused" in row.note
    assert [r.path for r in receiver.received] == ["/old", "/new"]


def test_a_named_endpoint_takes_its_url_secret_and_secret_headers_from_settings(
    hooks, receiver, monkeypatch
):
    monkeypatch.setenv("CRM_HOOK_SECRET", "the-crm-endpoint-secret-value")
    monkeypatch.setenv("CRM_TOKEN", "Bearer t0k3n")
    hooks.settings(
        allowed_networks=["127.0.0.1/32"],
        endpoints={
            "crm": {
                "url": f"{receiver.url}/tasks",
                "secret_env": "CRM_HOOK_SECRET",
                "headers": {"X-Source": "clm"},
                "secret_headers": {"Authorization": "CRM_TOKEN"},
            }
        },
    )
    hooks.rule(endpoint="crm", body={"task": "call {{ contact_id }}"})
    engine = hooks.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["done"] == 1
    [request] = receiver.received
    assert request.headers["authorization"] == "Bearer t0k3n"
    assert request.headers["x-source"] == "clm"
    assert signing.verify(
        [b"the-crm-endpoint-secret-value"],
        timestamp=request.headers["x-clm-timestamp"],
        header=request.headers["x-clm-signature"],
        body=request.body,
        now=START.timestamp(),
    )


def test_without_a_secret_nothing_is_sent_and_the_failure_says_what_to_set(
    hooks, receiver, monkeypatch
):
    monkeypatch.delenv("CLM_WEBHOOK_SECRET")
    hooks.settings(allowed_networks=["127.0.0.1/32"])
    hooks.rule(url=f"{receiver.url}/hooks", body=BODY, fallbacks=FALLBACKS)
    engine = hooks.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["failed"] == 1
    assert "set $CLM_WEBHOOK_SECRET" in hooks.posts()[0].note
    assert receiver.received == []


@pytest.mark.parametrize(
    ("with_", "expected"),
    [
        ({"url": "https://h.example.com/x", "body": {"n": ["{{ data.x.y }}"]}}, "body /n/0: "),
        (
            {"url": "https://h.example.com/x", "body": {"big": "{{ 'x' * 100000000 }}"}},
            "over the limit of 262,144 characters of output",
        ),
        ({"url": "https://h.example.com/x", "body": {"a": "{% if %}"}}, "template syntax error"),
        ({"body": {}}, "give either 'endpoint' (named in the webhook settings) or 'url'"),
        ({"url": "ftp://h.example.com/x", "body": {}}, "is not an absolute http(s) URL"),
        ({"url": "https://u:p@h.example.com/x", "body": {}}, "must not carry credentials"),
        (
            {"url": "https://h.example.com/x", "body": {}, "headers": {"Authorization": "x"}},
            "carries a credential",
        ),
    ],
)
def test_clm_validate_names_the_rule_and_what_is_wrong(hooks, with_, expected):
    from click.testing import CliRunner

    from clm_engine.cli import cli

    hooks.rule(**with_)
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["validate", str(hooks.rules)])
    assert time.perf_counter() - started < 3
    assert result.exit_code != 0, result.output
    assert "hooks.json" in result.output and "/rules/0/then/0/with" in result.output
    assert expected in result.output, result.output


def test_an_unknown_endpoint_is_reported_with_a_suggestion(hooks):
    from click.testing import CliRunner

    from clm_engine.cli import cli

    hooks.settings(endpoints={"crm": {"url": "https://crm.example.com/tasks"}})
    hooks.rule(endpoint="cmr", body={})
    result = CliRunner().invoke(cli, ["validate", str(hooks.rules)])
    assert result.exit_code != 0
    assert "no webhook endpoint 'cmr' in the settings" in result.output
    assert "crm" in result.output


def test_a_dry_run_renders_and_counts_but_sends_nothing(hooks, receiver):
    hooks.settings(allowed_networks=["127.0.0.1/32"])
    hooks.rule(url=f"{receiver.url}/hooks", body=BODY, fallbacks=FALLBACKS)
    engine = Engine(hooks.root / "clm.db", clock=hooks.clock, dry_run_external=True)
    hooks.engine = engine
    engine.load_rulesets([hooks.rules])
    engine.ingest(signup())
    assert engine.dispatch().outcomes["simulated"] == 1
    assert receiver.received == []
    [sent] = hooks.events("webhook.sent")
    assert sent.properties["simulated"] is True
    rows = engine.store.tables["channel_messages"].rows({"contact_id": "c1"})
    assert [(r["channel"], r["category"]) for r in rows] == [("webhook", "operational")]
