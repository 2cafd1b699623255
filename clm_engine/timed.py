"""Rules on the time axis: dates coming up or gone by (anchors), and cron schedules.

**Anchors.** A rule such as ``{"before": "contact.attributes.renewal_at", "days": 30}`` fires
once per anchor date. The engine keeps one row per (rule, contact, entity) in ``anchors`` with
the date and the fire time, refreshed in the ingest transaction whenever a contact changes: a
moved date moves the pending fire, a removed date cancels it. A sweep then reads the pending
anchors whose fire time has come through the ``(status, fire_at)`` index, so its cost grows
with what is due, not with the number of contacts.

**Schedules.** A cron rule keeps, per timezone, the last slot it ran in ``schedules``. A tick
computes the slots that came due since (APScheduler's ``CronTrigger``), runs the latest one
over the contacts in chunks (all missed slots coalesce into one run) and records it, in write
transactions, so two processes or a restart never run a slot twice. On the first sight of a
rule, its clock starts at that moment: past slots are not replayed.

Both skip, and record as skipped with the reason, what is older than the rule's
``stale_after`` (after downtime); otherwise what fell due while the engine was stopped runs
once when it comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache, partial
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from .conditions.compiler import CompiledConditions
from .conditions.facts import resolve
from .conditions.values import to_datetime
from .dispatch import DispatchReport
from .evaluation import EventCounter, Fire, limit_entity, settle
from .models import (
    Contact,
    RecurringTrigger,
    RelativeTrigger,
    ScheduleTrigger,
    duration_to_timedelta,
    shift_time,
    utc_text,
)
from .recurring import Moment, Period, base_date, parse_time_of_day
from .rules import CompiledRule, RuleBook
from .store import Store, StoreTransaction, retry_conflicts
from .types import MISSING, FactContext

#: Contacts evaluated per write transaction by a schedule, and anchors per sweep step.
CHUNK = 1000


@dataclass
class TimeReport:
    anchors_fired: int = 0
    anchors_skipped: int = 0
    anchors_not_matched: int = 0
    slots_run: int = 0
    slots_skipped: int = 0
    contacts_evaluated: int = 0
    enqueued: int = 0
    notes: list[str] = field(default_factory=list)
    dispatched: DispatchReport = field(default_factory=DispatchReport)

    def add(self, other: TimeReport) -> None:
        """Count in what a chunk did (once its write committed)."""
        self.anchors_fired += other.anchors_fired
        self.anchors_skipped += other.anchors_skipped
        self.anchors_not_matched += other.anchors_not_matched
        self.slots_run += other.slots_run
        self.slots_skipped += other.slots_skipped
        self.contacts_evaluated += other.contacts_evaluated
        self.enqueued += other.enqueued
        self.notes.extend(other.notes)
        self.dispatched.add(other.dispatched)

    def as_dict(self) -> dict[str, Any]:
        return {
            "anchors": {
                "fired": self.anchors_fired,
                "not_matched": self.anchors_not_matched,
                "skipped": self.anchors_skipped,
            },
            "schedules": {
                "slots_run": self.slots_run,
                "slots_skipped": self.slots_skipped,
                "contacts_evaluated": self.contacts_evaluated,
            },
            "enqueued": self.enqueued,
            "dispatched": self.dispatched.as_dict(),
            "notes": self.notes[:100],
        }


def anchor_definition(rule: CompiledRule) -> str:
    when = rule.rule.when
    if isinstance(when, RecurringTrigger):
        return json.dumps(
            {
                "anchor": when.anchor,
                "every": when.every,
                "at": when.at,
                "timezone": when.timezone,
                "leap_day": when.leap_day,
            }
        )
    relative: RelativeTrigger = when  # type: ignore[assignment]  # the other timed rules
    return json.dumps({"anchor": relative.anchor, "offset": relative.offset.total_seconds()})


def anchor_dates(rule: CompiledRule, ctx: FactContext) -> dict[str, datetime]:
    """The dates a relative-time rule counts from for ``ctx.contact``, by entity.

    A plain date fact (``contact.created_at``) gives one anchor, entity ``""``. A computed fact
    whose value is a mapping of entity id to date (a plugin's ``product.warranty_ends_at``:
    ``{"p-17": "2027-03-01", ...}``) gives one anchor per entity, each fired once. Pass one
    ``ctx`` for all the rules of a contact so a fact several rules count from (a plugin's
    query) is computed once.

    A date whose fire time (the date plus the rule's offset) is not a supported time
    (``models.shift_time``: 1900 to 2200) is no anchor, as if the date were not there: a
    ``9999-12-31`` that means "never" never fires, and no date, however far, overflows.
    """
    value = resolve(rule.anchor, ctx)  # type: ignore[arg-type]  # only rules with an anchor plan reach here
    if value is MISSING or value is None:
        return {}
    offset = rule.rule.when.offset  # type: ignore[union-attr]  # a relative rule's trigger
    if isinstance(value, dict):
        found = {str(entity): to_datetime(date) for entity, date in value.items()}
        return {
            entity: moment
            for entity, moment in found.items()
            if moment is not None and shift_time(moment, offset) is not None
        }
    moment = to_datetime(value)
    return {"": moment} if moment is not None and shift_time(moment, offset) is not None else {}


def refresh_anchors(
    tx: StoreTransaction,
    book: RuleBook,
    contacts: Sequence[Contact],
    moved: Mapping[str, set[str]] | None = None,
    since: datetime | None = None,
) -> None:
    """Bring these contacts' anchors in line with their dates (in the ingest transaction).

    ``moved``, if given, holds the types of the events each contact just got: a rule whose
    anchor is a computed fact that declares the events that move it (``moved_by``) is left as
    it is for a contact that got none of them, so its fact (often a query) is not asked.

    A plugin's anchor fact that raises leaves that rule's anchors for that contact as they
    were: one bad fact must not take the batch down.

    A recurring rule (``every``) keeps the next anniversary of its date: the one pending stays
    while it is still an anniversary of the date (so one that came due and was not swept yet
    still fires); otherwise the first that fires at or after the contact's change, or after
    ``since`` if later (a rule loaded today does not replay years of past birthdays)."""
    rules = book.relative
    if not rules or not contacts:
        return
    todo = [(contact, _moving(rules, moved, contact.id)) for contact in contacts]
    todo = [(contact, due) for contact, due in todo if due]
    if not todo:
        return
    existing = tx.anchors_for([contact.id for contact, _ in todo])
    entities: dict[tuple[str, str, str], list[str]] = {}
    for key in existing:
        entities.setdefault(key[:3], []).append(key[3])
    puts: list[tuple[str, str, str, str, str, str]] = []
    drops: list[tuple[str, str, str, str]] = []
    for contact, due in todo:
        ctx = FactContext(  # one per contact: a fact several rules count from is computed once
            contact=contact,
            now=contact.updated_at or contact.created_at,  # type: ignore[arg-type]  # a stored contact has created_at
            db=tx.db,
            tables=tx.tables,
            documents=book.documents,
        )
        for rule in due:
            if isinstance(rule.rule.when, RecurringTrigger):
                start = ctx.now if since is None else max(ctx.now, since)
                owned = entities.get((rule.ruleset, rule.id, contact.id), [])
                _refresh_recurring(rule, ctx, start, owned, existing, puts, drops)
                continue
            try:
                dates = anchor_dates(rule, ctx)
            except Exception:  # a plugin's anchor fact failed: keep what this rule had
                continue  # (the batch must land; the next change of the contact tries again)
            for entity in entities.get((rule.ruleset, rule.id, contact.id), ()):
                key = (rule.ruleset, rule.id, contact.id, entity)
                if entity not in dates and existing[key][2] == "pending":
                    drops.append(key)  # the date is gone: cancel what was pending
            for entity, moment in dates.items():
                key = (rule.ruleset, rule.id, contact.id, entity)
                old = existing.get(key)
                anchor_text = utc_text(moment)
                if old is not None and old[0] == anchor_text:
                    continue  # unchanged: keep its status (a fired anchor does not fire again)
                fire_at = shift_time(moment, rule.rule.when.offset)  # type: ignore[union-attr]  # only relative-time rules have anchors
                if fire_at is None:  # anchor_dates keeps only dates that have one: never here
                    continue
                puts.append((*key, anchor_text, utc_text(fire_at)))
    tx.put_anchors(puts)
    tx.drop_anchors(drops)


def _moment(rule: CompiledRule, contact: Contact) -> Moment:
    when: RecurringTrigger = rule.rule.when  # type: ignore[assignment]  # called for those only
    zone = contact.timezone if when.timezone == "contact" else when.timezone
    return Moment(Period.parse(when.every), parse_time_of_day(when.at), zone, when.leap_day)


def recurring_bases(rule: CompiledRule, ctx: FactContext, moment: Moment) -> dict[str, date]:
    """The dates a recurring rule counts anniversaries of, by entity (as ``anchor_dates``)."""
    value = resolve(rule.anchor, ctx)  # type: ignore[arg-type]  # a recurring rule has a plan
    if value is MISSING or value is None:
        return {}
    if isinstance(value, dict):
        found = {str(entity): base_date(day, moment.zone) for entity, day in value.items()}
        return {entity: day for entity, day in found.items() if day is not None}
    day = base_date(value, moment.zone)
    return {"": day} if day is not None else {}


def _refresh_recurring(
    rule: CompiledRule,
    ctx: FactContext,
    start: datetime,
    owned: Sequence[str],
    existing: Mapping[tuple[str, str, str, str], tuple[str, str, str]],
    puts: list[tuple[str, str, str, str, str, str]],
    drops: list[tuple[str, str, str, str]],
) -> None:
    contact = ctx.contact
    moment = _moment(rule, contact)
    try:
        bases = recurring_bases(rule, ctx, moment)
    except Exception:  # a plugin's anchor fact failed: keep what this rule had
        return
    for entity in owned:
        key = (rule.ruleset, rule.id, contact.id, entity)
        if entity not in bases and existing[key][2] == "pending":
            drops.append(key)  # the date is gone: cancel the next anniversary
    for entity, base in bases.items():
        key = (rule.ruleset, rule.id, contact.id, entity)
        old = existing.get(key)
        if old is not None:
            day = date.fromisoformat(old[0][:10])
            if moment.index_of(base, day) is not None:  # still an anniversary of the date
                fire = moment.fire_at(day)
                if old[2] != "pending" or (fire is not None and utc_text(fire) == old[1]):
                    continue  # unchanged (or the last one in range, done)
                if fire is not None:  # the contact's timezone moved: same day, new time
                    puts.append((*key, old[0], utc_text(fire)))
                    continue
        nxt = moment.next_after(base, start)
        if nxt is None:
            if old is not None and old[2] == "pending":
                drops.append(key)
            continue
        puts.append((*key, _day_text(nxt[0]), utc_text(nxt[1])))


def _day_text(day: date) -> str:
    """An occurrence's day as an anchor date: midnight UTC of that calendar date."""
    return utc_text(datetime(day.year, day.month, day.day, tzinfo=UTC))


def _advance_recurring(
    tx: StoreTransaction,
    rule: CompiledRule,
    contact: Contact,
    key: tuple[str, str, str, str],
    anchor_at: str,
    fire_time: datetime,
    documents: Mapping[str, Mapping[str, Any]],
) -> None:
    """After an anniversary fired (or was skipped), make the next one pending."""
    moment = _moment(rule, contact)
    ctx = FactContext(
        contact=contact, now=fire_time, db=tx.db, tables=tx.tables, documents=documents
    )
    try:
        base = recurring_bases(rule, ctx, moment).get(key[3])
    except Exception:  # a plugin's anchor fact failed: the contact's next change retries
        return
    nxt = moment.following(base, date.fromisoformat(anchor_at[:10])) if base else None
    if nxt is not None:
        tx.put_anchors([(*key, _day_text(nxt[0]), utc_text(nxt[1]))])


def _moving(
    rules: Sequence[CompiledRule], moved: Mapping[str, set[str]] | None, contact_id: str
) -> list[CompiledRule]:
    """The relative rules whose anchor may have moved for a contact that got events of the
    types ``moved[contact_id]`` (all of them when ``moved`` is None: a load, a rebuild)."""
    if moved is None:
        return list(rules)
    types = moved.get(contact_id, set())
    return [
        rule
        for rule in rules
        if rule.anchor is None
        or rule.anchor.spec is None
        or rule.anchor.spec.moved_by is None
        or not rule.anchor.spec.moved_by.isdisjoint(types)
    ]


def rebuild_anchors(store: Store, book: RuleBook, now: datetime | None = None) -> int:
    """After a load: compute every contact's anchors for relative rules that are new or changed.

    A rule whose anchor and offset are unchanged keeps its rows (and what already fired).
    A new recurring rule starts at ``now``: past anniversaries are not replayed.
    Returns the number of contacts scanned.
    """
    known = store.read().anchor_definitions()
    stale = [r for r in book.relative if known.get((r.ruleset, r.id)) != anchor_definition(r)]
    if not stale:
        return 0
    scanned, last = 0, ""
    with store.write() as tx:
        for rule in stale:
            tx.reset_anchor_rule(rule.ruleset, rule.id, anchor_definition(rule))
    narrowed = RuleBook(stages=book.stages, relative=stale, documents=book.documents)
    while True:
        with store.write() as tx:
            rows = tx.contacts_after(last, CHUNK)
            if not rows:
                return scanned
            contacts = [Contact.model_validate_json(data) for _, data in rows]
            refresh_anchors(tx, narrowed, contacts, since=now)
            scanned += len(rows)
            last = rows[-1][0]


def sweep_anchors(store: Store, book: RuleBook, now: datetime, report: TimeReport) -> None:
    """Fire every pending anchor whose time has come, once, in fire-time order.

    Each chunk is one concurrent write: on a store many workers share, the anchors it takes
    are held by it (others pass over them) and fired with their decisions in one commit; an
    anchor whose contact another transaction holds right now is left for the next pump."""
    rules = {(r.ruleset, r.id): r for r in book.relative}
    now_text = utc_text(now)
    if not store.read().due_anchors(now_text, 1):
        return  # a read, not the write lock, when nothing is due (most pumps)
    while True:
        fired, chunk = retry_conflicts(partial(_sweep_chunk, store, rules, book, now))
        report.add(chunk)
        if not fired:
            return


def _sweep_chunk(
    store: Store,
    rules: Mapping[tuple[str, str], CompiledRule],
    book: RuleBook,
    now: datetime,
) -> tuple[int, TimeReport]:
    """Fire one chunk of due anchors in one write: how many anchors it closed, and what it
    did (counted afresh by each attempt: a conflict rolled the last one back)."""
    now_text = utc_text(now)
    chunk = TimeReport()
    with store.write(concurrent=True) as tx:
        due = tx.due_anchors(now_text, CHUNK)
        free = tx.lock_contacts({row[2] for row in due}, wait=False)
        due = [row for row in due if row[2] in free]
        if not due:
            return 0, chunk
        contacts = {
            cid: Contact.model_validate_json(data)
            for cid, data in tx.load_contacts({row[2] for row in due}).items()
        }
        fires: list[Fire] = []
        for ruleset, rule_id, contact_id, entity, anchor_at, fire_at in due:
            key = (ruleset, rule_id, contact_id, entity)
            rule, contact = rules.get((ruleset, rule_id)), contacts.get(contact_id)
            if rule is None or contact is None:
                gone = "rule" if rule is None else "contact"
                tx.close_anchor(key, status="skipped", note=f"the {gone} no longer exists")
                chunk.anchors_skipped += 1
                continue
            fire_time = datetime.fromisoformat(fire_at)
            stale = _stale_after(rule)
            if stale is not None and now - fire_time > stale:
                note: str | None = (
                    f"due {fire_at[:19]}Z, more than {stale} ago (stale_after): skipped"
                )
                tx.close_anchor(key, status="skipped", note=note)
                chunk.anchors_skipped += 1
                chunk.notes.append(f"{ruleset}/{rule_id}/{contact_id}: {note}")
                if isinstance(rule.rule.when, RecurringTrigger):
                    _advance_recurring(tx, rule, contact, key, anchor_at, fire_time, book.documents)
                continue
            hit = _judge(
                rule,
                contact,
                fire_time,
                tx,
                fires,
                f"anchor:{entity}:{anchor_at[:19]}Z",
                f"{rule.trigger_text()} ({(entity + ' ') if entity else ''}{anchor_at[:10]})",
                book.documents,
                entity or None,
            )
            note = _FIRED_NOTES[hit]
            tx.close_anchor(key, status="fired", note=note)
            if isinstance(rule.rule.when, RecurringTrigger):
                _advance_recurring(tx, rule, contact, key, anchor_at, fire_time, book.documents)
            if hit:
                chunk.anchors_fired += 1
            else:
                chunk.anchors_not_matched += 1
        chunk.enqueued += settle(tx, fires, recorded_at=now_text)
    return len(due), chunk


#: A fired anchor's note, by what judging its rule gave (``None``: the evaluation failed).
_FIRED_NOTES: dict[bool | None, str | None] = {
    True: None,
    False: "conditions did not match",
    None: "evaluation failed (see clm explain)",
}


def run_schedules(
    store: Store,
    book: RuleBook,
    now: datetime,
    report: TimeReport,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Run every cron rule's slot that came due since its last run (one run per rule+zone)."""
    for rule in book.scheduled:
        when: ScheduleTrigger = rule.rule.when  # type: ignore[assignment]  # only schedule rules reach here
        zones = store.read().contact_timezones() if when.timezone == "contact" else [when.timezone]
        for zone in zones:
            _run_slot(store, rule, when, zone, now, report, progress, book.documents)


def _run_slot(
    store: Store,
    rule: CompiledRule,
    when: ScheduleTrigger,
    zone: str,
    now: datetime,
    report: TimeReport,
    progress: Callable[[int], None] | None,
    documents: Mapping[str, Mapping[str, Any]],
) -> None:
    """Run the slot of ``rule`` in ``zone`` that came due, or carry on with one under way.

    A run goes chunk by chunk, each chunk one write that judges its contacts and moves the
    schedule's cursor past them: so a run cut short (a crash, a killed worker) carries on
    where it stopped at the next pump, by whichever worker gets there, and judges every
    contact once. While a worker runs a chunk it holds the schedule; others pass it by."""
    seen = store.read().take_schedule(rule.ruleset, rule.id, zone)
    if seen is not None and seen[0] is not None and seen[1] is None:
        first = _first_slot_after(when.schedule, zone, datetime.fromisoformat(seen[0]))
        if first is None or first > now:
            return  # no slot since the last run, none under way: a read (most pumps)
    with store.write(concurrent=True) as tx:
        taken = tx.take_schedule(rule.ruleset, rule.id, zone)
        if taken is None:
            return  # another worker is running a chunk of it
        last, cursor = taken
        if last is None:  # first sight: the clock starts now, past slots are not replayed
            tx.set_schedule_slot(rule.ruleset, rule.id, zone, utc_text(now))
            return
        if cursor is None:  # no run under way: start the latest slot that came due
            slots = due_slots(when.schedule, zone, datetime.fromisoformat(last), now)
            if not slots:
                return
            slot = slots[-1]
            stale = _stale_after(rule)
            if stale is not None and now - slot > stale:
                tx.set_schedule_slot(rule.ruleset, rule.id, zone, utc_text(slot))
                report.slots_skipped += len(slots)
                report.notes.append(
                    f"{rule.ruleset}/{rule.id} ({zone}): slot {utc_text(slot)[:16]}Z is more "
                    f"than {stale} old (stale_after): skipped"
                )
                return
            tx.start_schedule_run(rule.ruleset, rule.id, zone, utc_text(slot))
            report.slots_run += 1
            report.slots_skipped += len(slots) - 1  # coalesced into the latest
        else:
            slot = datetime.fromisoformat(last)  # a run cut short: carry on from the cursor
    more = True
    while more:
        judged, more, chunk = retry_conflicts(
            partial(_slot_chunk, store, rule, when, zone, slot, now, documents)
        )
        report.add(chunk)
        if judged and progress is not None:
            progress(judged)


def _slot_chunk(
    store: Store,
    rule: CompiledRule,
    when: ScheduleTrigger,
    zone: str,
    slot: datetime,
    now: datetime,
    documents: Mapping[str, Mapping[str, Any]],
) -> tuple[int, bool, TimeReport]:
    """Judge the next chunk of a slot's run and move its cursor, in one write: how many
    contacts it judged, whether more remain for this worker (not when the run is over, or
    another worker holds it), and what it did (afresh per attempt)."""
    report = TimeReport()
    slot_text = utc_text(slot)
    with store.write(concurrent=True) as tx:
        taken = tx.take_schedule(rule.ruleset, rule.id, zone)
        if taken is None or taken[1] is None or taken[0] != slot_text:
            return 0, False, report  # held by another worker, or finished (by it) already
        contact_zone = zone if when.timezone == "contact" else None
        rows = tx.contacts_after(taken[1], CHUNK, contact_zone)
        done = len(rows) < CHUNK
        tx.set_schedule_cursor(rule.ruleset, rule.id, zone, None if done else rows[-1][0])
        fires: list[Fire] = []
        occurrence = f"schedule:{slot_text[:16]}Z"
        for _, data in rows:
            _judge(
                rule,
                Contact.model_validate_json(data),
                slot,
                tx,
                fires,
                occurrence,
                f"schedule {when.schedule} ({zone})",
                documents,
            )
        report.enqueued += settle(tx, fires, recorded_at=utc_text(now))
    report.contacts_evaluated += len(rows)
    return len(rows), not done, report


@lru_cache(maxsize=1024)
def _cron(expression: str, zone: str) -> CronTrigger:
    return CronTrigger.from_crontab(expression, timezone=ZoneInfo(zone))


@lru_cache(maxsize=65536)
def _first_slot_after(expression: str, zone: str, after: datetime) -> datetime | None:
    """The first slot after ``after``: asked again on every pump until it comes, so cached."""
    trigger = _cron(expression, zone)
    previous, moment = None, after
    while True:
        nxt: datetime | None = trigger.get_next_fire_time(previous, moment)
        if nxt is None or nxt > after:
            return nxt
        previous, moment = nxt, nxt + timedelta(seconds=1)


def due_slots(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    """The cron slots in (after, until], in UTC (at most 1,000: older ones coalesce anyway)."""
    first = _first_slot_after(expression, zone, after)
    if first is None or first > until:
        return []  # the common case on a pump: nothing new since the last slot
    trigger = _cron(expression, zone)
    slots: list[datetime] = []
    previous, moment = None, after
    while True:
        nxt = trigger.get_next_fire_time(previous, moment)
        if nxt is None or nxt > until:
            return [s.astimezone(after.tzinfo) for s in slots]
        if nxt > after:
            slots.append(nxt)
            slots = slots[-1000:]
        previous, moment = nxt, nxt + timedelta(seconds=1)


def _judge(
    rule: CompiledRule,
    contact: Contact,
    moment: datetime,
    tx: StoreTransaction,
    fires: list[Fire],
    occurrence: str,
    trigger: str,
    documents: Mapping[str, Mapping[str, Any]],
    entity: str | None = None,
) -> bool | None:
    """Evaluate a timed rule for one contact at ``moment``; a match joins ``fires``.

    True if it fired, False if not, None if evaluating it failed.

    The compiled evaluator decides (a schedule runs it over every contact); what the condition
    read is recorded only for what will be traced. A plugin fact that raises fails this rule
    for this contact only: traced as an error, never a stuck sweep.
    """
    ctx = FactContext(
        contact=contact,
        now=moment,
        entity=entity,
        stages=rule.compiler.stages,
        count_events=EventCounter(tx, contact.id),
        db=tx.db,
        tables=tx.tables,
        documents=documents,
    )
    try:
        hit = rule.condition is None or bool(_evaluator(rule).matching(ctx))
        if not hit and not rule.trace_all:
            return False
        seen = _evaluator(rule).record(0, ctx)
        limit = limit_entity(rule, ctx) if hit else None
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        fires.append(
            Fire(rule, contact.id, occurrence, trigger, moment, False, None, None, 0, error=reason)
        )
        return None
    fires.append(
        Fire(rule, contact.id, occurrence, trigger, moment, hit, seen, limit, 0, subject=entity)
    )
    return hit


_EVALUATORS: dict[int, tuple[CompiledRule, CompiledConditions]] = {}


def _evaluator(rule: CompiledRule) -> CompiledConditions:
    """The rule's condition compiled once (kept by identity; rules are rebuilt on reload)."""
    entry = _EVALUATORS.get(id(rule))
    if entry is None or entry[0] is not rule:
        if len(_EVALUATORS) > 10_000:
            _EVALUATORS.clear()
        entry = _EVALUATORS[id(rule)] = (rule, rule.compiler.compile([rule.condition]))
    return entry[1]


def _stale_after(rule: CompiledRule) -> timedelta | None:
    spec = getattr(rule.rule.when, "stale_after", None)
    return duration_to_timedelta(spec) if spec else None
