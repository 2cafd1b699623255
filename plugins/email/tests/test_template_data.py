"""`clm validate` warns where a template needs `data` that its senders never pass."""

from __future__ import annotations

import json

from click.testing import CliRunner
from clm_email.template_data import needed_keys
from jinja2 import Environment

from clm_engine.cli import cli


def needs(source: str) -> set[str]:
    return set(needed_keys([("text", Environment().parse(source))]))


def test_only_unguarded_reads_of_data_are_needs():
    assert needs("{{ data.cart_url }} {{ data['total'] }} {{ data.a.b }}") == {
        "cart_url",
        "total",
        "a",
    }
    guarded = (
        "{{ data.x | default('') }} {{ data.get('y') }} {% if data.z %}{{ data.z }}{% endif %}"
        "{{ data.w if data.w else '' }} {% if data.v is defined %}{{ data.v }}{% endif %}"
        "{{ data.u | d('-') | upper }} {{ event.properties.cart_url }} {{ cart_url }}"
    )
    assert needs(guarded) == set()
    # The guard covers only what it tests.
    assert needs("{% if data.z %}{{ data.q }}{% endif %}") == {"q"}
    assert needs("{{ (data.n | upper) | default('') }}") == set()


def write(folder, name: str, document: dict) -> None:
    (folder / name).write_text(json.dumps(document, indent=2))


def test_validate_warns_at_the_rule_and_the_step_that_never_pass_a_needed_key(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", "email")
    write(
        tmp_path,
        "cart-link.json",
        {
            "email_template": "cart-link",
            "subject": "Your cart",
            "text": "Back to it: {{ data.cart_url }} ({{ data.total | default(0) }} items)",
        },
    )
    send = {"action": "email.send", "with": {"template": "cart-link", "data": {"total": 3}}}
    fine = {"action": "email.send", "with": {"template": "cart-link", "data": {"cart_url": "u"}}}
    write(
        tmp_path,
        "carts.json",
        {
            "ruleset": "carts",
            "version": 1,
            "rules": [
                {"id": "remind", "when": {"event": "cart.updated"}, "then": [send]},
                {"id": "remind-well", "when": {"event": "cart.updated"}, "then": [fine]},
            ],
        },
    )
    write(
        tmp_path,
        "drip.json",
        {
            "sequence": "cart-drip",
            "steps": [
                {"id": "one", "template": "cart-link"},
                {"id": "two", "template": "cart-link", "after": "P1D", "data": {"cart_url": "u"}},
            ],
        },
    )
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output  # warnings, not problems
    lines = [line for line in result.output.splitlines() if "warning:" in line]
    assert len(lines) == 2, result.output
    rule, step = sorted(lines)
    assert rule.startswith(f"{tmp_path / 'carts.json'}:")
    assert ": warning: /rules/0/then/0/with: template 'cart-link' reads data.cart_url" in rule
    assert "(it passes total)" in rule
    line = int(rule.split(":")[1])
    assert (tmp_path / "carts.json").read_text().splitlines()[line - 1].strip() == '"with": {'
    assert step.startswith(f"{tmp_path / 'drip.json'}:")
    assert ": warning: /steps/0: template 'cart-link' reads data.cart_url" in step
    assert "(it passes no data)" in step
