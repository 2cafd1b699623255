"""The abandoned-cart example: a delayed email whose ``unless`` is judged when it falls due."""

from __future__ import annotations

import shutil

import pytest
from test_sequences import run_until

from clm_engine.explain import explain
from conftest import EXAMPLES, signup


@pytest.fixture
def carts(mail):
    shutil.copy(EXAMPLES / "abandoned-cart.json", mail.rules / "abandoned-cart.json")
    return mail


def cart(contact_id: str, at: str, cart_id: str = "k1", n: int = 2) -> dict:
    items = [{"name": "Smart Kettle", "quantity": 1}, {"name": "Mug", "quantity": n - 1}]
    return {
        "contact_id": contact_id,
        "type": "cart.updated",
        "occurred_at": at,
        "properties": {
            "cart_id": cart_id,
            "items": items[:n],
            "items_count": n,
            "cart_url": f"https://shop.example/cart/{cart_id}",
        },
    }


def test_the_reminder_goes_4_hours_later_with_the_cart_unless_a_purchase_came(carts):
    engine = carts.open()
    engine.ingest_many([signup("c1"), signup("c2"), signup("c3")])
    engine.ingest_many(
        [
            cart("c1", "2026-11-02T13:00:00Z"),
            cart("c2", "2026-11-02T13:00:00Z", cart_id="k2"),
            # c3 changes the cart twice: only the later change's reminder goes.
            cart("c3", "2026-11-02T13:00:00Z", cart_id="k3"),
            cart("c3", "2026-11-02T14:00:00Z", cart_id="k3", n=1),
        ]
    )
    run_until(carts, "2026-11-02T16:00:00+00:00")
    engine.ingest(  # c2 buys 3 hours after the cart event, before the reminder is due
        {
            "contact_id": "c2",
            "type": "purchase",
            "occurred_at": "2026-11-02T16:00:00Z",
            "properties": {"amount": 49},
        }
    )
    run_until(carts, "2026-11-03T00:00:00+00:00")
    reminders = {
        r.contact_id: (r.status, r.note)
        for c in ("c1", "c2", "c3")
        for r in engine.store.actions_for(c)
        if r.rule == "cart-reminder"
    }
    assert reminders["c1"][0] == "done"
    assert reminders["c2"] == (
        "skipped",
        "skipped at 2026-11-02 17:00Z: events.count(purchase, within PT4H) gt 0 or "
        "events.count(cart.updated, within PT4H) gt 1",
    )
    c3 = [r for r in engine.store.actions_for("c3") if r.rule == "cart-reminder"]
    assert sorted(r.status for r in c3) == ["done", "skipped"]
    # The cart's contents and link reached the email (from the event), and the rule's data.
    [message] = [p.read_text() for p in carts.files() if "c1@example.com" in p.read_text()]
    assert "https://shop.example/cart/k1" in message
    assert "- Smart Kettle x 1" in message and "CART10" in message
    # Explain shows the skip, with what the condition saw when it was re-checked.
    rules = explain(engine, "c2", rule="cart-reminder")["rules"]
    [skip] = [d for d in rules[0]["decisions"] if d["decision"] == "skipped"]
    assert skip["detail"].startswith("skipped at 2026-11-02 17:00Z")
    assert skip["conditions"]["result"] is True


def test_unless_needs_after_and_a_window_in_if_with_a_delay_is_a_warning(carts):
    from clm_engine.registry import Registry
    from clm_engine.rulesets import validate_all

    carts.ruleset(
        {
            "id": "no-delay",
            "when": {"event": "cart.updated"},
            "then": [
                {
                    "action": "tag.add",
                    "with": {"tag": "x"},
                    "unless": {"fact": "contact.tags", "op": "contains", "value": "y"},
                }
            ],
        },
        {
            "id": "judged-at-event",
            "when": {"event": "cart.updated"},
            "if": {
                "fact": "events.count",
                "args": {"type": "purchase", "within": "PT4H"},
                "op": "eq",
                "value": 0,
            },
            "then": [{"action": "tag.add", "with": {"tag": "x"}, "after": "PT4H"}],
        },
    )
    result = validate_all([carts.rules / "mail.json"], registry=Registry())
    [problem] = result.problems
    assert problem.pointer == "/rules/0/then/0/unless"
    assert "no 'after'" in problem.message
    [warning] = result.warnings
    assert warning.pointer == "/rules/1/if"
    assert "judged when its cart.updated event arrives" in warning.message


def test_explain_text_keeps_regex_brackets():
    from rich.console import Console
    from rich.tree import Tree

    from clm_engine.cli.rules import _conditions

    tree = Tree("x")
    leaf = {"result": False, "fact": "contact.email", "op": "matches", "value": "^[a-z0-9.]+@"}
    _conditions(tree, {**leaf, "actual": "a@b"})
    console = Console(width=200, record=True)
    console.print(tree)
    assert '"^[a-z0-9.]+@"' in console.export_text()
