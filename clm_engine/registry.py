"""One engine's plugins: a pluggy ``PluginManager`` of its own, and what its plugins register.

A :class:`Registry` is built once (by ``Engine`` unless one is handed to it) and read by
everything that needs a plugin: evaluation, dispatch, timed rules, simulation, validation,
the CLI and the contexts plugins receive. There is no process-wide plugin state: two engines
with different plugins live side by side in one process, and a test gives its engine the
plugins it wants (``Engine(path, plugins=[MyPlugin()])``) instead of registering them
somewhere global and remembering to undo it.

Every hook is called through ``pm.hook``, so pluggy's wrappers (``@hookimpl(wrapper=True)``),
tracing and call monitoring see every call. A registration hook's ``register`` callback still
knows which plugin is registering: it finds the calling implementation on the stack (see
:func:`_owner`), which a plain hook call cannot tell it otherwise.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from importlib import metadata
from types import CodeType, FrameType, ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import pluggy

from .erasure import Erasure
from .errors import PluginError
from .hooks import specs
from .plugins import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    ActionSpec,
    DocumentKind,
    FactSpec,
    Names,
    OperatorSpec,
    PluginInfo,
    Reducers,
    action_spec,
    distribution_of,
    document_kind_spec,
    fact_spec,
    load_entry_points,
    operator_spec,
)
from .types import Veto

if TYPE_CHECKING:
    import click
    from sqlite_utils.migrations import Migrations

    from .store.tables import Table, Tables

#: pluggy's project name for the engine's hooks (``HookimplMarker("clm_engine")``).
PROJECT = "clm_engine"

Plugins = Iterable[object] | Mapping[str, object]


class Registry:
    """The plugins of one engine and everything they register, each read once.

    ``plugins``: extra plugin objects or modules (each under pluggy's canonical name, a
    module's ``__name__``) or a mapping ``{name: plugin}``, registered after the built-ins
    (``builtins=True``) and the installed distributions of the ``clm_engine`` entry point
    group (``installed=True``, honouring ``CLM_LOAD_PLUGINS``). A plugin already loaded from
    its entry point is not registered twice. Registrations are read lazily and kept: a
    :class:`PluginError` (two plugins claiming one action) is raised by the first reader, which
    for an ``Engine`` is its constructor.

    One registry may serve many engines (a web server opening an engine per request): it is
    read-only once built.
    """

    def __init__(self, plugins: Plugins = (), *, builtins: bool = True, installed: bool = True):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(specs)
        # Plugins' own extension points join as each plugin registers (a historic hook).
        self.pm.hook.register_hookspecs.call_historic(kwargs={"register": self._add_hookspecs})
        self._calls: dict[str, list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = {}
        #: Plugins that failed to import: name -> reason. Shown by ``clm plugins``; never fatal.
        self.load_failures: dict[str, str] = {}
        #: Where each entry-point plugin came from: name -> (distribution, version).
        self.distributions: dict[str, tuple[str, str]] = {}
        if builtins:
            for module_name in DEFAULT_PLUGINS:
                self.pm.register(importlib.import_module(module_name), module_name)
        if installed:
            found = load_entry_points(
                self.pm, ENTRY_POINT_GROUP, what="plugin", failures=self.load_failures
            )
            self.distributions.update({k: v for k, v in found.items() if v is not None})
        named = plugins.items() if isinstance(plugins, Mapping) else self._named(plugins)
        for name, plugin in named:
            self._add(plugin, name)
        self.pm.check_pending()

    def _add_hookspecs(self, hookspecs: ModuleType | type) -> None:
        """A plugin's own hooks (``register_hookspecs``); one already declared is a clash."""
        try:
            self.pm.add_hookspecs(hookspecs)
        except ValueError as error:  # pluggy: "Hook 'x' is already registered ..."
            raise PluginError(f"register_hookspecs: {error}") from None

    def _named(self, plugins: Iterable[object]) -> list[tuple[str, object]]:
        return [(self.pm.get_canonical_name(plugin), plugin) for plugin in plugins]

    def _add(self, plugin: object, name: str) -> None:
        if self.pm.is_registered(plugin):  # loaded from its entry point already
            return
        other = self.pm.get_plugin(name)
        if other is not None:
            raise PluginError(
                f"two plugins named {name!r}: {other!r} and {plugin!r}; give one another name "
                "(plugins={'other-name': plugin})"
            )
        self.pm.register(plugin, name=name)

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    # -- what the plugins register ---------------------------------------------------------

    @cached_property
    def actions(self) -> dict[str, ActionSpec]:
        """Every registered action, by name; each with the pydantic model of its parameters."""
        return self._collect("register_actions", "action", action_spec)

    @cached_property
    def facts(self) -> dict[str, FactSpec]:
        """Every registered computed fact, by its dotted name."""
        return self._collect("register_facts", "fact", fact_spec)

    @cached_property
    def operators(self) -> dict[str, OperatorSpec]:
        """Every registered condition operator, by name."""
        return self._collect("register_operators", "operator", operator_spec)

    @cached_property
    def document_kinds(self) -> dict[str, DocumentKind]:
        """Every kind of plugin document, by the top-level key that marks it."""
        return self._collect("register_documents", "document kind", document_kind_spec)

    @cached_property
    def reducers(self) -> Reducers:
        """Every reducer, by event type, in the order they run."""
        return self._by_event_type("register_reducers", "reducer")

    @cached_property
    def event_handlers(self) -> Reducers:
        """Every event handler (``handler(tables, contact, event)``), by event type."""
        return self._by_event_type("register_event_handlers", "event handler")

    @cached_property
    def tables(self) -> list[Table]:
        """Every plugin's declared tables (``register_tables``), in registration order."""
        from .store.tables import Table

        names = Names("table")
        found = []
        for plugin, args, kwargs in self._registrations("register_tables"):
            table = args[0] if len(args) == 1 and not kwargs else None
            if not isinstance(table, Table):
                raise PluginError(
                    f"plugin {plugin!r}: register_tables takes register(Table(...)), "
                    f"got {args!r} {kwargs!r}"
                )
            names.claim(table.name, plugin)
            found.append(table)
        return found

    @cached_property
    def migrations(self) -> list[Migrations]:
        """Every plugin's migration set, core first."""
        from sqlite_utils.migrations import Migrations

        def check(plugin: str, migrations: Migrations) -> Migrations:
            if not isinstance(migrations, Migrations):
                raise PluginError(
                    f"plugin {plugin!r} registered {migrations!r}, "
                    "not a sqlite_utils.migrations.Migrations"
                )
            return migrations

        names = Names("migration set")
        sets = []
        for plugin, args, kwargs in self._registrations("register_migrations"):
            migrations = check(plugin, *args, **kwargs)
            names.claim(migrations.name, plugin)
            sets.append(migrations)
        return sets

    def _collect(self, hook_name: str, kind: str, build: Callable[..., Any]) -> dict[str, Any]:
        """Specs by name, each checked by ``build(plugin, *args, **kwargs)``; a second claim of
        a name is a :class:`PluginError` naming both plugins."""
        found: dict[str, Any] = {}
        names = Names(kind)
        for plugin, args, kwargs in self._registrations(hook_name):
            spec = build(plugin, *args, **kwargs)
            names.claim(spec.name, plugin)
            found[spec.name] = spec
        return found

    def _by_event_type(self, hook_name: str, kind: str) -> Reducers:
        found = Reducers()
        names = Names(kind)
        for plugin, args, kwargs in self._registrations(hook_name):
            event_type, handler, name = _event_handler(plugin, kind, *args, **kwargs)
            names.claim(name, plugin)
            target = found.any_type if event_type == "*" else found.by_type[event_type]
            target.append((name, handler))
        return found

    def registrations(self, hook_name: str) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        """What the plugins registered through a registration hook (``register_...``,
        the core's or a plugin's own from ``register_hookspecs``): each ``register(...)`` call
        as ``(plugin, args, kwargs)``, in the plugins' order. Asked once per hook (a registry
        is read-only once built); a hook that raises is a :class:`PluginError` naming the
        plugin."""
        found = self._calls.get(hook_name)
        if found is None:
            if getattr(self.pm.hook, hook_name, None) is None:
                raise PluginError(f"no hook {hook_name!r} is declared")
            found = self._calls[hook_name] = self._registrations(hook_name)
        return list(found)

    def _registrations(
        self, hook_name: str, caller: pluggy.HookCaller | None = None
    ) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        """Call a registration hook through pluggy; each ``register(...)`` call as (plugin,
        args, kwargs), in the plugins' registration order (built-ins first; pluggy calls the
        last registered first), so reducers run in a stable, documented order."""
        caller = caller or getattr(self.pm.hook, hook_name)
        impls = caller.get_hookimpls()
        order = {impl.plugin_name: index for index, impl in enumerate(impls)}
        owners = _owners(impls)
        calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

        def register(*args: Any, **kwargs: Any) -> None:
            calls.append((_owner(owners, sys._getframe(1)), args, kwargs))

        try:
            caller(register=register)
        except PluginError:
            raise
        except Exception as error:
            plugin = _owner_in_traceback(owners, error.__traceback__)
            raise PluginError(
                f"plugin {plugin!r}: {hook_name} failed: {type(error).__name__}: {error}"
            ) from error
        calls.sort(key=lambda call: order[call[0]])  # stable: a plugin's own order is kept
        return calls

    # -- hooks called at run time ----------------------------------------------------------

    @cached_property
    def has_policies(self) -> bool:
        """Whether any plugin implements ``dispatch_policy``: with none (the core alone), an
        action run inline skips the hook call altogether."""
        return bool(self.pm.hook.dispatch_policy.get_hookimpls())

    def dispatch_policy(self, **kwargs: Any) -> list[Any]:
        """Every plugin's answer (``Veto``, ``Defer`` or ``None``) about dispatching an action
        now. A policy that raises is a veto naming its plugin: an action a policy could not
        clear must not go out (consent may be what it was checking)."""
        if not self.has_policies:
            return []
        try:
            return list(self.pm.hook.dispatch_policy(**kwargs))
        except Exception as error:
            owners = _owners(self.pm.hook.dispatch_policy.get_hookimpls())
            plugin = _owner_in_traceback(owners, error.__traceback__)
            return [Veto(f"policy of plugin {plugin!r} failed: {error!r}")]

    def forget_contact(self, tables: Tables, db: Any, erasure: Erasure) -> dict[str, int]:
        """Ask every plugin to erase one contact; rows removed, by table (plugins own their
        tables, so a table names its plugin). A plugin that raises stops the erasure (the
        caller's transaction rolls back), as a :class:`PluginError` naming the plugin."""
        removed: dict[str, int] = {}
        try:
            results = self.pm.hook.forget_contact(
                tables=tables, contact_id=erasure.contact_id, erasure=erasure, db=db
            )
        except Exception as error:
            owners = _owners(self.pm.hook.forget_contact.get_hookimpls())
            plugin = _owner_in_traceback(owners, error.__traceback__)
            raise PluginError(
                f"plugin {plugin!r} failed to erase the contact ({error!r}); nothing was erased"
            ) from error
        for result in results:
            for table, count in (result or {}).items():
                removed[table] = removed.get(table, 0) + int(count)
        return removed

    def map_segment_message(self, message: dict[str, Any], received_at: Any) -> list[Any]:
        """The events a Segment message stands for (``map_segment_message``): a list of
        mappings, possibly empty. Raises ``ValueError`` with the reason a plugin (or the
        built-in mapping) refused it."""
        mapped = self.pm.hook.map_segment_message(message=message, received_at=received_at)
        if mapped is None:
            raise ValueError(f"no plugin maps Segment messages of type {message.get('type')!r}")
        return list(mapped) if isinstance(mapped, list | tuple) else [mapped]

    def check_unsubscribe_token(self, contact_id: str, token: str) -> bool:
        """Whether a plugin vouches for an unsubscribe link's token; no answer is a no."""
        return self.pm.hook.check_unsubscribe_token(contact_id=contact_id, token=token) is True

    def register_commands(self, cli: click.Group) -> None:
        """Let every plugin add its subcommands to ``cli``."""
        self.pm.hook.register_commands(cli=cli)

    @cached_property
    def commands(self) -> click.Group:
        """The plugins' subcommands of ``clm``, in a group of their own (the ``clm`` group
        serves them from here, so each invocation sees its own registry's commands)."""
        import click

        group = click.Group("clm")
        self.register_commands(group)
        return group

    # -- what is loaded, for ``clm plugins`` -----------------------------------------------

    def plugin_info(self) -> list[PluginInfo]:
        """What is loaded, from where, which hooks each plugin implements, and what it
        registers that has no spec of its own (commands, event handlers, reducers, a policy)."""
        packages = metadata.packages_distributions()
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or []))
            dist = self.distributions.get(name) or distribution_of(plugin, packages)
            source: str
            version: str | None
            if name in self.distributions:
                source, version = self.distributions[name]
            elif name in DEFAULT_PLUGINS:
                source, version = "built-in", dist[1] if dist else None
            else:  # registered in code by the host application (or a test)
                source = getattr(plugin, "__name__", None) or type(plugin).__module__
                version = dist[1] if dist else None
            found = self._registered_by(name, plugin)
            infos.append(
                PluginInfo(
                    name,
                    source,
                    version,
                    hooks,
                    distribution=dist[0] if dist else None,
                    commands=found["commands"],
                    event_handlers=tuple(found["event_handlers"]),
                    reducers=tuple(found["reducers"]),
                    policy=found["policy"],
                    problems=tuple(found["problems"]),
                )
            )
        return infos

    def _registered_by(self, plugin_name: str, plugin: object) -> dict[str, Any]:
        """What one plugin registers that no spec records, asked of that plugin alone (pluggy's
        ``subset_hook_caller``), so one plugin's broken hook does not hide another's."""
        import click

        others = [p for _, p in self.pm.list_name_plugin() if p is not None and p is not plugin]
        found: dict[str, Any] = {"commands": (), "policy": None, "problems": []}
        for hook_name, key, kind in (
            ("register_event_handlers", "event_handlers", "event handler"),
            ("register_reducers", "reducers", "reducer"),
        ):
            caller = self.pm.subset_hook_caller(hook_name, others)
            found[key] = []
            if not caller.get_hookimpls():
                continue
            try:
                for _, args, kwargs in self._registrations(hook_name, caller):
                    event_type, _, name = _event_handler(plugin_name, kind, *args, **kwargs)
                    found[key].append((event_type, name))
            except PluginError as error:
                found["problems"].append(str(error))
        commands = self.pm.subset_hook_caller("register_commands", others)
        if commands.get_hookimpls():
            scratch = click.Group("clm")
            try:
                commands(cli=scratch)
                found["commands"] = tuple(sorted(scratch.commands))
            except Exception as error:  # a broken plugin must not hide the others
                found["problems"].append(
                    f"plugin {plugin_name!r}: register_commands failed: "
                    f"{type(error).__name__}: {error}"
                )
        for impl in self.pm.subset_hook_caller("dispatch_policy", others).get_hookimpls():
            doc = (impl.function.__doc__ or "").strip().splitlines()
            found["policy"] = doc[0] if doc else ""
        return found


def _event_handler(
    plugin: str, kind: str, event_type: str, handler: Callable[..., Any], name: str | None = None
) -> tuple[str, Callable[..., Any], str]:
    """A reducer's or event handler's registration, checked: (event type, function, name),
    the name defaulting to ``plugin.function_name``."""
    if not isinstance(event_type, str) or not event_type:
        raise PluginError(f"plugin {plugin!r} registered a {kind} without an event type")
    if not callable(handler):
        raise PluginError(f"plugin {plugin!r} registered a {kind} that is not callable")
    return event_type, handler, name or f"{plugin}.{getattr(handler, '__name__', kind)}"


def _owners(impls: Iterable[pluggy.HookImpl]) -> dict[CodeType, str]:
    """Each implementation's code object -> its plugin's name."""
    owners: dict[CodeType, str] = {}
    for impl in impls:
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            owners.setdefault(code, impl.plugin_name)
    return owners


def _owner(owners: Mapping[CodeType, str], frame: FrameType | None) -> str:
    """The plugin whose hook implementation is running below ``frame``: the nearest frame on
    the stack that runs an implementation's code. A helper function the implementation calls
    is fine; a ``register`` kept and called after the hook returned is not."""
    while frame is not None:
        owner = owners.get(frame.f_code)
        if owner is not None:
            return owner
        frame = frame.f_back
    raise PluginError("register() was called outside a registration hook")


def _owner_in_traceback(owners: Mapping[CodeType, str], tb: TracebackType | None) -> str:
    """The plugin whose implementation raised: the innermost implementation frame."""
    owner = "?"
    while tb is not None:
        owner = owners.get(tb.tb_frame.f_code, owner)
        tb = tb.tb_next
    return owner
