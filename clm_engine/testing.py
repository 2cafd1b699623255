"""Helpers for testing a clm-engine plugin: the scaffolding every plugin's tests would repeat.

Public and stable, for third-party authors as much as for the plugins under ``plugins/``;
``docs/plugin-testing.md`` walks from an empty folder to a passing test. Nothing here imports
pytest: build your fixtures on these helpers. The ``check_*`` functions raise
``AssertionError`` with a message that says what is wrong, so they work as assertions in any
test runner.

Two layers:

- building blocks for a test that opens its own ``Engine`` (``Engine(path, plugins=[...])``):
  ``discover``,
  ``make_event``, ``declared_tables``, ``check_tables``,
  ``check_rejected``, and the checks of what rules
  decided (``check_action``, ``check_no_action``, ``check_trace``, ``check_contact``), which
  take any engine;
- ``engine_for``: an engine on a ``VirtualClock`` in a temporary folder, with the rulesets
  given as dicts and the plugins given as modules, as a ``Harness`` that ingests, moves time,
  dispatches and reads back what happened.

``make_event`` dates events at ``VirtualClock.DEFAULT_START`` unless told otherwise, the time
at which a ``VirtualClock()`` starts: by default, the events of a test have happened by the
clock's now, and what they make due can be dispatched.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .clock import VirtualClock
from .engine import Engine, IngestResult, parse_event
from .errors import EventError, ReducerError
from .models import Contact, Event
from .registry import Plugins, Registry

if TYPE_CHECKING:
    from .dispatch import DispatchReport
    from .store import OutboxRow, StageTransition, Trace
    from .store.tables import Table, Tables
    from .timed import TimeReport

P = TypeVar("P")

__all__ = [
    "RULESET",
    "START",
    "Harness",
    "check_action",
    "check_contact",
    "check_no_action",
    "check_rejected",
    "check_tables",
    "check_trace",
    "declared_tables",
    "discover",
    "engine_for",
    "make_event",
]

#: When a ``VirtualClock()`` starts and ``make_event`` dates events unless told otherwise.
START: str = VirtualClock.DEFAULT_START.strftime("%Y-%m-%dT%H:%M:%SZ")
#: The name of the ruleset ``engine_for(rules=[...])`` wraps its rules in.
RULESET = "test"

_DISCOVER = """
import json
from clm_engine.registry import Registry
print(json.dumps({
    i.name: {"source": i.source, "version": i.version, "hooks": list(i.hooks)}
    for i in Registry().plugin_info()
}))
"""


def discover(allow: str) -> dict[str, dict[str, Any]]:
    """What a fresh process loads with ``CLM_LOAD_PLUGINS=allow``, by plugin name.

    Each value is ``{"source": ..., "version": ..., "hooks": [...]}``: the distribution and
    version an entry-point plugin came from (``"built-in"`` and ``None`` for the core's own)
    and the hooks it implements, as ``clm plugins`` shows them.

    Why: it is the only way to test that your entry point is declared and installed right.
    Plugin loading happens once per process, so it cannot be redone in the test's process.
    The child's stderr (where a plugin that failed to import is reported) is passed on to this
    process's stderr, where the test runner shows it when the test fails.
    """
    done = subprocess.run(
        [sys.executable, "-c", _DISCOVER],
        env={**os.environ, "CLM_LOAD_PLUGINS": allow},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loading plugins failed (exit {done.returncode}):\n{done.stderr}")
    sys.stderr.write(done.stderr)
    # The last line: a plugin may print while it is imported.
    loaded: dict[str, dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def make_event(
    type_: str,
    properties: Mapping[str, Any] | None = None,
    *,
    contact_id: str = "c1",
    at: str | datetime = START,
    **extra: Any,
) -> dict[str, Any]:
    """An event in the JSON shape ``Engine.ingest`` takes, for contact ``c1`` unless told.

    Why: most events in a test differ only in their type and properties. ``extra`` adds
    top-level fields, such as ``id`` to find the event's failure again. ``at`` (ISO 8601 text
    with an offset, or an aware ``datetime``) defaults to ``START``, where a ``VirtualClock()``
    starts.
    """
    return {
        "contact_id": contact_id,
        "type": type_,
        "occurred_at": at.isoformat() if isinstance(at, datetime) else at,
        "properties": dict(properties or {}),
        **extra,
    }


class _Rollback(Exception):
    pass


@contextmanager
def declared_tables(tables: Iterable[Table]) -> Iterator[Tables]:
    """``tables`` declared on a new in-memory store, writable in one transaction that is rolled
    back at the end: what an event handler, a fact or an action gets as ``tables``, for
    testing them without an engine.

    ``with declared_tables(TABLES) as tables: on_registered(tables, contact, event)``
    """
    from .store import open_store

    store = open_store(":memory:")
    try:
        store.migrate(list(tables))
        with suppress(_Rollback), store.write() as tx:
            yield tx.tables
            raise _Rollback
    finally:
        store.close()


def check_tables(
    tables: Collection[str], directory: str | os.PathLike[str], *, plugins: Plugins = ()
) -> None:
    """Check that the plugin's ``register_tables`` hook declares ``tables`` and that an engine
    creates them once.

    Through an engine with ``plugins`` (yours, unless it is installed): the declarations come
    from the hook, an engine opening a new store file in ``directory`` creates every table and
    has nothing left to do, a second engine opening the same file does nothing again, and
    each table can be read (empty).
    """
    registry = Registry(plugins)
    declared = {table.name for table in registry.tables}
    missing = set(tables) - declared
    _expect(
        not missing,
        f"no register_tables hook declares {sorted(missing)} (declared: {sorted(declared)}): "
        "is the plugin given (plugins=[...]) or installed?",
    )
    path = Path(directory) / "check_tables.db"
    with Engine(path, registry=registry) as engine:
        pending = engine.store.migrate(registry.tables)
        _expect(pending == [], f"an engine left table changes to make: {pending}")
    with Engine(path, registry=registry) as engine:
        again = engine.store.migrate(registry.tables)
        _expect(again == [], f"opened twice, the store changed the tables again: {again}")
        for name in tables:
            count = engine.store.tables[name].count()
            _expect(count == 0, f"a new store has {count} rows in {name}")


def check_rejected(
    engine: Engine, event: Mapping[str, Any], *, match: str, reducer: str
) -> dict[str, Any]:
    """Ingest ``event``, which reducer ``reducer`` must refuse, and check the refusal is clean.

    Why: a reducer refuses an event it cannot apply by raising (``ValueError`` with a reason),
    and each plugin's tests should show the whole outcome, not only the raise: ``ingest``
    raises ``ReducerError`` whose message matches the regular expression ``match``, the
    contact is left exactly as it was, and one failure, naming the event and ``reducer``, is
    recorded for ``clm`` to show and retry. ``event`` must carry an ``id``, so that its
    failure can be found. Returns that failure (a row of ``engine.store.failures()``).
    """
    __tracebackhide__ = True  # pytest shows the test's line, not the kit's
    event_id = event.get("id")
    if not event_id:
        raise ValueError("give the event an 'id', so that its failure can be found")
    contact_id = event["contact_id"]
    before = engine.contact(contact_id)
    known = {f["event_id"] for f in engine.store.failures()}
    try:
        engine.ingest(event)
    except ReducerError as error:
        _expect(re.search(match, str(error)) is not None, f"{match!r} not found in: {error}")
    else:
        raise AssertionError(f"event {event_id!r} was applied; a reducer should have refused it")
    _expect(engine.contact(contact_id) == before, f"contact {contact_id!r} changed")
    new = [f for f in engine.store.failures() if f["event_id"] not in known]
    _expect(
        [f["event_id"] for f in new] == [event_id],
        f"expected one new failure, for event {event_id!r}; found {new}",
    )
    _expect(
        new[0]["reducer"] == reducer,
        f"the failure names reducer {new[0]['reducer']!r}, not {reducer!r}",
    )
    return new[0]


# -- what the rules decided: outbox rows, traces, contacts ----------------------------------------

_UNSET: Any = object()


def check_action(
    engine: Engine,
    action: str,
    *,
    contact_id: str | None = None,
    rule: str | None = None,
    status: str | None = "done",
    params: Mapping[str, Any] | None = None,
    result: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> OutboxRow:
    """Check that the outbox holds exactly one ``action`` row as described, and return it.

    Why: the outbox is where every decision of a rule lands, with what became of it, so it is
    what a test of an action asserts on. Filters left out match anything: ``contact_id``,
    ``rule`` (its id, or ``"ruleset/rule"``), ``status`` (``"done"`` unless told: the action
    ran; ``None`` for any), ``params`` and ``result`` (the row's include these keys with equal
    values) and ``note`` (a regular expression searched in the row's note: a veto's or a
    deferral's reason). Exactly one: an action decided twice is a bug this catches. When the
    row is there but still ``pending``, the message says whether it waits for a dispatch or
    for the clock.
    """
    __tracebackhide__ = True
    if action not in engine.actions:
        from .rulesets.problems import did_you_mean

        hint = did_you_mean(action, engine.actions) or "; is its plugin registered?"
        raise AssertionError(f"no action {action!r} is registered{hint}")
    rows = _outbox(engine, contact_id, rule=rule, action=action)
    matches = [
        row
        for row in rows
        if (status is None or row.status == status)
        and not _differences(row.params, params)
        and not _differences(row.result if isinstance(row.result, dict) else {}, result)
        and (note is None or re.search(note, row.note or "") is not None)
    ]
    if len(matches) == 1:
        return matches[0]
    wanted = _describe(
        f"one {action!r} action",
        contact_id=contact_id,
        rule=rule,
        status=status,
        params=params,
        result=result,
        note=note,
    )
    found = "none" if not matches else f"{len(matches)}"
    lines = [f"expected {wanted}; found {found}."]
    if matches:
        lines += ["Those found:", *(f"  - {_show_row(row)}" for row in matches)]
    else:
        lines += _outbox_report(engine, contact_id, rows)
        lines += _pending_hint(engine, rows, status)
        if rule is not None and not rows:
            lines += _trace_report(engine, contact_id, rule)
    raise AssertionError("\n".join(lines))


def check_no_action(
    engine: Engine,
    action: str | None = None,
    *,
    contact_id: str | None = None,
    rule: str | None = None,
    status: str | None = None,
) -> None:
    """Check that the outbox holds no row of ``action`` (or of any action) as described.

    Why: "this rule must not fire for that contact" is half of most rule tests. The filters
    are those of ``check_action``; ``status`` matches any status unless given.
    """
    __tracebackhide__ = True
    rows = [
        row
        for row in _outbox(engine, contact_id, rule=rule, action=action)
        if status is None or row.status == status
    ]
    if rows:
        what = f"no {action!r} action" if action else "no action"
        wanted = _describe(what, contact_id=contact_id, rule=rule, status=status)
        shown = [f"  - {_show_row(row)}" for row in rows]
        raise AssertionError("\n".join([f"expected {wanted}; found {len(rows)}:", *shown]))


def check_trace(
    engine: Engine,
    rule: str,
    *,
    contact_id: str | None = None,
    decision: str = "fired",
    detail: str | None = None,
) -> Trace:
    """Check that ``rule`` recorded ``decision`` (for ``contact_id``, if given); return the
    newest such trace.

    Why: a trace says why a rule did or did not fire, with the condition tree and the values
    it saw, as ``clm explain`` shows it. Decisions: ``fired``, ``blocked_by_limit``, ``error``,
    and ``no_match`` (recorded only when the ruleset says ``"trace": "all"``). ``rule`` is the
    rule's id or ``"ruleset/rule"``; ``detail`` a regular expression searched in the trace's
    detail (a limit's "last fired on ...", an evaluation error).
    """
    __tracebackhide__ = True
    _known_rule(engine, rule)
    traces = _traces(engine, contact_id, rule=rule)
    matches = [
        t
        for t in traces
        if t.decision == decision
        and (detail is None or re.search(detail, t.detail or "") is not None)
    ]
    if matches:
        return matches[0]
    wanted = _describe(f"rule {rule!r} to have decided {decision!r}", contact_id=contact_id)
    if detail is not None:
        wanted += f", with a detail matching {detail!r}"
    raise AssertionError(
        "\n".join([f"expected {wanted}; it did not.", *_trace_report(engine, contact_id, rule)])
    )


def check_contact(
    engine: Engine,
    contact_id: str,
    *,
    stage: str | None = _UNSET,
    email: str | None = _UNSET,
    tags: Iterable[str] | None = None,
    scores: Mapping[str, float] | None = None,
    attributes: Mapping[str, Any] | None = None,
    consent: Mapping[str, bool] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Contact:
    """Check a stored contact's state, and return the contact.

    Why: most effects of rules end up on the contact. ``stage`` and ``email`` are compared as
    given (``None`` included); the contact has at least the ``tags`` given; ``scores`` are
    compared to within 1e-9, ``attributes``, ``consent`` and ``metrics`` key by key for the
    keys given. Every difference is reported at once, with the contact.
    """
    __tracebackhide__ = True
    contact = engine.contact(contact_id)
    if contact is None:
        stored = [c.id for _, c in zip(range(10), engine.store.iter_contacts(), strict=False)]
        raise AssertionError(
            f"no contact {contact_id!r} is stored (contacts: {stored or 'none'}): "
            "was an event for it ingested?"
        )
    problems: list[str] = []
    if stage is not _UNSET and contact.stage != stage:
        problems.append(f"stage is {contact.stage!r}, expected {stage!r}")
    if email is not _UNSET and contact.email != email:
        problems.append(f"email is {contact.email!r}, expected {email!r}")
    missing = [tag for tag in tags or () if tag not in contact.tags]
    if missing:
        problems.append(f"tags {contact.tags} lack {missing}")
    for name, value in (scores or {}).items():
        if name not in contact.scores:
            problems.append(f"has no score {name!r} (expected {value!r})")
        elif not math.isclose(contact.scores[name], value, rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"score {name!r} is {contact.scores[name]!r}, expected {value!r}")
    for field, actual, expected in (
        ("attributes", contact.attributes, attributes),
        ("consent", contact.consent, consent),
        ("metrics", contact.metrics, metrics),
    ):
        problems += [f"{field}: {d}" for d in _differences(actual, expected)]
    if problems:
        shown = contact.model_dump_json(exclude={"created_at", "updated_at"})
        raise AssertionError(
            "\n".join(
                [f"contact {contact_id!r} is not as expected:"]
                + [f"  - {p}" for p in problems]
                + [f"The contact: {shown}"]
            )
        )
    return contact


# -- an engine under test ------------------------------------------------------------------------


class Harness:
    """An engine on a ``VirtualClock``, in a folder of its own, with the plugins it was given.

    Made by ``engine_for``. It ingests events, moves time and dispatches as a host would, and
    reads back what happened. ``engine``, ``clock`` and ``directory`` (where the store and the
    ruleset files are) are there for anything else. ``close()`` it, or use it in a ``with``
    block: the engine closes and its temporary folder, if it made one, is removed.
    """

    def __init__(
        self, engine: Engine, clock: VirtualClock, directory: Path, resources: ExitStack
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.directory = directory
        self._resources = resources

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the engine (and remove the temporary folder it made). Idempotent."""
        self._resources.close()

    @property
    def now(self) -> datetime:
        """The clock's time."""
        return self.clock.now()

    # -- driving it --

    def ingest(self, *events: Event | Mapping[str, Any] | str) -> IngestResult:
        """Ingest ``events`` in one batch, as they arrive when they happen.

        The clock first moves forward to the latest event's time (never back: a late event
        leaves it where it is), so that what an event makes due at once is due by the clock's
        now. What the rules decide is judged and recorded, and internal actions with no
        ``after`` run inline, as the events are ingested; external actions and delayed ones
        wait in the outbox for ``dispatch()``, ``tick()`` or ``advance()``. A malformed event
        raises ``EventError`` before anything is ingested; an event a reducer refused raises
        ``ReducerError`` after the rest of the batch has landed (see ``check_rejected``).
        """
        parsed: list[Event] = []
        for position, item in enumerate(events):
            try:
                parsed.append(parse_event(item))
            except EventError as error:
                raise EventError(f"event {position} of this call: {error}") from None
        if not parsed:
            raise ValueError("ingest() needs at least one event")
        latest = max(event.occurred_at for event in parsed)
        if latest > self.clock.now():
            self.clock.set(latest)
        result = self.engine.ingest_many(parsed)
        if result.failed:
            failure = result.failed[0]
            raise ReducerError(
                f"event {failure.event.id} was not applied: reducer {failure.reducer} "
                f"failed with {failure.error}"
            )
        return result

    def dispatch(self) -> DispatchReport:
        """Run the outbox rows due by the clock's now (``Engine.dispatch``)."""
        return self.engine.dispatch()

    def tick(self) -> TimeReport:
        """Run everything due at the clock's now: relative-time rules, schedules, then the
        outbox (``Engine.tick``, what ``clm tick`` and ``clm run`` do)."""
        return self.engine.tick()

    def advance(
        self,
        delta: timedelta | None = None,
        *,
        to: datetime | str | None = None,
        **kwargs: float,
    ) -> TimeReport:
        """Move the clock forward, by ``delta``, by ``timedelta(**kwargs)`` (``days=3``) or
        ``to`` a time, then ``tick()``: what a running ``clm run`` would have done by then."""
        if to is not None:
            if delta is not None or kwargs:
                raise TypeError("advance() takes either 'to' or a duration, not both")
            self.clock.set(_aware(to))
        else:
            self.clock.advance(delta, **kwargs)
        return self.tick()

    # -- reading it --

    def contact(self, contact_id: str) -> Contact:
        """The stored contact; ``AssertionError`` if there is none."""
        __tracebackhide__ = True
        return check_contact(self.engine, contact_id)

    def outbox(
        self,
        contact_id: str | None = None,
        *,
        rule: str | None = None,
        action: str | None = None,
        status: str | None = None,
    ) -> list[OutboxRow]:
        """Outbox rows (every contact's unless ``contact_id``), by due time: each says which
        ``ruleset``/``rule`` decided which ``action`` with which ``params``, its ``status``
        (``pending``, ``done``, ``skipped``, ``failed``, ``vetoed``, ``dead``, ``simulated``,
        ``retracted``), ``note`` and ``result``."""
        rows = _outbox(self.engine, contact_id, rule=rule, action=action)
        return [row for row in rows if status is None or row.status == status]

    def traces(self, contact_id: str | None = None, *, rule: str | None = None) -> list[Trace]:
        """Rules' recorded decisions (every contact's unless ``contact_id``), newest first."""
        return _traces(self.engine, contact_id, rule=rule)

    def stage_history(self, contact_id: str) -> list[StageTransition]:
        """The contact's stage transitions, oldest first, each dated by its cause."""
        return self.engine.store.stage_history(contact_id)

    # -- checking it: the module's check_* functions on this engine --

    def check_action(
        self,
        action: str,
        *,
        contact_id: str | None = None,
        rule: str | None = None,
        status: str | None = "done",
        params: Mapping[str, Any] | None = None,
        result: Mapping[str, Any] | None = None,
        note: str | None = None,
    ) -> OutboxRow:
        """``check_action(engine, action, ...)``: exactly one such outbox row; returns it."""
        __tracebackhide__ = True
        return check_action(
            self.engine,
            action,
            contact_id=contact_id,
            rule=rule,
            status=status,
            params=params,
            result=result,
            note=note,
        )

    def check_no_action(
        self,
        action: str | None = None,
        *,
        contact_id: str | None = None,
        rule: str | None = None,
        status: str | None = None,
    ) -> None:
        """``check_no_action(engine, action, ...)``: no such outbox row."""
        __tracebackhide__ = True
        check_no_action(self.engine, action, contact_id=contact_id, rule=rule, status=status)

    def check_trace(
        self,
        rule: str,
        *,
        contact_id: str | None = None,
        decision: str = "fired",
        detail: str | None = None,
    ) -> Trace:
        """``check_trace(engine, rule, ...)``: the rule recorded that decision; the newest."""
        __tracebackhide__ = True
        return check_trace(
            self.engine, rule, contact_id=contact_id, decision=decision, detail=detail
        )

    def check_contact(
        self,
        contact_id: str,
        *,
        stage: str | None = _UNSET,
        email: str | None = _UNSET,
        tags: Iterable[str] | None = None,
        scores: Mapping[str, float] | None = None,
        attributes: Mapping[str, Any] | None = None,
        consent: Mapping[str, bool] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> Contact:
        """``check_contact(engine, contact_id, ...)``: the contact's state; returns it."""
        __tracebackhide__ = True
        return check_contact(
            self.engine,
            contact_id,
            stage=stage,
            email=email,
            tags=tags,
            scores=scores,
            attributes=attributes,
            consent=consent,
            metrics=metrics,
        )

    def check_rejected(
        self, event: Mapping[str, Any], *, match: str, reducer: str
    ) -> dict[str, Any]:
        """``check_rejected(engine, event, ...)``: a reducer refused the event cleanly."""
        __tracebackhide__ = True
        return check_rejected(self.engine, event, match=match, reducer=reducer)


def engine_for(
    *,
    rules: Iterable[Mapping[str, Any]] = (),
    rulesets: Iterable[Mapping[str, Any] | str | os.PathLike[str]] = (),
    plugins: Iterable[object] | Mapping[str, object] = (),
    tmp_path: str | os.PathLike[str] | None = None,
    start: datetime | str | None = None,
    **engine_options: Any,
) -> Harness:
    """An engine under test: a new store, the rulesets and plugins given, a virtual clock.

    - ``rules``: rule dicts (``{"id": ..., "when": ..., "then": [...]}``), loaded as one
      ruleset named ``RULESET`` (``"test"``), version 1;
    - ``rulesets``: whole rulesets or plugin documents (an email sequence, a catalogue) as
      dicts, written as JSON files into the harness's folder, and paths of ruleset files or
      folders, loaded as they are. The engine validates them all as ``clm validate`` does, and
      raises ``RulesetError`` listing every problem;
    - ``plugins``: plugin modules (or objects), each registered under its ``__name__``, or a
      mapping ``{name: plugin}``: the engine's own, beside the built-ins and the installed
      plugins that ``CLM_LOAD_PLUGINS`` allows, as ``clm`` loads them (``Engine(plugins=...)``).
      One installed already (loaded from its entry point) is not registered twice;
    - ``tmp_path``: a folder in which a new subfolder holds the store and the ruleset files
      (pytest's ``tmp_path``); without one, a temporary folder removed by ``close()``;
    - ``start``: where the clock starts (aware ``datetime`` or ISO text), ``START`` unless
      told: the time ``make_event`` gives events by default;
    - ``engine_options``: passed to ``Engine`` (``stages``, ``max_attempts``, ``lease``,
      ``dry_run_external``, ``late_action_limit``).
    """
    resources = ExitStack()
    try:
        if tmp_path is None:
            directory = Path(tempfile.mkdtemp(prefix="clm-kit-"))
            resources.callback(shutil.rmtree, directory, ignore_errors=True)
        else:
            directory = Path(tempfile.mkdtemp(prefix="clm-kit-", dir=tmp_path))
        paths = _write_rulesets(directory / "rulesets", rules, rulesets)
        clock = VirtualClock(_aware(start) if start is not None else None)
        engine = Engine(
            directory / "clm.db",
            clock=clock,
            rulesets=paths or None,
            plugins=plugins,
            **engine_options,
        )
        resources.callback(engine.close)
    except BaseException:
        resources.close()
        raise
    return Harness(engine, clock, directory, resources)


def _write_rulesets(
    folder: Path,
    rules: Iterable[Mapping[str, Any]],
    rulesets: Iterable[Mapping[str, Any] | str | os.PathLike[str]],
) -> list[str | os.PathLike[str]]:
    items: list[Mapping[str, Any] | str | os.PathLike[str]] = list(rulesets)
    rules = list(rules)
    if rules:
        items.insert(0, {"ruleset": RULESET, "version": 1, "rules": rules})
    paths: list[str | os.PathLike[str]] = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            paths.append(item)
            continue
        name = item.get("ruleset") or next(
            (v for k, v in item.items() if k != "$schema" and isinstance(v, str)), "document"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{number:02d}-{re.sub(r'[^A-Za-z0-9._-]+', '-', str(name))}.json"
        # Indented: a validation error's line and column point into a readable file.
        path.write_text(json.dumps(item, indent=2) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def _aware(when: datetime | str) -> datetime:
    moment = datetime.fromisoformat(when) if isinstance(when, str) else when
    if moment.tzinfo is None:
        raise ValueError(f"give a time with its offset (2026-03-01T10:00:00Z), not {when!r}")
    return moment


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _outbox(
    engine: Engine, contact_id: str | None, *, rule: str | None, action: str | None
) -> list[OutboxRow]:
    store: Any = engine.store  # actions_for: not in the Store protocol yet
    ids = [contact_id] if contact_id is not None else [c.id for c in store.iter_contacts()]
    rows = [
        row
        for cid in ids
        for row in store.actions_for(cid)
        if (action is None or row.action == action) and _is_rule(row.ruleset, row.rule, rule)
    ]
    return sorted(rows, key=lambda row: (row.due_at, row.seq))


def _traces(engine: Engine, contact_id: str | None, *, rule: str | None) -> list[Trace]:
    store: Any = engine.store  # traces: not in the Store protocol yet
    ids = [contact_id] if contact_id is not None else [c.id for c in store.iter_contacts()]
    traces = [
        trace
        for cid in ids
        for trace in store.traces(cid, limit=1_000_000)
        if _is_rule(trace.ruleset, trace.rule, rule)
    ]
    return sorted(traces, key=lambda trace: trace.at, reverse=True)


def _split_rule(name: str) -> tuple[str, str]:
    ruleset, _, rule = name.partition("/")
    return ruleset, rule


def _is_rule(ruleset: str, rule: str, wanted: str | None) -> bool:
    return wanted is None or wanted in (rule, f"{ruleset}/{rule}")


def _known_rule(engine: Engine, rule: str) -> None:
    loaded = [
        f"{item.ruleset.ruleset}/{r.id}"
        for item in engine.rulebook.rulesets
        for r in item.ruleset.rules
    ]
    if not any(_is_rule(*_split_rule(name), rule) for name in loaded):
        raise AssertionError(f"no rule {rule!r} is loaded (loaded: {loaded or 'none'})")


def _differences(actual: Mapping[str, Any], expected: Mapping[str, Any] | None) -> list[str]:
    problems = []
    for key, value in (expected or {}).items():
        if key not in actual:
            problems.append(f"{key!r} is missing (expected {value!r})")
        elif actual[key] != value:
            problems.append(f"{key!r} is {actual[key]!r}, expected {value!r}")
    return problems


def _describe(what: str, **filters: Any) -> str:
    labels = {
        "contact_id": "for contact {!r}",
        "rule": "of rule {!r}",
        "status": "with status {!r}",
        "params": "with params including {!r}",
        "result": "with a result including {!r}",
        "note": "with a note matching {!r}",
    }
    details = [labels[k].format(v) for k, v in filters.items() if v is not None]
    return ", ".join([f"{what} {details[0]}" if details else what, *details[1:]])


def _show_row(row: OutboxRow) -> str:
    text = f"{row.action} for {row.contact_id!r} (rule {row.ruleset}/{row.rule}): {row.status}"
    text += f", due {row.due_at}"
    if row.entity:
        text += f", entity {row.entity!r}"
    text += f", params {json.dumps(row.params, sort_keys=True, default=str)}"
    if row.note:
        text += f", note {row.note!r}"
    if row.result is not None:
        text += f", result {json.dumps(row.result, sort_keys=True, default=str)}"
    return text


def _outbox_report(engine: Engine, contact_id: str | None, rows: Sequence[OutboxRow]) -> list[str]:
    where = "the outbox" if contact_id is None else f"the outbox of {contact_id!r}"
    everything = _outbox(engine, contact_id, rule=None, action=None)
    if not everything:
        return [f"{where.capitalize()} is empty."]
    shown = [f"  - {_show_row(row)}" for row in everything[:20]]
    more = [f"  ... and {len(everything) - 20} more"] if len(everything) > 20 else []
    return [f"{where.capitalize()} holds:", *shown, *more]


def _pending_hint(engine: Engine, rows: Sequence[OutboxRow], status: str | None) -> list[str]:
    if status in (None, "pending"):
        return []
    now = engine.clock.now()
    pending = [row for row in rows if row.status == "pending"]
    due = [row for row in pending if _aware(row.due_at) <= now]
    if due:
        return [
            f"It is pending and due by the clock's now ({_text(now)}): external actions "
            "and delayed ones run when dispatched (dispatch(), tick() or advance())."
        ]
    if pending:
        first = min(row.due_at for row in pending)
        return [
            f"It is pending until {first}, after the clock's now ({_text(now)}): move "
            "the clock (advance(...)), which dispatches what has come due."
        ]
    return []


def _trace_report(engine: Engine, contact_id: str | None, rule: str) -> list[str]:
    traces = _traces(engine, contact_id, rule=rule)
    if not traces:
        return [
            f"Rule {rule!r} recorded no decision"
            + ("" if contact_id is None else f" for {contact_id!r}")
            + ": its trigger never matched an event, or its condition was false (a ruleset "
            'records \'no_match\' only with "trace": "all").'
        ]
    lines = [f"Rule {rule!r} decided:"]
    for trace in traces[:20]:
        detail = f" ({trace.detail})" if trace.detail else ""
        lines.append(
            f"  - {trace.decision}{detail} for {trace.contact_id!r} on {trace.trigger} "
            f"at {trace.at}"
        )
    return lines


def _expect(condition: bool, message: str) -> None:
    __tracebackhide__ = True
    # Not ``assert``: it is stripped under ``python -O`` and only rewritten in test modules.
    if not condition:
        raise AssertionError(message)
