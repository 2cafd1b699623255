"""Every hook a plugin can implement.

Registration hooks take a ``register`` callback (the llm style): the plugin calls it once per
thing it contributes, and the core owns validation and name collisions. Hooks are always called
with keyword arguments; a plugin may accept any subset of them.

Each hook is documented for users in ``docs/plugin-hooks.md``; a test fails when one is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import hookspec

if TYPE_CHECKING:
    import click
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

    from ..erasure import Erasure
    from ..models import Contact, Event
    from ..store import OutboxRow, Table, Tables
    from ..types import Defer, Veto

    Reducer = Callable[[Contact, Event], None]


@hookspec(historic=True)
def register_hookspecs(register: Callable[[object], None]) -> None:
    """Open extension points of the plugin's own: hooks other plugins implement (the email
    plugin's transports, the referral plugin's fraud checks).

    Call ``register(specs)`` with a module or class of functions marked with
    ``clm_engine.hookspec``; they join the engine's plugin manager, so each engine has its own
    implementations, loaded from the same ``clm_engine`` entry point group. Called as each
    plugin registers (a historic hook), before the engine checks every implementation against
    its spec. Read the implementations with ``registry.registrations(hook_name)`` (the
    ``register(...)`` calls, each with the plugin that made it); an action reaches the
    registry as ``ctx.registry``, a command as ``clm_engine.cli.registry_of(ctx)``.
    """


@hookspec
def register_reducers(register: Callable[..., None]) -> None:
    """Contribute reducers: functions that fold an event into a contact's state.

    Call ``register(event_type, reducer, name=None)`` once per reducer. ``event_type`` is an
    event type such as ``"purchase"``, or ``"*"`` for every event. ``reducer(contact, event)``
    mutates ``contact`` (a :class:`clm_engine.Contact`) in place and returns nothing.

    A reducer must depend only on the contact and the event, because the engine re-folds a
    contact's whole history in time order when an event arrives late. If it raises, the event is
    not stored, the contact is left as it was, and the failure is recorded with its reason.
    ``name`` defaults to ``"<plugin>.<function name>"``; two reducers with one name are a
    :class:`PluginError` at load.
    """


@hookspec
def register_event_handlers(register: Callable[..., None]) -> None:
    """Contribute event handlers: functions that keep the plugin's own tables from events.

    Call ``register(event_type, handler, name=None)`` (``"*"`` for every event).
    ``handler(tables, contact, event)`` is called once per *newly stored* event (never for a
    duplicate, never again when a late event makes the engine re-fold a contact's history),
    after the event's reducers, inside the write transaction that stores the event, and before
    the rules the event triggers are evaluated, so facts reading the plugin's tables see its
    effect. ``tables`` are the plugins' declared tables in that transaction (a handler whose
    first parameter is named ``db`` gets the ``sqlite_utils.Database`` instead, as before the
    table API; SQLite only); ``contact`` is the
    contact after the event was folded: read it, never change it (a re-fold would lose the
    change). Events from outside and events emitted by actions both pass through.

    If the handler raises, the event is not stored, every write the handlers made for the
    contact's batch is rolled back, and the failure is recorded like a reducer's. Why a separate
    hook from reducers: a reducer must depend only on the contact and the event (it is replayed),
    while a handler records facts that span contacts (who referred whom, which products exist).
    """


@hookspec
def register_tables(register: Callable[[Table], None]) -> None:
    """Declare the plugin's own tables, in a form every store understands.

    Call ``register(table)`` once per :class:`clm_engine.Table` (name, columns with portable
    types, primary key, unique constraints, indexes), as the table is *now*: when an engine
    opens a store, and on ``clm migrate``, the store creates what is missing and adds the
    columns and indexes a table lacks, in one write with the core's migrations. Changes are
    additive only: a column's type or a primary key never changes, nothing is dropped (a store
    refuses with the reason). Rows are reached through ``ctx.tables[name]`` in facts and
    actions, ``tables`` in event handlers and dispatch policies, ``store.tables`` (read only)
    and ``store.write()``'s ``tx.tables`` in commands. Two plugins declaring one table name are
    a :class:`PluginError` at load.
    """


@hookspec
def register_migrations(register: Callable[[Migrations], None]) -> None:
    """Contribute the plugin's own set of database migrations (SQLite only; superseded by
    ``register_tables``, kept for plugins not yet declaring their tables).

    Call ``register(migrations)`` with a ``sqlite_utils.migrations.Migrations`` whose name is
    unique to the plugin (its package name is a good choice). Migrations run when a store is
    opened and by ``clm migrate``; each runs in the store's write transaction. Two sets with one
    name are a :class:`PluginError` at load.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``clm`` command-line tool.

    Decorate functions with ``@cli.command()`` or add a ``click.Group`` with
    ``cli.add_command(group)``; use the plugin's name as the group name (``clm email ...``).
    """


@hookspec
def forget_contact(
    tables: Tables, contact_id: str, erasure: Erasure, db: sqlite_utils.Database
) -> dict[str, int] | None:
    """Erase one contact's personal data from the tables and files the plugin owns (GDPR).

    Called by ``clm contacts forget`` and ``Engine.forget`` inside the same write transaction
    that erases the core's rows, on either store, so the erasure happens everywhere or
    nowhere: do not commit, and raise to stop it (nothing is erased). Delete the contact's
    own rows through ``tables`` (the declared tables, writable); rewrite the rows of other
    contacts that refer to the contact with ``tables[name].pseudonymise(erasure)`` (append-only
    tables too); name files to remove with ``erasure.remove_file(path)`` (removed after the
    commit). ``erasure.identifiers`` (id, email addresses, full names) must be found nowhere
    after the hook: the core checks every table and rolls the erasure back if one still
    mentions them. ``db`` (SQLite only) is for tables made by ``register_migrations``.
    Return a mapping of table name to the number of rows removed (or ``None``).
    """


@hookspec
def register_operators(register: Callable[..., None]) -> None:
    """Contribute condition operators (the ``op`` of a leaf).

    Call ``register(name, test, *, prepare=None, accepts_missing=False, description="",
    fact_types=None, check=None)``. ``fact_types`` names the fact types it can test (``clm
    validate`` refuses it on another; ``docs/plugin-hooks.md``), ``check`` judges a value
    against a fact's type at load. ``test(fact_value, value)``
    returns a bool; it is never called with a missing fact (a missing fact makes a leaf false,
    except for operators registered with ``accepts_missing=True``). ``prepare(value)``, if
    given, runs once when a ruleset loads: it turns the ruleset's ``value`` into what ``test``
    receives (a compiled pattern, a parsed duration) and raises ``ValueError`` with a message
    for an ops person when the value is unusable, which makes the ruleset invalid. ``prepare``
    may return a ``clm_engine.conditions.ContextValue`` for a value that depends on the moment
    of evaluation (like ``"now"``).
    """


@hookspec
def register_facts(register: Callable[..., None]) -> None:
    """Contribute computed facts that conditions can read.

    Call ``register(name, compute, *, type="any", description="", moved_by=None)``:
    ``moved_by`` lists the event types (of the contact) after which the value may change, so
    relative-time anchors on it are recomputed only then (``None``: after any). ``type`` is
    the value's type (number, text, boolean, time, list, mapping, dates; ``any`` is not
    checked), against which ``clm validate`` checks conditions. ``name`` is a dotted path such as
    ``"contact.days_since_signup"``; ``compute(ctx, **args)`` receives a
    :class:`clm_engine.types.FactContext` and the leaf's ``args`` and returns the value, or
    ``clm_engine.types.MISSING``. It is called at most once per contact per evaluation (the
    engine caches it), must not write anything, and must not raise for ordinary data. A
    ``compute.check_args(args)`` attribute, if present, validates a leaf's ``args`` when the
    ruleset loads (raise ``ValueError``).
    """


@hookspec
def register_actions(register: Callable[..., None]) -> None:
    """Contribute actions that rules can call in ``then``.

    Call ``register(name, run, params, *, description="", external=False, simulate=None,
    pure=False)``. ``pure=True``: ``run`` only reads the contact and emits events about it, so a
    late event's re-judgement may recompute or retract its decisions. Say
    ``external=True`` for an action that reaches outside the engine (an email, a webhook): it
    runs outside the write lock, and simulations record it instead of running it, or run
    ``simulate(ctx, params)`` if given: in the transaction, reaching nothing outside, emitting
    what ``run`` would, so a backtest sees its effects (a frequency cap counting sends).
    ``params`` is a pydantic model (declare ``model_config = ConfigDict(extra="forbid")``) that
    validates the rule's ``with`` when the ruleset loads. ``run(ctx, params)`` runs inline while
    its event is ingested (an internal action with no ``after``) or when it is dispatched;
    ``ctx`` gives the contact, the idempotency key and ``ctx.emit(type,
    properties)`` for effects on contact state, which commit together with the action being
    marked done. ``run`` may raise: the action is retried with backoff, then dead-lettered; the
    engine goes on.
    """


@hookspec
def register_documents(register: Callable[..., None]) -> None:
    """Contribute a kind of JSON document that ops teams keep beside the rulesets.

    Call ``register(kind, model, *, check=None, description="")``. A JSON file in the ruleset
    paths whose top-level object has the key ``kind`` (``{"sequence": "onboarding", ...}``) is
    a document of that kind, named by that key's value; ``$schema`` is allowed. ``model`` is a
    pydantic model (declare ``extra="forbid"``) that validates the document; its problems are
    reported like a ruleset's, with file, line, column and JSON pointer, by ``clm validate``
    and at every load. ``check(document, context)`` may return ``(json_pointer, message)``
    pairs for what a model cannot know; ``context`` has ``actions``, ``facts``, ``operators``,
    ``stages`` and ``documents`` (every loaded document, by kind and name).

    Loaded documents reach facts and actions as ``ctx.documents[kind][name]``. An action's
    params model may define a classmethod ``check_references(params, documents)`` returning
    messages: each becomes a problem at that action's ``with`` (a sequence name misspelt).
    """


@hookspec
def dispatch_policy(
    action: str,
    params: dict[str, Any],
    contact: Contact,
    now: datetime,
    db: sqlite_utils.Database,
    tables: Tables,
    entity: str | None,
    key: str,
    ruleset: str,
    rule: str,
    in_flight: Callable[[], list[OutboxRow]],
) -> Veto | Defer | None:
    """Decide whether an action may run now (consent, quiet hours, frequency caps ...).

    Called for every action about to be dispatched, inside the dispatch write transaction
    (``tables``, the declared tables, for reading what the plugin keeps; never write in a
    policy; ``db`` is the same transaction as a ``sqlite_utils.Database``, SQLite only).
    ``entity`` is what the action is about (a product id) if not the contact, ``key`` the
    outbox row's idempotency key, ``ruleset`` and ``rule`` where it came from.
    ``in_flight()`` lists the contact's outbox rows that a worker holds right now (external
    actions claimed and on their way, not yet recorded): count them with what was sent, or two
    sends due together would both slip under a frequency cap. Accept the arguments you need.
    Return ``None`` to let it run, ``Veto(reason)`` to stop it (recorded with the reason, never
    silently dropped) or ``Defer(until, reason)`` to run it later. Every plugin is asked: any
    veto wins, else the
    latest deferral wins.
    """


@hookspec(firstresult=True)
def map_segment_message(message: dict[str, Any], received_at: datetime) -> Any:
    """Turn one message of Segment's HTTP tracking spec into clm-engine events (``clm serve``'s
    ``/v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``,
    ``/v1/alias`` and each item of ``/v1/batch``).

    ``message`` is the JSON object as received (with ``type`` set from the endpoint when the
    sender left it out); ``received_at`` is when the server got it (UTC). Return one event in
    the engine's shape (a mapping with ``contact_id``, ``type``, ``occurred_at``, optionally
    ``id`` and ``properties``), a list of them (an empty list accepts the message and stores
    nothing), or ``None`` to leave the message to the next plugin. Raise ``ValueError`` with a
    reason to refuse it: the sender gets the reason, as a rejection. Stops at the first
    non-None result; the built-in mapping (``docs/http.md``) runs last.
    """


@hookspec(firstresult=True)
def check_unsubscribe_token(contact_id: str, token: str) -> bool | None:
    """Say whether ``token`` proves an unsubscribe link was made for ``contact_id``.

    Called by ``clm serve``'s unsubscribe endpoints (the one-click ``POST`` of RFC 8058 and
    the page a person opens) before they record an ``unsubscribed`` event. Return ``True``
    (valid), ``False`` (made by you, and wrong) or ``None`` (not yours). Stops at the first
    non-None result; with no answer the link is refused. The email plugin answers for the
    links it signs; compare in constant time (``hmac.compare_digest``).
    """
