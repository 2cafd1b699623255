"""Small types that plugins, conditions, actions and the engine share.

Kept apart from ``models.py`` (pydantic data) because these are runtime contracts: what a fact
function, an operator or an action receives, and what a dispatch policy may answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .models import Contact, Event

if TYPE_CHECKING:
    from .store.tables import Tables


class _Missing:
    """The value of a fact that is not there: not ``None`` (which is a value), not an error.

    Comparisons against it are false; ``exists`` is false and ``is_null`` is true.
    """

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass
class FactContext:
    """What a condition is evaluated over: one contact, at one moment, for one occurrence.

    ``event`` is the triggering event (``None`` for schedules and relative-time triggers);
    ``transition`` is ``{"from": ..., "to": ...}`` for stage-change triggers. ``count_events``
    answers ``events.count`` (the engine supplies it, backed by the store). ``cache`` holds
    computed facts already loaded for this context, so a fact used by several rules is loaded
    once per contact.
    """

    contact: Contact
    now: datetime
    event: Event | None = None
    transition: dict[str, str | None] | None = None
    count_events: Callable[[str, datetime | None], int] | None = None
    stages: tuple[str, ...] = ()
    cache: dict[Any, Any] = field(default_factory=dict)
    #: For a rule timed on a plugin's entity (a product's warranty end): that entity's id, so
    #: the plugin's facts (``product.has_service_agreement``) know which one is meant.
    entity: str | None = None
    #: The core's analytics facts read their tables through it (``store.analytics``); a
    #: plugin's facts read ``tables``.
    db: Any = None
    #: The plugins' declared tables (``clm_engine.Tables``) in the current transaction: read
    #: them, never write in a fact. ``None`` when there is no store.
    tables: Tables | None = None
    #: Plugin documents loaded beside the rulesets (catalogues, sequences): kind -> name -> model.
    documents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Veto:
    """A dispatch policy's answer: do not run this action, for this reason (it is recorded)."""

    reason: str


@dataclass(frozen=True)
class Defer:
    """A dispatch policy's answer: not now; try again at ``until`` (never a silent skip)."""

    until: datetime
    reason: str


@dataclass
class ActionContext:
    """What an action's ``run(ctx, params)`` receives when it is dispatched.

    ``emit(type, properties)`` records an event about the contact (or, with ``contact_id``,
    about another one: the referrer a reward credits); the engine applies it (reducers, event
    handlers and the rules it triggers) in the same transaction that marks the action done, so
    an internal effect happens exactly once. Emitted ids derive from ``key``.

    ``tables`` are the plugins' declared tables (``clm_engine.Tables``) in the write
    transaction the action runs in (ingest, inline; or dispatch), for an internal action's own
    rows: its writes commit with the action, or roll back with it. It is ``None`` while an
    external action runs, because that runs outside the write lock.

    ``enqueue(action, params, due_at=..., occurrence=...)`` puts a follow-up action in the
    outbox (a drip sequence's next step), once: its key derives from this action's key.
    """

    contact: Contact
    key: str
    now: datetime
    ruleset: str
    rule: str
    stages: tuple[str, ...] = ()
    emitted: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    tables: Tables | None = None
    #: The engine's plugins (``clm_engine.Registry``): a plugin's own extension points are
    #: read through ``ctx.registry.registrations(hook_name)`` (``register_hookspecs``).
    registry: Any = None
    #: The entity the rule fired for (a product id), or ``None`` for the contact itself.
    entity: str | None = None
    documents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    attempt: int = 1  # 1 on the first run, 2 on the first retry ...
    params_raw: dict[str, Any] = field(default_factory=dict)
    enqueued: list[dict[str, Any]] = field(default_factory=list)
    #: When the action was due: the triggering event's time for an immediate rule, the step's
    #: time for a delayed one. Date what the action records by it (never later than ``now``),
    #: so windows follow the customer's time line, not the moment a worker got to the row.
    due_at: datetime | None = None
    load_contact: Callable[[str], Contact | None] | None = field(default=None, repr=False)
    #: The names of the registered actions: what ``enqueue`` can hand work to (an offer's
    #: email, when the email plugin is installed).
    actions: frozenset[str] = frozenset()
    #: The engine's conditions (``clm_engine.conditions.checker.Conditions``): see ``holds``.
    conditions: Any = field(default=None, repr=False)
    #: The event that triggered the decision (an event or stage-change rule's action, run
    #: inline or at dispatch), or ``None``: what an email template shows as
    #: ``{{ event.properties.* }}``, and what a loyalty earn reads an order's amount from.
    event: Event | None = None
    #: ``events.count`` for ``holds`` (set while the action runs in a transaction).
    count_events: Callable[[str, datetime | None], int] | None = field(default=None, repr=False)
    #: See ``veto_now``: set by dispatch for an external action run outside the lock.
    ask_policies_again: Callable[[], str | None] | None = field(default=None, repr=False)

    def veto_now(self) -> str | None:
        """Every dispatch policy asked again, on the contact as committed right now: the
        veto's reason (consent withdrawn, an address suppressed), or ``None``.

        An external action calls it last, right before it reaches outside (after rendering
        an email, before the SMTP conversation begins), and returns ``{"vetoed": reason}``
        if there is one: an unsubscribe that committed while the action prepared still stops
        it. Inline, in the dispatch transaction, or in a simulation, the policies were asked in
        the same transaction, and this is ``None``."""
        return self.ask_policies_again() if self.ask_policies_again is not None else None

    def holds(self, condition: Any) -> bool:
        """Whether a condition (a ``clm_engine.Condition`` from a plugin's document, like a
        sequence's exit condition) holds for this contact now, judged with the engine's
        operators and facts."""
        if self.conditions is None:
            raise RuntimeError("this context has no engine conditions to judge with")
        ctx = FactContext(
            contact=self.contact,
            now=self.now,
            event=self.event,
            stages=tuple(self.stages),
            tables=self.tables,
            documents=self.documents,
            entity=self.entity,
            count_events=self.count_events,
        )
        return bool(self.conditions.holds(condition, ctx))

    def contact_of(self, contact_id: str) -> Contact | None:
        """Another contact as stored now (the referrer of a reward), or ``None`` if unknown.

        Only for internal actions: an external action runs outside the transaction."""
        if self.load_contact is None:
            raise RuntimeError("contact_of() is for internal actions (ctx.tables is set)")
        return self.load_contact(contact_id)

    def emit(
        self, type: str, properties: dict[str, Any] | None = None, *, contact_id: str | None = None
    ) -> None:
        self.emitted.append((type, dict(properties or {}), contact_id))

    def enqueue(
        self,
        action: str,
        params: dict[str, Any],
        *,
        due_at: datetime,
        occurrence: str,
        entity: str | None = None,
    ) -> None:
        if due_at.tzinfo is None:
            raise ValueError("enqueue needs an aware due_at (UTC or with a zone)")
        if not occurrence or "/" in occurrence:
            raise ValueError(f"enqueue needs an occurrence without '/' (got {occurrence!r})")
        self.enqueued.append(
            {
                "action": action,
                "params": dict(params),
                "due_at": due_at,
                "occurrence": occurrence,
                "entity": entity,
            }
        )
