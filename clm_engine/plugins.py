"""What plugins register, checked: the specs of actions, facts, operators and documents, and
the loader of installed plugins.

Built-in behaviour lives in ``clm_engine.builtins`` and is registered exactly like a third-party
plugin. Installed distributions are discovered through the ``clm_engine`` entry point group.
``CLM_LOAD_PLUGINS`` (comma-separated entry point or distribution names) is an allow-list; set
to an empty string it loads no external plugin at all. Each engine's plugins and the calls to
their hooks live in its :class:`clm_engine.registry.Registry`.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, get_args

import pluggy

from .errors import PluginError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .models import Contact, Event

    Reducer = Callable[[Contact, Event], None]

ENTRY_POINT_GROUP = "clm_engine"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "clm_engine.builtins.reducers",
    "clm_engine.builtins.operators",
    "clm_engine.builtins.facts",
    "clm_engine.builtins.actions",
    "clm_engine.builtins.segment",
    "clm_engine.builtins.surveys",
    "clm_engine.builtins.channels",
    "clm_engine.analytics.facts",
    "clm_engine.builtins.experiments",
)


def load_entry_points(
    manager: pluggy.PluginManager,
    group: str,
    *,
    what: str = "plugin",
    failures: dict[str, str] | None = None,
) -> dict[str, tuple[str, str] | None]:
    """Register the installed plugins of an entry-point ``group`` with ``manager``.

    The one loader for the engine's plugins and for plugins of plugins (the email plugin's
    transports, the referral plugin's fraud checks). It honours ``CLM_LOAD_PLUGINS`` (an
    allow-list of entry point or distribution names; empty loads none), skips names already
    registered or blocked, and reports a plugin that fails to import on stderr and in
    ``failures`` (if given) instead of raising: a broken plugin must not take the engine down.
    Returns what it registered: name -> (distribution, version), if known.
    """
    allow = os.environ.get("CLM_LOAD_PLUGINS")
    allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
    registered: dict[str, tuple[str, str] | None] = {}
    if allowed == set():  # none allowed: not even worth reading the installed metadata
        return registered
    for entry_point in metadata.entry_points(group=group):
        dist_name = entry_point.dist.name if entry_point.dist else None
        if allowed is not None and not ({entry_point.name, dist_name} & allowed):
            continue
        name = entry_point.name
        if manager.get_plugin(name) is not None or manager.is_blocked(name):
            continue
        try:
            manager.register(entry_point.load(), name=name)
        except Exception as error:  # a broken plugin must not take the engine down
            reason = f"{type(error).__name__}: {error}"
            if failures is not None:
                failures[name] = reason
            print(f"clm: {what} {name!r} failed to load and was skipped: {reason}", file=sys.stderr)
            continue
        dist = entry_point.dist
        registered[name] = (dist.name, dist.version) if dist is not None else None
    return registered


@dataclass
class Reducers:
    """Reducers by event type, in the order they run: ``"*"`` reducers first, then by plugin."""

    by_type: dict[str, list[tuple[str, Reducer]]] = field(default_factory=lambda: defaultdict(list))
    any_type: list[tuple[str, Reducer]] = field(default_factory=list)
    _cache: dict[str, list[tuple[str, Reducer]]] = field(default_factory=dict)

    def for_type(self, event_type: str) -> list[tuple[str, Reducer]]:
        found = self._cache.get(event_type)
        if found is None:
            found = self._cache[event_type] = self.any_type + self.by_type.get(event_type, [])
        return found


class Names:
    """Names already claimed, and by which plugin: a second claim is a PluginError naming both."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.owners: dict[str, str] = {}

    def claim(self, name: str, plugin_name: str) -> None:
        owner = self.owners.get(name)
        if owner is not None:
            raise PluginError(
                f"{self.kind} {name!r} is registered by both plugin {owner!r} and plugin "
                f"{plugin_name!r}; rename one of them or uninstall a plugin"
            )
        self.owners[name] = plugin_name


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin: where it comes from and what it registered.

    ``source`` is ``"built-in"``, the distribution of an entry-point plugin, or the module of
    a plugin registered in code; ``distribution`` / ``version`` name the installed
    distribution that ships it (``clm-engine`` for the built-ins), if any. Actions, facts,
    operators and document kinds carry their plugin in their specs (``get_actions()`` ...);
    what has no spec is listed here.
    """

    name: str
    source: str
    version: str | None
    hooks: tuple[str, ...]
    distribution: str | None = None
    #: Subcommands it adds to ``clm`` (``register_commands``).
    commands: tuple[str, ...] = ()
    #: (event type, name) of each event handler and reducer it registers.
    event_handlers: tuple[tuple[str, str], ...] = ()
    reducers: tuple[tuple[str, str], ...] = ()
    #: The first line of its ``dispatch_policy`` docstring, if it implements one ("" if none
    #: is documented); None if it implements none.
    policy: str | None = None
    #: What went wrong reading its registrations (a registration hook that raised).
    problems: tuple[str, ...] = ()


def distribution_of(plugin: object, packages: Mapping[str, list[str]]) -> tuple[str, str] | None:
    """(name, version) of the installed distribution a plugin object's module comes from."""
    module = getattr(plugin, "__name__", None) if isinstance(plugin, ModuleType) else None
    module = module or type(plugin).__module__
    for dist_name in packages.get(module.split(".")[0], []):
        try:
            return dist_name, metadata.version(dist_name)
        except metadata.PackageNotFoundError:
            continue
    return None


#: What kind of value a fact holds, as declared when it is registered (and known for the
#: contact's own paths): what ``clm validate`` checks a condition's operator and value against.
#: ``"any"`` (the default) means not declared: nothing is checked. ``"dates"`` is a mapping of
#: entity id to date (``{"p-17": "2027-03-01"}``), for relative-time triggers per entity.
FactType = Literal["any", "number", "text", "boolean", "time", "list", "mapping", "dates"]
FACT_TYPES: tuple[str, ...] = get_args(FactType)


@dataclass(frozen=True)
class OperatorSpec:
    """A condition operator: ``test(fact_value, value) -> bool``; ``prepare(value)`` at load.

    ``fact_types``: the fact types it can test (``None``: any); ``check(fact_type, value)``
    returns why a ruleset's ``value`` does not suit a fact of that declared type, or ``None``.
    """

    name: str
    test: Callable[[Any, Any], bool]
    prepare: Callable[[Any], Any] | None
    accepts_missing: bool
    description: str
    plugin: str
    fact_types: frozenset[str] | None = None
    check: Callable[[str, Any], str | None] | None = None


@dataclass(frozen=True)
class FactSpec:
    """A computed fact: ``compute(ctx, **args)``, where ``ctx`` is a ``FactContext``;
    ``type`` is the kind of value it returns (:data:`FactType`, ``"any"`` if undeclared).

    ``moved_by``: the event types after which its value may differ (a warranty's end date
    moves on ``product.registered`` and ``warranty.extended``), or ``None``: any event may
    move it. A relative-time rule counting from the fact recomputes a contact's anchors only
    after such an event, instead of asking the fact (often a query) for every contact an
    ingested batch touches."""

    name: str
    compute: Callable[..., Any]
    description: str
    plugin: str
    type: str = "any"
    moved_by: frozenset[str] | None = None


@dataclass(frozen=True)
class ActionSpec:
    """An action: ``run(ctx, params)``, with ``params`` validated by the ``Params`` model."""

    name: str
    run: Callable[..., Any]
    params: type[BaseModel]
    description: str
    plugin: str
    external: bool = False  # reaches outside the engine (an email): not run by simulations
    #: What a simulation runs instead of ``run`` for an external action: in the transaction,
    #: reaching nothing outside, emitting what ``run`` would (an ``email.sent``), so policies
    #: that count what went out (frequency caps) work in a backtest too.
    simulate: Callable[..., Any] | None = None
    #: Reads only ``ctx.contact`` and emits events about that contact, nothing else: its
    #: effect is a function of the contact's history, so a late event that re-judges the
    #: history may recompute (or retract) it. The core's stage, score, tag, attribute and
    #: event actions are pure.
    pure: bool = False


@dataclass(frozen=True)
class DocumentKind:
    """A kind of JSON document a plugin reads from the ruleset paths (a sequence, a catalogue).

    A file whose top-level object has the key ``name`` is one; ``model`` (pydantic) validates
    it, ``check(document, context)`` (optional) returns ``(pointer, message)`` pairs, the
    document's problems; ``warn(document, context)`` (optional) returns the same pairs for
    what is valid but probably not meant (``clm validate``'s warnings).
    """

    name: str
    model: type
    check: Callable[..., Any] | None
    description: str
    plugin: str
    warn: Callable[..., Any] | None = None


def document_kind_spec(
    plugin: str,
    kind: str,
    model: type,
    *,
    check: Callable[..., Any] | None = None,
    description: str = "",
    warn: Callable[..., Any] | None = None,
) -> DocumentKind:
    from pydantic import BaseModel

    if not (isinstance(kind, str) and kind) or kind in ("ruleset", "$schema"):
        raise PluginError(f"plugin {plugin!r} registered a document kind named {kind!r}")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(f"plugin {plugin!r} registered document kind {kind!r} without a model")
    if any(f is not None and not callable(f) for f in (check, warn)):
        raise PluginError(f"plugin {plugin!r} registered document kind {kind!r} badly")
    return DocumentKind(kind, model, check, description, plugin, warn)


def operator_spec(
    plugin: str,
    name: str,
    test: Callable[[Any, Any], bool],
    *,
    prepare: Callable[[Any], Any] | None = None,
    accepts_missing: bool = False,
    description: str = "",
    fact_types: Iterable[str] | None = None,
    check: Callable[[str, Any], str | None] | None = None,
) -> OperatorSpec:
    if not callable(test) or (prepare is not None and not callable(prepare)):
        raise PluginError(f"plugin {plugin!r} registered operator {name!r} badly")
    if check is not None and not callable(check):
        raise PluginError(
            f"plugin {plugin!r} registered operator {name!r} with a check that is not callable"
        )
    types = None
    if fact_types is not None:
        types = frozenset([fact_types] if isinstance(fact_types, str) else fact_types)
        unknown = sorted(types - set(FACT_TYPES))
        if unknown:
            raise PluginError(
                f"plugin {plugin!r} registered operator {name!r} for fact types {unknown}; "
                f"the fact types are {', '.join(FACT_TYPES)}"
            )
    return OperatorSpec(name, test, prepare, accepts_missing, description, plugin, types, check)


def fact_spec(
    plugin: str,
    name: str,
    compute: Callable[..., Any],
    *,
    type: str = "any",
    description: str = "",
    moved_by: Iterable[str] | None = None,
) -> FactSpec:
    if not callable(compute):
        raise PluginError(f"plugin {plugin!r} registered fact {name!r} badly")
    if type not in FACT_TYPES:
        raise PluginError(
            f"plugin {plugin!r} registered fact {name!r} with type {type!r}; the fact types "
            f"are {', '.join(FACT_TYPES)}"
        )
    moving = None
    if moved_by is not None:
        moving = frozenset([moved_by] if isinstance(moved_by, str) else moved_by)
        if not all(isinstance(t, str) and t for t in moving):
            raise PluginError(
                f"plugin {plugin!r} registered fact {name!r} with moved_by {moved_by!r}: "
                "give the event types (strings) after which its value may change"
            )
    return FactSpec(name, compute, description, plugin, type, moving)


def action_spec(
    plugin: str,
    name: str,
    run: Callable[..., Any],
    params: type,
    *,
    description: str = "",
    external: bool = False,
    simulate: Callable[..., Any] | None = None,
    pure: bool = False,
) -> ActionSpec:
    from pydantic import BaseModel

    if not callable(run):
        raise PluginError(f"plugin {plugin!r} registered action {name!r} badly")
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise PluginError(
            f"plugin {plugin!r} registered action {name!r} without a pydantic "
            "model for its parameters"
        )
    if simulate is not None and not (external and callable(simulate)):
        raise PluginError(
            f"plugin {plugin!r} registered action {name!r} with a simulate function: only an "
            "external action has one, and it must be callable"
        )
    if pure and external:
        raise PluginError(
            f"plugin {plugin!r} registered action {name!r} as both pure and external: a pure "
            "action only emits events about the contact, an external one reaches outside"
        )
    return ActionSpec(name, run, params, description, plugin, external, simulate, bool(pure))
