"""How fast are conditions evaluated, next to plain Python closures and zen-engine?

Run: ``.venv/bin/python benchmarks/evaluate.py [--contacts 100000] [--rules 50] [--repeat 3]``

One seeded data set (contacts with attributes, metrics, scores, tags and consent, some fields
missing) and one seeded set of rules (all/any/not nested to depth 3 over numbers, strings,
booleans, lists, membership and nulls). Each method evaluates every rule for every contact and
reports contact-rule evaluations per second (best of ``--repeat`` passes):

1. clm-engine: ``ConditionCompiler(...).compile(conditions).matching(ctx)``. The row "context
   built in the loop" creates the ``FactContext`` inside the timed loop, which is what the
   engine pays per contact; the "prebuilt contexts" row builds them first, which isolates the
   evaluation itself.
2. closures: the same rules turned into nested Python closures, one per node (a leaf reads its
   fact and tests it with the same strict semantics), the way a straightforward Python rules
   engine evaluates them.
3. zen-engine (GoRules) in its fastest mode for this job: the 50 rules as ONE expression
   returning an array of 50 booleans, compiled once with ``zen.compile_expression`` and
   evaluated once per contact. Its input is each contact as a plain dict, or as JSON bytes
   (zen parses those in Rust, which is faster), built before timing: building them from a
   ``Contact`` costs more than the evaluation, and is not counted. Ratios are against the
   faster of the two.

All three must produce the same matches for every contact; the script checks that and stops
if they do not.

Then what the engine pays for a decision and its trace, against the compiled match alone
(prebuilt contexts, same run): each match becomes a ``Fire``, is decided (``decide``) and
traced (``trace_of``), its trace serialised as the store writes it. The trace records what the
condition read (``ConditionCompiler.record``); the row "explained tree" does what the engine did
before m009 (the explain interpreter over every fire, its tree serialised) for comparison.
Target: a decision with its trace at most 3x the time of the match alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

os.environ.setdefault("CLM_LOAD_PLUGINS", "")  # core only, before the plugins load

from pydantic import TypeAdapter

from clm_engine.conditions import ConditionCompiler
from clm_engine.evaluation import Fire, FireLog, decide, trace_of
from clm_engine.models import DEFAULT_STAGES, Condition, Contact, Rule
from clm_engine.registry import Registry
from clm_engine.rules import CompiledRule
from clm_engine.store.sqlite import _dumps
from clm_engine.types import MISSING, FactContext

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
TAGS = ("vip", "newsletter", "churn-risk", "beta", "partner", "trial")

# Facts by kind, with the values the generator draws from. Each fact has one type (or is
# missing), so that zen-engine, which cannot tell a missing key from null, sees the same data.
NUMBERS = {
    "contact.metrics.orders_count": (0, 12),
    "contact.metrics.total_spent": (0, 2000),
    "contact.metrics.emails_opened": (0, 40),
    "contact.metrics.nps_score": (0, 10),
    "contact.metrics.tickets_count": (0, 6),
    "contact.scores.lead": (0, 100),
    "contact.scores.health": (0, 100),
    "contact.attributes.seats": (1, 500),
}
STRINGS = {
    "contact.attributes.plan": ("free", "pro", "team", "enterprise"),
    "contact.attributes.country": ("FR", "DE", "US", "GB", "ES", "IT"),
    "contact.attributes.industry": ("retail", "saas", "health", "finance", "media"),
    "contact.stage": DEFAULT_STAGES,
}
BOOLEANS = ("contact.attributes.beta", "contact.consent.email", "contact.consent.sms")
NULLABLE = ("contact.attributes.company",)  # a string, null, or missing


# -- data --------------------------------------------------------------------------------------


def make_contacts(count: int, seed: int) -> list[Contact]:
    rng = random.Random(seed)
    contacts = []
    for n in range(count):
        attributes: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        scores: dict[str, float] = {}
        consent: dict[str, bool] = {}
        if rng.random() < 0.9:
            attributes["plan"] = rng.choice(STRINGS["contact.attributes.plan"])
        if rng.random() < 0.95:
            attributes["country"] = rng.choice(STRINGS["contact.attributes.country"])
        if rng.random() < 0.7:
            attributes["industry"] = rng.choice(STRINGS["contact.attributes.industry"])
        if rng.random() < 0.7:
            attributes["beta"] = rng.random() < 0.3
        if rng.random() < 0.8:
            attributes["seats"] = rng.randint(1, 500)
        roll = rng.random()
        if roll < 0.5:
            attributes["company"] = f"company-{rng.randint(1, 999)}"
        elif roll < 0.7:
            attributes["company"] = None
        if rng.random() < 0.7:
            metrics["orders_count"] = rng.randint(0, 12)
            metrics["total_spent"] = round(rng.uniform(0, 2000), 2)
        if rng.random() < 0.85:
            metrics["emails_opened"] = rng.randint(0, 40)
        if rng.random() < 0.4:
            metrics["nps_score"] = rng.randint(0, 10)
        if rng.random() < 0.6:
            metrics["tickets_count"] = rng.randint(0, 6)
        if rng.random() < 0.8:
            scores["lead"] = round(rng.uniform(0, 100), 1)
        if rng.random() < 0.6:
            scores["health"] = round(rng.uniform(0, 100), 1)
        if rng.random() < 0.9:
            consent["email"] = rng.random() < 0.75
        if rng.random() < 0.5:
            consent["sms"] = rng.random() < 0.4
        contacts.append(
            Contact(
                id=f"c{n}",
                email=f"person{n}@example.com" if rng.random() < 0.9 else None,
                stage=rng.choice(DEFAULT_STAGES),
                attributes=attributes,
                metrics=metrics,
                scores=scores,
                tags=sorted(rng.sample(TAGS, rng.randint(0, 3))),
                consent=consent,
                created_at=NOW - timedelta(days=rng.randint(0, 900)),
            )
        )
    return contacts


def contact_dict(contact: Contact) -> dict[str, Any]:
    """What zen-engine gets: the contact's facts as plain JSON-like data."""
    return {
        "contact": {
            "stage": contact.stage,
            "tags": contact.tags,
            "attributes": contact.attributes,
            "metrics": contact.metrics,
            "scores": contact.scores,
            "consent": contact.consent,
        }
    }


# -- rules -------------------------------------------------------------------------------------


def make_leaf(rng: random.Random) -> dict[str, Any]:
    kind = rng.choices(("number", "string", "bool", "list", "null"), (5, 4, 2, 2, 1))[0]
    if kind == "number":
        fact = rng.choice(sorted(NUMBERS))
        low, high = NUMBERS[fact]
        op = rng.choice(("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in"))
        pick = lambda: rng.randint(low, high)  # noqa: E731
        if op == "between":
            value: Any = sorted((pick(), pick()))
        elif op in ("in", "not_in"):
            value = sorted({pick() for _ in range(3)})
        else:
            value = pick()
        return {"fact": fact, "op": op, "value": value}
    if kind == "string":
        fact = rng.choice(sorted(STRINGS))
        choices = STRINGS[fact]
        op = rng.choice(("eq", "ne", "in", "not_in", "starts_with"))
        if op in ("in", "not_in"):
            value = sorted(rng.sample(choices, 2))
        elif op == "starts_with":
            value = rng.choice(choices)[:1]
        else:
            value = rng.choice(choices)
        return {"fact": fact, "op": op, "value": value}
    if kind == "bool":
        return {"fact": rng.choice(BOOLEANS), "op": "eq", "value": rng.random() < 0.7}
    if kind == "list":
        op = rng.choice(("contains", "not_contains"))
        return {"fact": "contact.tags", "op": op, "value": rng.choice(TAGS)}
    if rng.random() < 0.5:
        return {"fact": NULLABLE[0], "op": "is_null", "value": rng.random() < 0.5}
    fact = rng.choice(("contact.metrics.nps_score", "contact.attributes.industry"))
    return {"fact": fact, "op": "exists", "value": rng.random() < 0.7}


def make_condition(rng: random.Random, depth: int) -> dict[str, Any]:
    if depth >= 3 or (depth > 1 and rng.random() < 0.45):
        return make_leaf(rng)
    roll = rng.random()
    if roll < 0.15 and depth > 1:
        return {"not": make_condition(rng, depth + 1)}
    key = "all" if roll < 0.65 else "any"
    return {key: [make_condition(rng, depth + 1) for _ in range(rng.randint(2, 4))]}


def make_rules(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    return [make_condition(rng, 1) for _ in range(count)]


# -- method 2: nested closures -----------------------------------------------------------------

_NUM = (int, float)


def _getter(path: str) -> Callable[[Any], Any]:
    _, field, *keys = path.split(".")
    if not keys:
        return lambda ctx: getattr(ctx.contact, field)
    (key,) = keys

    def get(ctx: Any) -> Any:
        return getattr(ctx.contact, field).get(key, MISSING)

    return get


def _strict_eq(a: Any, b: Any) -> bool:
    if type(b) is str:
        return a == b
    if type(b) is bool or b is None:
        return a is b
    return type(a) in _NUM and a == b


def closure(node: dict[str, Any]) -> Callable[[Any], bool]:
    """One closure per node, as a straightforward Python evaluator would build them."""
    if "all" in node:
        children = [closure(child) for child in node["all"]]

        def all_of(ctx: Any) -> bool:
            for child in children:  # noqa: SIM110 (a loop is faster than all() over a genexpr)
                if not child(ctx):
                    return False
            return True

        return all_of
    if "any" in node:
        children = [closure(child) for child in node["any"]]

        def any_of(ctx: Any) -> bool:
            for child in children:  # noqa: SIM110 (a loop is faster than any() over a genexpr)
                if child(ctx):
                    return True
            return False

        return any_of
    if "not" in node:
        inner = closure(node["not"])
        return lambda ctx: not inner(ctx)
    get, op, value = _getter(node["fact"]), node["op"], node["value"]
    tests: dict[str, Callable[[Any], bool]] = {
        "eq": lambda v: _strict_eq(v, value),
        "ne": lambda v: v is not MISSING and not _strict_eq(v, value),
        "lt": lambda v: type(v) in _NUM and v < value,
        "lte": lambda v: type(v) in _NUM and v <= value,
        "gt": lambda v: type(v) in _NUM and v > value,
        "gte": lambda v: type(v) in _NUM and v >= value,
        "between": lambda v: type(v) in _NUM and value[0] <= v <= value[1],
        "in": lambda v: any(_strict_eq(v, item) for item in value),
        "not_in": lambda v: v is not MISSING and not any(_strict_eq(v, i) for i in value),
        "starts_with": lambda v: type(v) is str and v.startswith(value),
        "contains": lambda v: type(v) is list and value in v,
        "not_contains": lambda v: type(v) is list and value not in v,
        "is_null": lambda v: (v is None or v is MISSING) is value,
        "exists": lambda v: (v is not MISSING) is value,
    }
    test = tests[op]
    return lambda ctx: test(get(ctx))


# -- method 3: zen-engine expression -----------------------------------------------------------


def _zen_literal(value: Any) -> str:
    return json.dumps(value)


def zen_expression(node: dict[str, Any]) -> str:
    """The rule in the zen expression language, guarded so that missing facts are false."""
    if "all" in node:
        return "(" + " and ".join(zen_expression(c) for c in node["all"]) + ")"
    if "any" in node:
        return "(" + " or ".join(zen_expression(c) for c in node["any"]) + ")"
    if "not" in node:
        return f"(not {zen_expression(node['not'])})"
    x, op, value = node["fact"], node["op"], node["value"]
    lit = _zen_literal(value)
    present = f"{x} != null"
    if op == "eq":
        return f"({x} == {lit})"
    if op == "ne":
        return f"({present} and {x} != {lit})"
    if op in ("lt", "lte", "gt", "gte"):
        symbol = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
        return f"({present} and {x} {symbol} {lit})"
    if op == "between":
        return f"({present} and {x} >= {value[0]} and {x} <= {value[1]})"
    if op == "in":
        return f"({present} and {x} in {lit})"
    if op == "not_in":
        return f"({present} and not ({x} in {lit}))"
    if op == "starts_with":
        return f"({present} and startsWith({x}, {lit}))"
    if op == "contains":
        return f"({present} and contains({x}, {lit}))"
    if op == "not_contains":
        return f"({present} and not contains({x}, {lit}))"
    if op == "is_null":
        return f"({x} == null)" if value else f"({present})"
    if op == "exists":
        return f"({present})" if value else f"({x} == null)"
    raise ValueError(op)


# -- timing ------------------------------------------------------------------------------------


def best_of(repeat: int, run: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    best, result = float("inf"), []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            result = run()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--show-source", action="store_true", help="print the generated code")
    args = parser.parse_args(argv)

    import zen

    print(f"python {platform.python_version()} on {platform.machine()}, one core")
    print(f"generating {args.contacts:,} contacts and {args.rules} rules (seed {args.seed}) ...")
    contacts = make_contacts(args.contacts, args.seed)
    rules = make_rules(args.rules, args.seed)
    conditions = [TypeAdapter(Condition).validate_python(rule) for rule in rules]
    leaves = json.dumps(rules).count('"op"')
    print(f"{leaves} leaves in {len(rules)} rules")

    # 1. clm-engine
    registry = Registry()
    compiler = ConditionCompiler(operators=registry.operators, facts=registry.facts)
    compiled = compiler.compile(conditions)
    if args.show_source:
        print(compiled.source)
    matching = compiled.matching

    def clm_in_loop() -> list[list[int]]:
        return [matching(FactContext(contact=c, now=NOW)) for c in contacts]

    contexts = [FactContext(contact=c, now=NOW) for c in contacts]

    def clm_prebuilt() -> list[list[int]]:
        return [matching(ctx) for ctx in contexts]

    # 2. closures
    closures = list(enumerate(closure(rule) for rule in rules))

    def closures_run() -> list[list[int]]:
        out = []
        for c in contacts:
            ctx = FactContext(contact=c, now=NOW)
            out.append([i for i, test in closures if test(ctx)])
        return out

    # 3. zen-engine
    expression = zen.compile_expression("[" + ", ".join(zen_expression(r) for r in rules) + "]")
    inputs = [contact_dict(c) for c in contacts]
    evaluate = expression.evaluate

    def zen_run() -> list[list[int]]:
        out = []
        for data in inputs:
            flags = evaluate(data)
            out.append([i for i, flag in enumerate(flags) if flag])
        return out

    # zen also takes JSON text, which it parses in Rust: often faster than converting a dict.
    encoded = [json.dumps(data).encode() for data in inputs]

    def zen_json_run() -> list[list[int]]:
        out = []
        for data in encoded:
            flags = evaluate(data)
            out.append([i for i, flag in enumerate(flags) if flag])
        return out

    methods: list[tuple[str, Callable[[], list[list[int]]]]] = [
        ("clm-engine (context built in the loop)", clm_in_loop),
        ("clm-engine (prebuilt contexts)", clm_prebuilt),
        ("nested closures (one per node)", closures_run),
        ("zen-engine (one array expression, dict)", zen_run),
        ("zen-engine (one array expression, JSON)", zen_json_run),
    ]
    evaluations = len(contacts) * len(rules)
    results = []
    for name, run in methods:
        seconds, matches = best_of(args.repeat, run)
        results.append((name, seconds, matches))
        print(f"  {name}: {evaluations / seconds:,.0f} evaluations/s")

    reference = results[0][2]
    for name, _, matches in results[1:]:
        if matches != reference:
            bad = next(i for i, (a, b) in enumerate(zip(reference, matches, strict=True)) if a != b)
            print(f"MISMATCH: {name} differs from clm-engine at contact {bad}:")
            print(f"  clm-engine: {reference[bad]}\n  {name}: {matches[bad]}")
            return 1
    hits = sum(len(m) for m in reference)
    print(f"all methods agree: {hits:,} matches of {evaluations:,} evaluations")

    zen_rate = max(evaluations / seconds for name, seconds, _ in results if "zen" in name)
    print()
    print(f"{'method':<42} {'evaluations/s':>14} {'x zen':>7}  (x zen: against zen's best)")
    for name, seconds, _ in results:
        rate = evaluations / seconds
        print(f"{name:<42} {rate:>14,.0f} {rate / zen_rate:>7.2f}")

    decisions_and_traces(compiler, conditions, contexts, hits, args.repeat)
    return 0


def decisions_and_traces(
    compiler: ConditionCompiler,
    conditions: list[Condition],
    contexts: list[FactContext],
    hits: int,
    repeat: int,
) -> None:
    """The compiled match alone, then with a decision and a trace for each match."""
    then = [{"action": "tag.add", "with": {"tag": "x"}}]
    rules = [
        CompiledRule(
            ruleset="bench",
            version=1,
            content_hash="0" * 64,
            rule=Rule.model_validate({"id": f"r{i}", "when": {"event": "x"}, "then": then}),
            condition=condition,
            actions=(),
            compiler=compiler,
            trace_all=False,
            once_per=None,
            cooldown=None,
        )
        for i, condition in enumerate(conditions)
    ]
    evaluator = compiler.compile(conditions)
    matching = evaluator.matching
    log = FireLog(None)  # type: ignore[arg-type]  # no rule here has a limit: never read

    def match_alone() -> list[list[int]]:
        return [matching(ctx) for ctx in contexts]

    def traced(what: Callable[[int, FactContext], Any]) -> Callable[[], list[Any]]:
        def run() -> list[Any]:
            rows = []
            for ctx in contexts:
                for index in matching(ctx):
                    rule = rules[index]
                    fire = Fire(rule, ctx.contact.id, "e1", "x event", ctx.now, True, None, "", 0)
                    fire.seen = what(index, ctx)
                    decision, detail = decide(fire, log)
                    trace = trace_of(fire, decision, detail, [])
                    rows.append(_dumps(trace.seen))
            return rows

        return run

    def compact(index: int, ctx: FactContext) -> Any:
        return evaluator.record(index, ctx)  # as the engine does (``Evaluator._run``)

    def explained(index: int, ctx: FactContext) -> Any:
        return compiler.explain(conditions[index], ctx)  # serialised like a tree was

    alone, _ = best_of(repeat, match_alone)
    rows = [
        ("compiled match alone", alone, 0),
        ("match + decision + compact trace", *_timed(repeat, traced(compact))),
        ("match + decision + explained tree (old)", *_timed(repeat, traced(explained))),
    ]
    print()
    print(
        f"decisions with their traces: {hits:,} matches over {len(contexts):,} contacts "
        f"({hits / len(contexts):.1f} traced decisions per contact of {len(rules)} rules)"
    )
    print(f"{'step':<42} {'seconds':>9} {'us/decision':>12} {'bytes/trace':>12} {'x match':>8}")
    for name, seconds, size in rows:
        cost = f"{(seconds - alone) / hits * 1e6:,.2f}" if size and hits else "-"
        per = f"{size / hits:,.0f}" if size and hits else "-"
        print(f"{name:<42} {seconds:>9.3f} {cost:>12} {per:>12} {seconds / alone:>8.2f}")
    ratio, before = rows[1][1] / alone, rows[2][1] / alone
    # What one more traced decision per contact costs, against the match of all the rules:
    # the ratio grows with how many of a contact's rules match (every match is traced).
    per_contact = alone / len(contexts)
    within = 2 * per_contact / ((rows[1][1] - alone) / hits) if hits else float("inf")
    print(
        f"decision with its trace vs compiled match alone: {ratio:.2f}x (before: the explained "
        f"tree, {before:.2f}x; {before / ratio:.1f}x faster now); "
        f"target 3x {'met' if ratio <= 3 else 'NOT met'} at this density; met up to "
        f"{within:.1f} traced decisions per contact"
    )


def _timed(repeat: int, run: Callable[[], list[Any]]) -> tuple[float, int]:
    """Best time of ``run``, and the bytes of the traces it serialised."""
    seconds, rows = best_of(repeat, run)
    return seconds, sum(len(row) for row in rows)


if __name__ == "__main__":
    sys.exit(main())
