"""The ruleset JSON Schema: generated from the pydantic models, shipped as a file.

The schema is ``Ruleset.model_json_schema(by_alias=True)`` plus what people and editors need
that the models cannot say: ``$id``, a title, a description on every key, and two refinements
that model validators enforce (a relative-time trigger has exactly one of ``before`` /
``after``; segment names follow the name pattern). Generating it is the only way to change
it (``python scripts/generate_schema.py``), and a test fails when the shipped file differs
from what the models generate, so the file, the models and the editors cannot disagree.

Validation reads the shipped file (:func:`load_schema`), the same bytes an editor reads.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("ruleset.schema.json")
SCHEMA_ID = "urn:clm-engine:ruleset.schema.json"
SCHEMA_TITLE = "clm-engine ruleset"
META_SCHEMA = "https://json-schema.org/draft/2020-12/schema"

_NAME = "lowercase letters, digits, '_', '.' and '-', starting with a letter or digit"

#: The description of the document and of each definition, by definition name.
DEF_DESCRIPTIONS: dict[str, str] = {
    "Ruleset": (
        "A named, versioned set of rules, as one JSON file. Reference: docs/rulesets.md of "
        "clm-engine. Validate with: clm validate FILE."
    ),
    "Rule": "When something happens (when), and a condition holds (if), do something (then).",
    "EventTrigger": 'Fires for each event of a type: {"event": "purchase", "where": {...}}.',
    "StageTrigger": (
        'Fires when a contact changes stage: {"stage_changed": {"from": "purchase", "to": '
        '"retention"}}.'
    ),
    "StageChange": "Which stage changes fire the rule; leave out from or to to match any.",
    "ScheduleTrigger": (
        'Fires on a cron schedule for every contact: {"schedule": "0 9 * * MON", '
        '"timezone": "UTC"}.'
    ),
    "RelativeTrigger": (
        "Fires once per contact at a time relative to a date fact: "
        '{"before": "contact.attributes.renewal_at", "days": 30}.'
    ),
    "RecurringTrigger": (
        "Fires on every anniversary of a date fact at a time of day, in the contact's "
        'timezone: {"every": "P1Y", "on": "contact.attributes.birthday", "at": "09:00"}.'
    ),
    "All": "True when every condition in the list is true.",
    "AnyOf": "True when at least one condition in the list is true.",
    "Not": "True when the condition inside is false.",
    "Leaf": (
        'One test of a fact: {"fact": "contact.metrics.orders_count", "op": "gte", "value": '
        "2}. Operators are listed in docs/conditions.md."
    ),
    "FactRef": (
        "Compare with another fact instead of a constant: "
        '{"fact": "contact.metrics.first_order_at"}.'
    ),
    "ActionCall": 'One action to run: {"action": "tag.add", "with": {"tag": "vip"}}.',
    "Limit": "How often the rule may fire for one contact.",
    "Experiment": (
        "An A/B split of the rule's contacts into arms by a stable hash of (experiment, "
        "contact), with a conversion goal. Reference: docs/experiments.md."
    ),
    "ExperimentArm": (
        'One arm: {"name": "b", "weight": 45, "with": {"template": "welcome-b"}}; '
        '{"name": "holdout", "weight": 10, "holdout": true} gets no action.'
    ),
    "Goal": (
        'A conversion goal: {"event": "purchase", "within": "P14D", "revenue": "amount"}. '
        "Conversions and revenue after a contact's first exposure are counted per rule."
    ),
    "Duration": 'A length of time: {"days": 30}, {"hours": 12}, {"weeks": 1, "days": 2}.',
}

#: The description of every key, by (definition name, key). A test fails if one is missing.
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("Ruleset", "$schema"): (
        "Where this schema is, so editors validate and autocomplete, e.g. "
        '"../clm_engine/rulesets/ruleset.schema.json". The engine ignores it.'
    ),
    ("Ruleset", "ruleset"): f"The ruleset's name, unique across all loaded files ({_NAME}).",
    ("Ruleset", "version"): (
        "The ruleset's version, an integer from 1. Raise it whenever you change the rules: "
        "traces record it, so 'clm explain' can say which version decided."
    ),
    ("Ruleset", "description"): "What the ruleset is for, for the people who maintain it.",
    ("Ruleset", "stages"): (
        "The lifecycle stages in order, at least two. Every ruleset that lists stages must "
        "list the same ones in the same order. Default: awareness, consideration, purchase, "
        "retention, advocacy."
    ),
    ("Ruleset", "segments"): (
        'Named conditions that rules reuse with {"op": "in_segment", "value": "<name>"}.'
    ),
    ("Ruleset", "trace"): (
        '"matches" (default): record why a rule fired; "all": also record every evaluation '
        "that did not fire (for debugging; stores much more)."
    ),
    ("Ruleset", "rules"): "The rules; each id is unique within the ruleset.",
    ("Rule", "id"): f"The rule's id, unique within the ruleset ({_NAME}).",
    ("Rule", "description"): "What the rule does and why, for people.",
    ("Rule", "when"): (
        "The trigger: an event, a stage change, a cron schedule, a time before/after a "
        "date fact, or every anniversary of a date fact."
    ),
    ("Rule", "if"): "A condition that must hold when the trigger fires; leave out for always.",
    ("Rule", "then"): "The actions to run, in order (at least one).",
    ("Rule", "limit"): "How often the rule may fire for one contact; leave out for no limit.",
    ("Rule", "priority"): (
        "When several rules fire on the same occurrence, higher priority is settled first and "
        "its actions are queued first (default 0)."
    ),
    ("Rule", "enabled"): "false: the rule is validated but never fires (default true).",
    ("Rule", "goal"): (
        "The conversion goal of the rule: clm report attributes the goal events that follow a "
        "contact's first fire of the rule (and their revenue) to it."
    ),
    ("Goal", "event"): 'The event type that counts as a conversion, e.g. "purchase".',
    ("Goal", "where"): (
        "A condition the goal event must meet, on event.properties.* (eq, ne, lt, lte, gt, "
        "gte, in, not_in, exists)."
    ),
    ("Goal", "within"): 'How long after the first exposure a goal event counts (default "P30D").',
    ("Goal", "revenue"): (
        'The goal event\'s property summed as revenue, e.g. "amount" (dotted for nested).'
    ),
    ("EventTrigger", "event"): 'The event type, e.g. "purchase" or "email.opened".',
    ("EventTrigger", "where"): (
        "A condition the event (and contact) must meet, e.g. on event.properties.amount."
    ),
    ("StageTrigger", "stage_changed"): "The stage change that fires the rule.",
    ("StageChange", "from"): "The stage (or stages) left; leave out for any.",
    ("StageChange", "to"): "The stage (or stages) entered; leave out for any.",
    ("ScheduleTrigger", "schedule"): (
        "A crontab expression: minute hour day-of-month month day-of-week, e.g. "
        '"0 9 * * MON-FRI". Write days of the week as names (MON ... SUN), not numbers.'
    ),
    ("ScheduleTrigger", "timezone"): (
        '"UTC" (default), "contact" (each contact\'s own timezone) or an IANA name like '
        '"Europe/Paris".'
    ),
    ("RelativeTrigger", "before"): (
        "A date fact; the rule fires days/hours before it, e.g. contact.attributes.renewal_at."
    ),
    ("RelativeTrigger", "after"): (
        "A date fact; the rule fires days/hours after it, e.g. contact.created_at."
    ),
    ("RelativeTrigger", "days"): "Days before/after the date (default 0).",
    ("RelativeTrigger", "hours"): "Hours before/after the date, added to days (default 0).",
    ("RelativeTrigger", "stale_after"): (
        "After downtime, a fire time older than this is skipped and recorded as skipped, "
        "not run late (default: always run late, once)."
    ),
    ("RecurringTrigger", "every"): (
        "How often: 'P1Y' every year, 'P1M' every month ('P3M' a quarter). Occurrences are "
        "the date plus 1, 2, 3 ... periods, never the date itself."
    ),
    ("RecurringTrigger", "on"): (
        "The date fact it repeats on, e.g. contact.attributes.birthday or contact.created_at "
        '(a date like "1990-03-14", a time, or "--03-14" without a year).'
    ),
    ("RecurringTrigger", "at"): "The time of day it fires, HH:MM in the timezone (default 09:00).",
    ("RecurringTrigger", "timezone"): (
        '"contact" (default: each contact\'s own timezone), "UTC" or an IANA name like '
        '"Europe/Paris".'
    ),
    ("RecurringTrigger", "leap_day"): (
        'A 29 February (or 29-31 in a monthly rule) in a year (month) without that day: "feb28" '
        '(default) fires on the last day of the month, "mar1" on 1 March.'
    ),
    ("RecurringTrigger", "stale_after"): (
        "After downtime, an occurrence older than this is skipped and recorded as skipped, "
        "not run late (default: every missed occurrence runs late, once)."
    ),
    ("ScheduleTrigger", "stale_after"): (
        "After downtime, a missed slot older than this is skipped and recorded as skipped, "
        "not run late (default: run the latest missed slot once)."
    ),
    ("All", "all"): "Conditions that must all be true.",
    ("AnyOf", "any"): "Conditions of which at least one must be true.",
    ("Not", "not"): "A condition that must be false.",
    ("Leaf", "fact"): (
        "What to test: contact.<field>, event.<field>, transition.from/to, now, or a computed "
        "fact like events.count. Only in_segment works without one."
    ),
    ("Leaf", "op"): "The operator: eq, gte, contains, within_last, in_segment ...",
    ("Leaf", "value"): (
        'What to compare with: a JSON value, a list, a duration, or {"fact": ...}.'
    ),
    ("Leaf", "args"): (
        'Arguments of a computed fact, e.g. for events.count: {"type": "page.viewed", '
        '"within": "P30D"}.'
    ),
    ("FactRef", "fact"): "The fact whose value to compare with.",
    ("ActionCall", "action"): 'The action\'s name, e.g. "tag.add" (see clm plugins).',
    ("ActionCall", "with"): "The action's parameters; each action checks its own.",
    ("ActionCall", "after"): 'Run the action this long after the rule fires: {"days": 3} or "P3D".',
    ("ActionCall", "unless"): (
        "A condition judged again when the delayed action falls due (now is its due time; the "
        "triggering event is still event.*): if it holds then, the action is skipped and the "
        "skip is traced. Needs after."
    ),
    ("Limit", "once_per"): (
        '"contact": at most once per contact, ever; or a fact naming a thing, e.g. '
        '"event.properties.product_id": at most once per contact and product.'
    ),
    ("Limit", "cooldown"): 'At most once per this long, e.g. {"days": 7} or "P7D".',
    ("Rule", "experiment"): (
        "Split the contacts this rule fires for into arms (A/B test, holdout); see "
        "docs/experiments.md."
    ),
    ("Experiment", "name"): (
        f"The experiment's name, unique across all loaded rulesets ({_NAME}); with the contact "
        "id it decides the arm. Renaming it reshuffles every contact."
    ),
    ("Experiment", "description"): "What the experiment tests, for people.",
    ("Experiment", "arms"): "The arms (2 to 20), each with a weight; names unique.",
    ("Experiment", "control"): (
        "The arm the others are compared with (default: the first arm that is not a holdout)."
    ),
    ("Experiment", "goal"): "The conversion goal counted per arm.",
    ("Experiment", "level"): (
        "The significance level: a winner is declared only when the difference is significant "
        "at it (default 0.05)."
    ),
    ("Experiment", "method"): (
        '"sequential" (default): always-valid intervals, safe to look at any time; "fixed": '
        "classical intervals, valid only once every arm reaches sample_size."
    ),
    ("Experiment", "minimum_effect"): (
        "The smallest absolute difference in conversion rate worth detecting (default 0.02, two "
        "percentage points): sets the power warning and the sequential test's mixture."
    ),
    ("Experiment", "sample_size"): (
        'The planned number of exposed contacts per arm; required with method "fixed".'
    ),
    ("ExperimentArm", "name"): f"The arm's name ({_NAME}).",
    ("ExperimentArm", "weight"): (
        "The arm's share, relative to the other arms' weights (default 1)."
    ),
    ("ExperimentArm", "holdout"): (
        "true: contacts in this arm get none of the rule's actions (their exposure is still "
        "recorded), to measure what the rule adds."
    ),
    ("ExperimentArm", "description"): "What this arm does, for people.",
    ("ExperimentArm", "with"): (
        "Parameters merged over each action's with for contacts in this arm, e.g. "
        '{"template": "welcome-b"}.'
    ),
    ("Duration", "weeks"): "Weeks (default 0).",
    ("Duration", "days"): "Days (default 0).",
    ("Duration", "hours"): "Hours (default 0).",
    ("Duration", "minutes"): "Minutes (default 0).",
}


def build_schema() -> dict[str, Any]:
    """The schema as the models define it today, with ids, titles and descriptions added."""
    from ..models import Ruleset

    generated = Ruleset.model_json_schema(by_alias=True)
    defs: dict[str, dict[str, Any]] = generated.pop("$defs")
    root_title = generated.pop("title")
    for name, definition in [(root_title, generated), *defs.items()]:
        _describe(name, definition)
    # What model validators check, said in the schema too, so editors show it.
    defs["RelativeTrigger"]["oneOf"] = [{"required": ["before"]}, {"required": ["after"]}]
    segments = generated["properties"]["segments"]
    (name_pattern,) = segments["patternProperties"]
    segments["propertyNames"]["pattern"] = name_pattern
    generated.pop("description", None)
    return {
        "$schema": META_SCHEMA,
        "$id": SCHEMA_ID,
        "title": SCHEMA_TITLE,
        "description": DEF_DESCRIPTIONS["Ruleset"],
        **generated,
        "$defs": defs,
    }


def _describe(name: str, definition: dict[str, Any]) -> None:
    if name != "Ruleset":
        definition["description"] = DEF_DESCRIPTIONS[name]
    for key, prop in definition.get("properties", {}).items():
        prop.pop("title", None)  # pydantic's "If", "Then", "$Schema": noise in an editor
        try:
            prop["description"] = DESCRIPTIONS[(name, key)]
        except KeyError:
            raise KeyError(
                f"no description for {name}.{key}: add one to DESCRIPTIONS in {__name__}"
            ) from None


def schema_text() -> str:
    """The schema file's exact text: what ``scripts/generate_schema.py`` writes."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The shipped schema, read once."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema
