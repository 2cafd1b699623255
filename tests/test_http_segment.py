"""Segment's HTTP tracking spec on ``clm serve``: the spec's own example payloads, write-key
authentication, messageId idempotency, and the mapping to the engine's events
(docs/http.md, "Segment")."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from clm_engine.builtins.segment import event_type_for, occurred_at
from tests.http_helpers import bearer, served

# The example payloads of Segment's HTTP Tracking API documentation (identify, track, page,
# screen, group, alias, batch), in their shape.
IDENTIFY = {
    "userId": "019mr8mf4r",
    "traits": {"email": "pgibbons@example.com", "name": "Peter Gibbons", "industry": "Technology"},
    "context": {"ip": "24.5.68.47"},
    "timestamp": "2012-12-02T00:30:08.276Z",
}
TRACK = {
    "userId": "019mr8mf4r",
    "event": "Item Purchased",
    "properties": {"name": "Leap to Conclusions Mat", "revenue": 14.99},
    "context": {"ip": "24.5.68.47"},
    "timestamp": "2012-12-02T00:30:12.984Z",
}
PAGE = {
    "userId": "019mr8mf4r",
    "name": "Tracking HTTP API",
    "timestamp": "2012-12-02T00:31:29.738Z",
}
SCREEN = {
    "userId": "019mr8mf4r",
    "name": "Tracking HTTP API",
    "timestamp": "2012-12-02T00:31:29.738Z",
}
GROUP = {
    "userId": "019mr8mf4r",
    "groupId": "8e9df332ac",
    "traits": {
        "name": "Initech",
        "industry": "Technology",
        "employees": 329,
        "plan": "enterprise",
        "total billed": 830,
    },
}
ALIAS = {"previousId": "39239-239239-239239-23923", "userId": "019mr8mf4r"}
BATCH = {
    "batch": [
        {
            "type": "identify",
            "userId": "019mr8mf4r",
            "traits": {
                "email": "pgibbons@example.com",
                "name": "Peter Gibbons",
                "industry": "Technology",
            },
            "timestamp": "2012-12-02T00:30:08.276Z",
        },
        {
            "type": "track",
            "userId": "019mr8mf4r",
            "event": "Song Played",
            "properties": {"name": "Fallin for You", "artist": "Dierks Bentley"},
            "timestamp": "2012-12-02T00:30:12.984Z",
        },
        {
            "type": "identify",
            "userId": "971mj8mk7p",
            "traits": {
                "email": "npolk@example.com",
                "name": "Samir Nagheenanajar",
                "industry": "Technology",
            },
            "timestamp": "2012-12-02T00:30:08.276Z",
        },
        {
            "type": "track",
            "userId": "971mj8mk7p",
            "event": "Song Played",
            "properties": {"name": "Get Right", "artist": "Jennifer Lopez"},
            "timestamp": "2012-12-02T00:30:12.984Z",
        },
    ],
    "context": {"device": {"type": "phone", "name": "Apple iPhone 6"}},
}


def write_key(token: str) -> dict[str, str]:
    """Segment's write-key authentication: HTTP Basic, the key as user name, no password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}


@pytest.fixture
def client(db_path):
    with served(db_path) as client:
        yield client


def events_of(client, contact):
    return client.get(f"/v1/contacts/{contact}/events", headers=bearer(client.keys["read"])).json()


def contact_of(client, contact):
    return client.get(f"/v1/contacts/{contact}", headers=bearer(client.keys["read"])).json()


def test_the_specs_examples_are_accepted_and_mapped(client):
    key = write_key(client.keys["ingest"])
    for path, body in [
        ("identify", IDENTIFY),
        ("track", TRACK),
        ("page", PAGE),
        ("screen", SCREEN),
        ("group", GROUP),
    ]:
        response = client.post(f"/v1/{path}", json=body, headers=key)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["success"] is True
        assert response.json()["results"][0]["status"] == "ingested", path
    contact = contact_of(client, "019mr8mf4r")
    assert contact["email"] == "pgibbons@example.com"
    assert contact["attributes"] == {"name": "Peter Gibbons", "industry": "Technology"}
    by_type = {e["type"]: e for e in events_of(client, "019mr8mf4r")}
    assert set(by_type) == {
        "contact.updated",
        "item_purchased",
        "page.viewed",
        "screen.viewed",
        "group.joined",
    }
    assert by_type["item_purchased"]["properties"] == TRACK["properties"]
    assert by_type["item_purchased"]["occurred_at"] == "2012-12-02T00:30:12.984000Z"
    assert by_type["page.viewed"]["properties"] == {"name": "Tracking HTTP API"}
    assert by_type["group.joined"]["properties"] == {
        "group_id": "8e9df332ac",
        "traits": GROUP["traits"],
    }


def test_the_specs_batch_example_lands_per_message(client):
    response = client.post("/v1/batch", json=BATCH, headers=write_key(client.keys["ingest"]))
    assert response.status_code == 200
    answer = response.json()
    assert answer["ingested"] == 4
    assert [r["position"] for r in answer["results"]] == [0, 1, 2, 3]
    assert contact_of(client, "971mj8mk7p")["email"] == "npolk@example.com"
    assert [e["type"] for e in events_of(client, "971mj8mk7p")] == [
        "song_played",
        "contact.updated",
    ]


def test_alias_is_refused_with_its_reason_alone_and_in_a_batch(client):
    key = write_key(client.keys["ingest"])
    alone = client.post("/v1/alias", json=ALIAS, headers=key)
    assert alone.status_code == 200  # like Segment: 200 for every message understood
    assert alone.json()["results"][0]["status"] == "rejected"
    assert "does not merge contacts" in alone.json()["results"][0]["reason"]
    batch = {"batch": [{**ALIAS, "type": "alias"}, {**TRACK, "type": "track"}]}
    answer = client.post("/v1/batch", json=batch, headers=key).json()
    assert [r["status"] for r in answer["results"]] == ["rejected", "ingested"]
    assert "does not merge contacts" in answer["results"][0]["reason"]


def test_message_id_is_the_idempotency_key(client):
    key = write_key(client.keys["ingest"])
    body = {**TRACK, "messageId": "022bb90c-bbac-11e4-8dfc-aa07a5b093db"}
    assert client.post("/v1/track", json=body, headers=key).json()["results"][0] == {
        "position": 0,
        "id": "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
        "status": "ingested",
        "reason": None,
    }
    again = client.post("/v1/track", json=body, headers=key).json()
    assert again["results"][0]["status"] == "duplicate"
    # Without a messageId, the same message is still one event (its id is derived).
    assert client.post("/v1/track", json=TRACK, headers=key).json()["ingested"] == 1
    assert client.post("/v1/track", json=TRACK, headers=key).json()["duplicates"] == 1


def test_write_key_in_basic_auth_or_in_the_body_and_nothing_else(client):
    token = client.keys["ingest"]
    assert client.post("/v1/track", json={**TRACK, "writeKey": token}).status_code == 200
    assert client.post("/v1/track", json=TRACK, headers=bearer(token)).status_code == 200
    for headers, body in [
        (write_key("wrong"), TRACK),
        ({}, TRACK),
        ({}, {**TRACK, "writeKey": "wrong"}),
        ({"Authorization": "Basic !!!"}, TRACK),
    ]:
        response = client.post("/v1/track", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized"}
    assert (
        client.post("/v1/track", json=TRACK, headers=write_key(client.keys["read"])).status_code
        == 403
    )


def test_messages_without_an_id_or_a_name_are_refused_with_the_reason(client):
    key = write_key(client.keys["ingest"])
    batch = {
        "batch": [
            {"type": "track", "event": "Song Played"},
            {"type": "track", "userId": "u1"},
            {"type": "track", "userId": "u1", "event": "x", "timestamp": "last tuesday"},
            {"type": "fly", "userId": "u1"},
            {"type": "track", "userId": "u1", "event": "x", "properties": [1]},
            "not a message",
            {"type": "track", "anonymousId": "507f191e81", "event": "Song Played"},
        ]
    }
    results = client.post("/v1/batch", json=batch, headers=key).json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * 6 + ["ingested"]
    reasons = [r["reason"] for r in results]
    assert "userId or an anonymousId" in reasons[0]
    assert "needs an event name" in reasons[1]
    assert "'timestamp' is not an ISO 8601 date-time" in reasons[2]
    assert "unknown message type 'fly'" in reasons[3]
    assert "'properties' must be an object" in reasons[4]
    assert "must be a JSON object" in reasons[5]
    assert events_of(client, "anonymous:507f191e81")[0]["type"] == "song_played"
    assert client.post("/v1/batch", json={"batch": "no"}, headers=key).status_code == 400
    assert client.post("/v1/track", json=[TRACK], headers=key).status_code == 400
    assert client.post("/v1/track", json={**TRACK, "type": "page"}, headers=key).status_code == 400


def test_order_completed_is_a_purchase_with_its_revenue_as_amount(client):
    key = write_key(client.keys["ingest"])
    body = {
        "userId": "u1",
        "event": "Order Completed",
        "timestamp": "2026-01-01T00:00:00Z",
        "properties": {"order_id": "50314b8e", "revenue": 25.0, "currency": "USD"},
    }
    assert client.post("/v1/track", json=body, headers=key).json()["ingested"] == 1
    assert contact_of(client, "u1")["metrics"]["total_spent"] == 25.0


def test_a_batch_past_the_limit_is_413(db_path):
    with served(db_path, max_batch=2) as client:
        body = {"batch": [TRACK, TRACK, TRACK]}
        response = client.post("/v1/batch", json=body, headers=write_key(client.keys["ingest"]))
        assert response.status_code == 413


@pytest.mark.parametrize(
    ("name", "type_"),
    [
        ("Order Completed", "purchase"),
        ("Signed Up", "signup"),
        ("Song Played", "song_played"),
        ("  Email Opened ", "email.opened"),
        ("3D Secure Passed", "event_3d_secure_passed"),
        ("Plan: Upgraded!", "plan:_upgraded"),
        ("Café Visited", "caf_visited"),
        ("Ünïcode", "n_code"),
        ("42", "event_42"),
    ],
)
def test_event_names_become_types(name, type_):
    assert event_type_for(name) == type_


def test_original_timestamp_is_corrected_for_the_senders_clock_as_segment_does():
    received = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    message = {"originalTimestamp": "2026-01-01T11:00:00Z", "sentAt": "2026-01-01T11:00:05Z"}
    assert occurred_at(message, received) == datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    assert occurred_at({"originalTimestamp": "2026-01-01T11:00:00Z"}, received).hour == 11
    assert occurred_at({}, received) == received
    assert occurred_at({"timestamp": "2026-01-01T01:00:00"}, received).tzinfo is not None
