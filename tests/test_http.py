"""``clm serve``'s HTTP API, through the ASGI app (the real-server tests are in
test_http_server.py): ingestion per event, limits, bad input, keys and scopes, signed
webhooks, reads, admin."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from clm_engine.http.auth import sign
from tests.helpers import event
from tests.http_helpers import bearer, served

ROOT = Path(__file__).resolve().parent.parent
ROOT_RULESETS = [ROOT / "rulesets"]
ROOT_RULESETS_DIR = ROOT / "tests" / "rulesets"


def evt(n: int, contact: str = "c1", type_: str = "signup", **properties):
    return {"id": f"e{n}", **event(contact, type_, f"2026-01-{n % 28 + 1:02d}", **properties)}


@pytest.fixture
def client(db_path):
    with served(db_path) as client:
        yield client


def ingest_headers(client):
    return bearer(client.keys["ingest"])


def test_health_needs_no_key_and_everything_else_does(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    for method, path in [
        ("post", "/v1/events"),
        ("post", "/v1/track"),
        ("post", "/v1/batch"),
        ("get", "/v1/contacts/c1"),
        ("get", "/v1/contacts/c1/explain"),
        ("get", "/metrics"),
        ("post", "/v1/admin/reload"),
        ("get", "/v1/admin/health"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 401, path
        assert response.json() == {"error": "unauthorized"}  # no detail


def test_wrong_missing_and_revoked_keys_are_401_wrong_scope_is_403(client, db_path, run):
    body = [evt(1)]
    assert client.post("/v1/events", json=body, headers=bearer("nope")).status_code == 401
    assert client.post("/v1/events", json=body, headers=bearer("clm_abc_def")).status_code == 401
    token = client.keys["ingest"]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.post("/v1/events", json=body, headers=bearer(tampered)).status_code == 401
    read = client.get("/v1/contacts/c1", headers=bearer(token))
    assert read.status_code == 403
    assert "scope" in read.json()["error"]
    assert (
        client.post("/v1/events", json=body, headers=bearer(client.keys["read"])).status_code == 403
    )
    assert client.post("/v1/admin/reload", headers=bearer(client.keys["read"])).status_code == 403
    # admin may do everything
    assert (
        client.post("/v1/events", json=body, headers=bearer(client.keys["admin"])).status_code
        == 200
    )
    key_id = token.split("_")[1]
    assert run("keys", "revoke", key_id, "--db", str(db_path)).exit_code == 0
    assert client.post("/v1/events", json=body, headers=bearer(token)).status_code == 401


def test_keys_commands_create_list_revoke_and_store_only_a_hash(run, db_path):
    created = run(
        "keys", "create", "--scope", "ingest", "--name", "crm", "--db", str(db_path), "--json"
    )
    assert created.exit_code == 0, created.output
    key = json.loads(created.output)
    assert key["key"].startswith(f"clm_{key['id']}_")
    listed = json.loads(run("keys", "list", "--db", str(db_path), "--json").output)
    assert listed == [
        {
            "id": key["id"],
            "name": "crm",
            "scope": "ingest",
            "created_at": listed[0]["created_at"],
            "revoked_at": None,
        }
    ]
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert key["key"].encode() not in raw
    assert key["key"].split("_", 2)[2].encode() not in raw
    assert run("keys", "revoke", key["id"], "--db", str(db_path)).exit_code == 0
    again = run("keys", "revoke", key["id"], "--db", str(db_path))
    assert again.exit_code == 1
    assert "no active key" in again.output
    assert json.loads(run("keys", "list", "--db", str(db_path), "--json").output)[0]["revoked_at"]
    assert run("keys", "create", "--scope", "root", "--db", str(db_path)).exit_code == 2


def test_each_event_is_answered_ingested_duplicate_or_rejected_with_position(client):
    headers = ingest_headers(client)
    body = [evt(1), {"contact_id": "c1"}, evt(1), "text", evt(2, amount=3)]
    response = client.post("/v1/events", json=body, headers=headers)
    assert response.status_code == 200
    answer = response.json()
    assert [r["status"] for r in answer["results"]] == [
        "ingested",
        "rejected",
        "duplicate",
        "rejected",
        "ingested",
    ]
    assert [r["position"] for r in answer["results"]] == [0, 1, 2, 3, 4]
    assert "type: is required" in answer["results"][1]["reason"]
    assert "expected a JSON object, got a string" in answer["results"][3]["reason"]
    assert (answer["ingested"], answer["duplicates"], answer["rejected"]) == (2, 1, 2)
    # A resend is all duplicates: a client may retry freely.
    again = client.post("/v1/events", json=[evt(1), evt(2, amount=3)], headers=headers).json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    # One event alone: an object, not an array.
    single = client.post("/v1/events", json=evt(3), headers=headers)
    assert single.status_code == 200
    assert single.json()["results"] == [
        {"position": 0, "id": "e3", "status": "ingested", "reason": None}
    ]


def test_a_request_with_nothing_acceptable_is_answered_with_the_reasons(client):
    response = client.post(
        "/v1/events", json={"contact_id": "c1", "type": "x"}, headers=ingest_headers(client)
    )
    assert response.status_code == 200
    assert "occurred_at: is required" in response.json()["results"][0]["reason"]


def test_a_reducer_that_refuses_an_event_answers_failed_with_its_reason(client):
    response = client.post(
        "/v1/events",
        json=[evt(1, type_="purchase", amount="lots"), evt(2)],
        headers=ingest_headers(client),
    )
    results = response.json()["results"]
    assert results[0]["status"] == "failed"
    assert "amount" in results[0]["reason"]
    assert results[1]["status"] == "ingested"


def test_ndjson_bodies_reject_a_bad_line_at_its_position(client):
    lines = [json.dumps(evt(1)), "", "{not json", json.dumps(evt(2))]
    response = client.post(
        "/v1/events",
        content="\n".join(lines).encode(),
        headers={**ingest_headers(client), "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["ingested", "rejected", "ingested"]
    assert results[1]["reason"].startswith("line 3 is not valid JSON")


def test_limits_answer_413_with_a_clear_message(db_path):
    with served(db_path, max_body_bytes=2048, max_batch=3) as client:
        headers = ingest_headers(client)
        big = client.post("/v1/events", json=[evt(1, note="x" * 4000)], headers=headers)
        assert big.status_code == 413
        assert "larger than 2,048 bytes" in big.json()["error"]
        many = client.post("/v1/events", json=[evt(n) for n in range(4)], headers=headers)
        assert many.status_code == 413
        assert "the limit is 3" in many.json()["error"]

        # Without Content-Length (a chunked upload), the limit holds while reading.
        def chunks():
            yield b"[" + b" " * 1500
            yield b" " * 1500 + b"]"

        chunked = client.post("/v1/events", content=chunks(), headers=headers)
        assert chunked.status_code == 413


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"contact_id": ', "application/json", "not valid JSON"),
        (b"", "application/json", "empty"),
        (b'{"id": "\xff\xfe"}', "application/json", "not valid UTF-8"),
        (b'{"id": "a\x00b"}', "application/json", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "nested too deeply"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "application/json", "not valid JSON"),
        (b"\x00\x00\x00", "application/json", "not valid JSON"),
    ],
    ids=["truncated", "empty", "utf8", "nul-in-string", "deep", "huge-int", "nul-bytes"],
)
def test_bad_bodies_are_4xx_with_a_reason_never_500(db_path, body, content_type, reason):
    with served(db_path, max_body_bytes=400_000) as client:
        response = client.post(
            "/v1/events",
            content=body,
            headers={**ingest_headers(client), "Content-Type": content_type},
        )
    assert 400 <= response.status_code < 500, response.text
    assert reason in response.json()["error"]


@pytest.mark.parametrize(
    "item",
    [
        {"id": "a\u0000b", "contact_id": "c", "type": "x", "occurred_at": "2026-01-01T00:00:00Z"},
        {"contact_id": 7, "type": "x", "occurred_at": "2026-01-01T00:00:00Z"},
        {"contact_id": "c", "type": "x", "occurred_at": "yesterday"},
        {"contact_id": "c", "type": "x", "occurred_at": "2026-01-01T00:00:00Z", "properties": []},
        "infinity",
        {
            "contact_id": "c",
            "type": "x",
            "occurred_at": "2026-01-01T00:00:00Z",
            "properties": json.loads('{"a":' * 60 + "1" + "}" * 60),
        },
        [],
        None,
    ],
    ids=[
        "nul-id",
        "int-contact",
        "bad-time",
        "list-properties",
        "infinity",
        "deep-properties",
        "array",
        "null",
    ],
)
def test_wrong_types_and_values_are_rejected_with_a_reason(client, item):
    if item == "infinity":  # JSON has no infinity; 1e999 becomes one in Python's parser
        body = (
            '[{"contact_id": "c", "type": "x", "occurred_at": "2026-01-01T00:00:00Z",'
            ' "properties": {"n": 1e999}}]'
        )
    else:
        body = json.dumps([item])
    response = client.post(
        "/v1/events",
        content=body,
        headers={**ingest_headers(client), "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    result = response.json()["results"][0]
    assert result["status"] == "rejected"
    assert result["reason"]


def test_signed_webhooks_are_an_alternative_to_a_key_for_ingest(db_path):
    secret = "whsec-test"
    with served(db_path, webhook_secrets=[secret]) as client:
        body = json.dumps([evt(1)]).encode()
        now = int(time.time())
        good = {"X-Clm-Timestamp": str(now), "X-Clm-Signature": sign(secret.encode(), now, body)}
        response = client.post("/v1/events", content=body, headers=good)
        assert response.status_code == 200
        assert response.json()["ingested"] == 1
        # Replayed within the window: accepted, and a duplicate.
        assert client.post("/v1/events", content=body, headers=good).json()["duplicates"] == 1
        # Outside the replay window, tampered, or signed with another secret: 401, no detail.
        old = now - 301
        stale = {"X-Clm-Timestamp": str(old), "X-Clm-Signature": sign(secret.encode(), old, body)}
        tampered = body.replace(b"e1", b"e9")
        other = {"X-Clm-Timestamp": str(now), "X-Clm-Signature": sign(b"other", now, body)}
        for content, headers in [
            (body, stale),
            (tampered, good),
            (body, other),
            (body, {**good, "X-Clm-Timestamp": "soon"}),
        ]:
            refused = client.post("/v1/events", content=content, headers=headers)
            assert refused.status_code == 401
            assert refused.json() == {"error": "unauthorized"}
        # A signature is for ingestion only.
        assert client.get("/v1/contacts/c1", headers=good).status_code == 401


def test_read_endpoints_show_state_stages_events_explain_and_outbox(db_path, example_plugins):
    with served(db_path, rulesets=ROOT_RULESETS) as client:
        client.post(
            "/v1/events",
            json=[
                evt(1, email="ada@example.com", consent={"email": True}),
                evt(2, type_="purchase", amount=120.0),
            ],
            headers=ingest_headers(client),
        )
        read = bearer(client.keys["read"])
        contact = client.get("/v1/contacts/c1", headers=read).json()
        assert contact["email"] == "ada@example.com"
        assert contact["metrics"]["orders_count"] == 1
        stages = client.get("/v1/contacts/c1/stages", headers=read).json()
        assert stages[0]["to_stage"] == "awareness"
        assert stages[-1]["to_stage"] == contact["stage"]
        events = client.get("/v1/contacts/c1/events", headers=read).json()
        assert {"e1", "e2"} <= {e["id"] for e in events}
        assert len(client.get("/v1/contacts/c1/events?limit=1", headers=read).json()) == 1
        explained = client.get("/v1/contacts/c1/explain", headers=read).json()
        assert explained["contact"] == "c1"
        assert {r["ruleset"] for r in explained["rules"]} >= {"lifecycle-stages"}
        one = client.get("/v1/contacts/c1/explain?rule=onboarding-start", headers=read).json()
        assert {r["rule"] for r in one["rules"]} == {"onboarding-start"}
        outbox = client.get("/v1/contacts/c1/outbox", headers=read).json()
        assert all({"key", "action", "status"} <= set(row) for row in outbox)
        assert client.get("/v1/contacts/nobody", headers=read).status_code == 404
        assert client.get("/v1/contacts/nobody/outbox", headers=read).status_code == 404
        assert client.get("/v1/contacts/c1/events?limit=0", headers=read).status_code == 422


def test_contact_ids_with_slashes_reach_their_contact(client):
    client.post("/v1/events", json=[evt(1, contact="org/42")], headers=ingest_headers(client))
    read = bearer(client.keys["read"])
    assert client.get("/v1/contacts/org/42", headers=read).json()["id"] == "org/42"
    assert client.get("/v1/contacts/org/42/stages", headers=read).json()[0]["to_stage"]


def test_an_encoded_slash_keeps_an_id_that_ends_like_a_route_whole(client):
    """``x/events`` is a contact of its own when the slash is sent encoded: the path the
    server decodes would read as contact ``x``'s events."""
    ingest = ingest_headers(client)
    client.post(
        "/v1/events", json=[evt(1, contact="x/events"), evt(2, contact="x")], headers=ingest
    )
    read = bearer(client.keys["read"])
    assert client.get("/v1/contacts/x%2Fevents", headers=read).json()["id"] == "x/events"
    assert client.get("/v1/contacts/x%2fevents", headers=read).json()["id"] == "x/events"
    own = client.get("/v1/contacts/x%2Fevents/events", headers=read).json()
    assert [e["contact_id"] for e in own] == ["x/events"]
    assert client.get("/v1/contacts/x%2Fevents/outbox", headers=read).status_code == 200
    assert [e["contact_id"] for e in client.get("/v1/contacts/x/events", headers=read).json()] == [
        "x"
    ]  # unencoded, the suffix is the route, as before
    assert client.get("/v1/contacts/no%2Fone", headers=read).status_code == 404
    assert client.get("/v1/contacts/%FF%2F", headers=read).status_code == 404  # not UTF-8


def test_admin_reloads_rulesets_and_keeps_the_last_valid_ones(db_path, tmp_path):
    folder = tmp_path / "rules"
    folder.mkdir()
    valid = (ROOT_RULESETS_DIR / "valid.json").read_text()
    (folder / "valid.json").write_text(valid)
    with served(db_path, rulesets=[folder]) as client:
        admin = bearer(client.keys["admin"])
        health = client.get("/v1/admin/health", headers=admin).json()
        before = health["rulesets"]
        (folder / "broken.json").write_text("{")
        answer = client.post("/v1/admin/reload", headers=admin).json()
        assert answer["loaded"] is False
        assert "kept the last valid rulesets" in answer["message"]
        assert client.get("/v1/admin/health", headers=admin).json()["rulesets"] == before
        (folder / "broken.json").unlink()
        assert client.post("/v1/admin/reload", headers=admin).json()["loaded"] is True


def test_metrics_count_events_by_outcome_and_request_latency(client):
    client.post("/v1/events", json=[evt(1), evt(1), {"x": 1}], headers=ingest_headers(client))
    text = client.get("/metrics", headers=bearer(client.keys["read"])).text
    assert 'clm_events_total{outcome="ingested"} 1.0' in text
    assert 'clm_events_total{outcome="duplicate"} 1.0' in text
    assert 'clm_events_total{outcome="rejected"} 1.0' in text
    assert (
        'clm_http_request_duration_seconds_count{method="POST",route="/v1/events",status="200"}'
        in text
    )
    assert 'clm_actions_total{outcome="enqueued"}' in text


def test_access_log_is_one_json_line_per_request(client, caplog):
    with caplog.at_level("INFO", logger="clm.http.access"):
        client.get("/healthz")
    line = json.loads(caplog.records[-1].getMessage())
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert line["route"] == "/healthz"
    assert line["ms"] >= 0


def test_with_a_pump_interval_the_writer_runs_due_work_when_idle(db_path, monkeypatch):
    from clm_engine import Engine

    ticks: list[int] = []
    real_tick = Engine.tick

    def counting_tick(self, **options):
        ticks.append(1)
        return real_tick(self, **options)

    monkeypatch.setattr(Engine, "tick", counting_tick)
    with served(db_path, pump_interval=0.05) as client:
        deadline = time.monotonic() + 10
        while len(ticks) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # real time: the pump runs on the system clock
        assert len(ticks) >= 3
        assert (
            client.post("/v1/events", json=[evt(1)], headers=ingest_headers(client)).json()[
                "ingested"
            ]
            == 1
        )
