"""Plugins' own tables, declared and reached without SQL: the portable half of the table API.

A plugin declares its tables with :class:`Table`, :class:`Column` and :class:`Index` through
the ``register_tables`` hook; every store turns the declarations into its own DDL and keeps
them up to date by *additive* changes only (a new table, a new column, a new index). A plugin
reads and writes its rows through a :class:`TableAccess` (``ctx.tables["name"]``) with plain
values and mappings: no SQL, no dialect. Every name is checked against the declarations, and
every value is a parameter, so nothing from input ever reaches a statement as text.

What a store must give back (``tests/test_store_protocol.py`` holds each implementation to it):

- **types**: ``text`` (``str``), ``integer`` (``int``), ``real`` (``float``; an ``int`` is
  accepted), ``boolean`` (``bool``), ``json`` (anything JSON can hold; never in ``where``,
  ``order_by`` or keys) and ``timestamp`` (an aware ``datetime`` or ISO 8601 text with an
  offset in; always the fixed-width UTC text ``2026-11-02T10:15:00.000000Z`` out, so text order
  is time order and plugins compare it as text). ``None`` is NULL for every type.
- **where**: ``{column: value}`` is equality (``None``: IS NULL); ``{column: (op, value)}``
  with ``op`` one of ``= != < <= > >= in not-in between``; ``("!=", None)`` is IS NOT NULL;
  ``in`` and ``not-in`` take a collection, ``between`` a pair (both ends included). All the
  conditions must hold. An empty mapping is every row.
- **order_by**: column names, ``"-name"`` for descending; NULL sorts first ascending, last
  descending (SQLite's way; PostgreSQL says ``NULLS FIRST`` / ``NULLS LAST``).
- **conflicts**: ``insert(..., on_conflict="ignore")`` skips a row that would break the primary
  key or any unique constraint (a partial unique index's too); ``upsert(row, key=...)`` updates
  the row whose ``key`` columns (the primary key or a declared unique constraint, never a
  partial index) match.
- **auto-increment keys**: a table whose primary key is one ``Column(..., auto_increment=True)``
  (an ``integer``) numbers its rows: ``insert`` without that column gives the next number and
  returns it (``False`` when ``on_conflict="ignore"`` skipped the row). Numbers only grow.
- **partial unique indexes**: ``Index(cols, unique=True, where={column: value})`` holds among
  the rows that match ``where`` only (equality with a constant, ``None``: IS NULL, or
  ``("!=", None)``): one active code per contact.
- **append-only tables**: ``Table(..., append_only=True)`` refuses ``update``, ``delete`` and
  ``upsert``: a ledger changes by new rows. The one change it allows is an erasure's:
  ``pseudonymise(erasure)`` rewrites the rows that mention an erased contact, in the erasure's
  transaction (``docs/plugin-hooks.md``, ``forget_contact``).
- **aggregates**: ``aggregate(where, group_by=..., sums=...)`` counts the matching rows and sums
  numeric columns per group of ``group_by`` values, ordered by them; without ``group_by``, one
  group (count 0 and sums 0 when nothing matches). Integer sums stay integers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..erasure import keyed_hash
from ..errors import StoreError

if TYPE_CHECKING:
    from ..erasure import Erasure

ColumnType = Literal["text", "integer", "real", "boolean", "json", "timestamp"]
TYPES: tuple[str, ...] = ("text", "integer", "real", "boolean", "json", "timestamp")
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not-in", "between")
OnConflict = Literal["error", "ignore"]

#: Names a store may put in a statement: plain identifiers, checked when declared.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}\Z")
#: Tables and indexes the core owns (or SQLite keeps): a plugin may not declare these names.
_RESERVED_PREFIXES = ("sqlite_", "_", "clm_")
_CORE_TABLES = frozenset(
    {
        "contacts",
        "events",
        "stage_transitions",
        "ingest_failures",
        "outbox",
        "traces",
        "rule_fires",
        "rulesets",
        "ruleset_sets",
        "anchors",
        "anchor_rules",
        "schedules",
        "erasures",
        "runtime_status",
    }
)


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError(
            f"{what} {name!r} is not a portable name: lower-case letters, digits and '_', "
            "starting with a letter, at most 63 characters"
        )
    return name


@dataclass(frozen=True)
class Column:
    """One column: its name, portable type, whether it may be NULL, and its default.

    A column added to a table that already exists must be nullable or have a default (the
    rows already there need a value)."""

    name: str
    type: ColumnType
    nullable: bool = True
    default: Any = None
    #: The table's key, numbered by the store: ``insert`` without it returns the new number.
    auto_increment: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, "column")
        if self.type not in TYPES:
            raise StoreError(f"column {self.name!r}: type {self.type!r} is not one of {TYPES}")
        if self.auto_increment and (self.type != "integer" or self.default is not None):
            raise StoreError(
                f"column {self.name!r}: an auto_increment column is an integer with no default"
            )
        if self.default is not None:
            if self.type == "json":
                raise StoreError(f"column {self.name!r}: a json column cannot have a default")
            to_store(self, self.default)  # a default of the wrong type is refused here


@dataclass(frozen=True)
class Index:
    """An index on ``columns`` (in order), ``unique`` or not; ``name`` defaults to
    ``<table>_by_<columns>``.

    ``where`` makes it partial: only the rows matching it are indexed (a unique one holds
    among them alone). It is ``{column: value}`` with a constant ``value`` (``str``, ``int``,
    ``bool``; ``None``: IS NULL) or ``("!=", None)`` (IS NOT NULL), kept as sorted pairs. A
    store file that has an index of the same name already counts as having it."""

    columns: tuple[str, ...]
    unique: bool = False
    name: str | None = None
    where: Mapping[str, Any] | tuple[tuple[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        if not self.columns:
            raise StoreError("an index needs at least one column")
        if self.name is not None:
            _check_name(self.name, "index")
        if self.where is not None:
            pairs = self.where.items() if isinstance(self.where, Mapping) else self.where
            where = tuple(sorted(((str(k), v) for k, v in pairs), key=lambda pair: pair[0]))
            if not where:
                raise StoreError("a partial index's where needs at least one condition")
            for name, value in where:
                if not (
                    value is None or value == ("!=", None) or isinstance(value, str | int | bool)
                ):
                    raise StoreError(
                        f"index where {name!r}: a constant (text, integer, boolean), None or "
                        f"('!=', None); got {value!r}"
                    )
            object.__setattr__(self, "where", where)

    @property
    def conditions(self) -> tuple[tuple[str, Any], ...]:
        """The partial index's ``where`` as sorted (column, value) pairs (empty: a full one)."""
        return self.where if isinstance(self.where, tuple) else ()


@dataclass(frozen=True)
class Table:
    """A plugin's table, as it is now: the store adds what a store file lacks of it.

    ``primary_key`` names one or more columns (NOT NULL whatever ``nullable`` says);
    ``unique`` lists further unique constraints (each a tuple of columns), which ``upsert`` may
    use as its key; ``indexes`` are for the reads the plugin makes. Names are checked here,
    once, so every statement a store builds from them is safe.
    """

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    indexes: tuple[Index, ...] = ()
    #: What the table holds, for ``clm plugins`` and the docs.
    description: str = ""
    #: Rows are only ever added: ``update``, ``delete`` and ``upsert`` are refused (a ledger).
    append_only: bool = False
    by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "table")
        if self.name in _CORE_TABLES or self.name.startswith(_RESERVED_PREFIXES):
            raise StoreError(f"table name {self.name!r} belongs to the engine; prefix yours")
        for attr in ("columns", "primary_key", "indexes"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        object.__setattr__(self, "unique", tuple(tuple(u) for u in self.unique))
        by_name: dict[str, Column] = {}
        for column in self.columns:
            if column.name in by_name:
                raise StoreError(f"table {self.name!r} declares column {column.name!r} twice")
            by_name[column.name] = column
        object.__setattr__(self, "by_name", by_name)
        if not self.primary_key:
            raise StoreError(f"table {self.name!r} needs a primary key")
        for columns in (self.primary_key, *self.unique, *(i.columns for i in self.indexes)):
            for name in columns:
                column = self.column(name)
                if column.type == "json":
                    raise StoreError(f"{self.name}.{name}: a json column cannot be in a key")
        automatic = [c.name for c in self.columns if c.auto_increment]
        if automatic and (len(automatic) > 1 or self.primary_key != tuple(automatic)):
            raise StoreError(
                f"table {self.name!r}: an auto_increment column is the whole primary key "
                f"(got {automatic} in a key of {list(self.primary_key)})"
            )
        for index in self.indexes:
            for name, value in index.conditions:
                column = self.column(name)
                if column.type == "json":
                    raise StoreError(f"{self.name}.{name}: json cannot be in an index's where")
                if value is not None and value != ("!=", None):
                    to_store(column, value)  # a constant of the wrong type is refused here

    @property
    def auto_key(self) -> str | None:
        """The auto_increment column, if the table has one."""
        return next((c.name for c in self.columns if c.auto_increment), None)

    def column(self, name: str) -> Column:
        """The declared column ``name``; anything else is a :class:`StoreError`."""
        try:
            return self.by_name[name]
        except (KeyError, TypeError):
            raise StoreError(
                f"table {self.name!r} has no column {name!r}; it has {list(self.by_name)}"
            ) from None

    def index_name(self, index: Index) -> str:
        if index.name:
            return index.name
        name = f"{self.name}_by_{'_'.join(index.columns)}"
        if index.conditions:
            name += "_where_" + "_".join(n for n, _ in index.conditions)
        return name[:63]

    def conflict_keys(self) -> list[tuple[str, ...]]:
        """What ``upsert`` may conflict on: the primary key and every unique constraint (a
        partial unique index is not one: it holds among some rows only)."""
        return [
            self.primary_key,
            *self.unique,
            *(i.columns for i in self.indexes if i.unique and not i.conditions),
        ]


# -- values, both ways ---------------------------------------------------------------------------


#: The fixed-width UTC text itself: taken as it is (the common case, and 20x cheaper).
_CANONICAL = re.compile(r"\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-6]\d\.\d{6}Z\Z")


def timestamp_text(value: datetime | str) -> str:
    """A timestamp as the fixed-width UTC text every store gives back."""
    if isinstance(value, str):
        if _CANONICAL.match(value):
            return value
        try:
            value = datetime.fromisoformat(
                value.replace("Z", "+00:00", 1) if value[-1:] == "Z" else value
            )
        except ValueError:
            raise StoreError(f"{value!r} is not an ISO 8601 time") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise StoreError(f"a timestamp needs an aware datetime or text with an offset: {value!r}")
    text = value.isoformat(timespec="microseconds")
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def encoder(column: Column) -> Callable[[Any], Any]:
    """``to_store`` for one column, as a function of the value alone (for hot paths)."""
    name, kind = column.name, column.type

    def wrong(value: Any) -> StoreError:
        return StoreError(f"column {name!r} is {kind}; got {type(value).__name__} {value!r}")

    if kind == "text":

        def text(value: Any) -> Any:
            if value is None or type(value) is str or isinstance(value, str):
                return value
            raise wrong(value)

        return text
    if kind == "integer":

        def integer(value: Any) -> Any:
            if value is None or type(value) is int:
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return int(value)
            raise wrong(value)

        return integer
    if kind == "timestamp":
        return lambda value: None if value is None else timestamp_text(value)
    return lambda value: to_store(column, value)


def to_store(column: Column, value: Any) -> Any:
    """Check ``value`` against the column's portable type; what a store's driver receives
    for all but ``json`` (which each store encodes its own way) and ``boolean`` (likewise)."""
    if value is None:
        return None
    kind = column.type
    if kind == "text":
        ok = isinstance(value, str)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "real":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "timestamp":
        return timestamp_text(value)
    else:  # json: anything the store's encoder takes
        ok = True
    if not ok:
        raise StoreError(f"column {column.name!r} is {kind}; got {type(value).__name__} {value!r}")
    return value


# -- what plugins call -----------------------------------------------------------------------


class TableAccess(Protocol):
    """One declared table's rows, in the transaction (or the read view) it was taken from.

    Every method checks its column names against the declaration and passes values as
    parameters. Rows come back as plain ``dict``s of the declared columns (or ``columns``)."""

    @property
    def schema(self) -> Table: ...

    def insert(self, row: Mapping[str, Any], *, on_conflict: OnConflict = "error") -> int:
        """Add a row; ``on_conflict="ignore"`` skips it if it breaks a key. Whether it was added
        (``True``/``False``); for a table with an auto_increment key, the new row's key (a
        positive ``int``), or ``False`` when skipped."""
        ...

    def insert_many(
        self, rows: Iterable[Mapping[str, Any]], *, on_conflict: OnConflict = "error"
    ) -> int:
        """Add rows (every row with the same columns) in one batch; how many were added."""
        ...

    def upsert(
        self,
        row: Mapping[str, Any],
        *,
        key: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
    ) -> None:
        """Insert ``row``, or update the row that has its ``key`` values (the primary key by
        default; a declared unique constraint otherwise): ``update`` names the columns set
        then (by default every column of ``row`` outside the key)."""
        ...

    def rows(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        columns: Sequence[str] | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
        for_update: bool = False,
    ) -> list[dict[str, Any]]:
        """The rows matching ``where``. ``for_update``: the caller will write what it read (a
        read-modify-write), so a store with concurrent writers locks the rows; SQLite's write
        transaction already holds the only write lock."""
        ...

    def one(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        columns: Sequence[str] | None = None,
        order_by: Sequence[str] = (),
        for_update: bool = False,
    ) -> dict[str, Any] | None:
        """The first row matching ``where`` (in ``order_by``), or ``None``."""
        ...

    def count(self, where: Mapping[str, Any] | None = None) -> int: ...

    def aggregate(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        group_by: Sequence[str] = (),
        sums: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Per group of ``group_by`` values (in their order): those values, ``count`` (the
        matching rows) and the sum of each of ``sums`` (numeric columns) under its own name.
        Without ``group_by``, one group, with 0 for the count and the sums of no rows."""
        ...

    def update(
        self,
        where: Mapping[str, Any],
        values: Mapping[str, Any] | None = None,
        *,
        add: Mapping[str, int | float] | None = None,
    ) -> int:
        """Set ``values`` and add ``add`` (numbers, atomically: ``sent = sent + 1``) in the rows
        matching ``where``; how many rows matched."""
        ...

    def delete(self, where: Mapping[str, Any]) -> int:
        """Remove the rows matching ``where`` (``{}``: all); how many."""
        ...

    def pseudonymise(self, erasure: Erasure) -> int:
        """Rewrite every text and JSON value that mentions the erased contact (their id, an
        address, a name, a value ``erasure.rename`` named) to the erasure's pseudonym, in the
        rows of other contacts (delete the contact's own rows first); how many rows changed,
        also reported to ``erasure.pseudonymised``. An append-only table's rows are rewritten
        too: an erasure is the one change a ledger takes. Only inside a ``forget_contact``
        hook's transaction."""
        ...


class Tables(Protocol):
    """The declared tables, by name: ``tables["warranty_products"]``. A name nobody declared is
    a :class:`StoreError`; so is a write through a read-only view (``Store.tables``)."""

    def __getitem__(self, name: str) -> TableAccess: ...

    def __contains__(self, name: object) -> bool: ...

    @property
    def names(self) -> list[str]: ...

    def erasure_hash(self, value: str) -> str | None:
        """The keyed hash an erasure keeps of ``value`` in this store (``None`` without a
        key): what a plugin looks up to recognise an erased value it must still honour (an
        opted-out address); during an erasure, ``erasure.keyed_hash`` gives the same."""
        ...


# -- checking what callers pass ------------------------------------------------------------------


def check_where(table: Table, where: Mapping[str, Any] | None) -> list[tuple[Column, str, Any]]:
    """``where`` as (column, operator, value-as-stored) triples, every part checked."""
    found: list[tuple[Column, str, Any]] = []
    for name, condition in (where or {}).items():
        column = table.column(name)
        if column.type == "json":
            raise StoreError(f"{table.name}.{name} is json: it cannot be in a where")
        if isinstance(condition, tuple):
            if len(condition) != 2 or condition[0] not in OPERATORS:
                raise StoreError(
                    f"{table.name}.{name}: a condition is (op, value) with op in {OPERATORS}; "
                    f"got {condition!r}"
                )
            op, value = condition
        else:
            op, value = "=", condition
        if op in ("in", "not-in"):
            if isinstance(value, str | bytes) or not isinstance(value, Collection):
                raise StoreError(f"{table.name}.{name}: {op!r} takes a collection of values")
            value = [to_store(column, v) for v in value]
        elif op == "between":
            if not isinstance(value, tuple | list) or len(value) != 2:
                raise StoreError(f"{table.name}.{name}: 'between' takes a pair (low, high)")
            value = (to_store(column, value[0]), to_store(column, value[1]))
        else:
            if value is None and op not in ("=", "!="):
                raise StoreError(f"{table.name}.{name}: {op!r} None compares with nothing")
            value = to_store(column, value)
        found.append((column, op, value))
    return found


def check_order(table: Table, order_by: Sequence[str]) -> list[tuple[str, bool]]:
    """``order_by`` as (column, descending) pairs."""
    if isinstance(order_by, str):
        order_by = [order_by]
    found = []
    for item in order_by:
        descending = isinstance(item, str) and item.startswith("-")
        name = item[1:] if descending else item
        if table.column(name).type == "json":
            raise StoreError(f"{table.name}.{name} is json: it cannot order rows")
        found.append((name, descending))
    return found


def check_columns(table: Table, columns: Iterable[str] | None) -> list[str]:
    if columns is None:
        return list(table.by_name)
    names = [table.column(name).name for name in columns]
    if not names:
        raise StoreError(f"{table.name}: ask for at least one column")
    return names


def check_aggregate(
    table: Table, group_by: Sequence[str], sums: Sequence[str]
) -> tuple[list[str], list[str]]:
    """``group_by`` and ``sums`` checked: comparable columns to group by, numbers to sum."""
    if isinstance(group_by, str):
        group_by = [group_by]
    if isinstance(sums, str):
        sums = [sums]
    grouped = [table.column(name).name for name in group_by]
    summed = [table.column(name).name for name in sums]
    for name in grouped:
        if table.column(name).type == "json":
            raise StoreError(f"{table.name}.{name} is json: it cannot group rows")
    for name in summed:
        if table.column(name).type not in ("integer", "real"):
            raise StoreError(f"{table.name}.{name} is {table.column(name).type}: sums take numbers")
    names = [*grouped, *summed, "count"]
    if len(set(names)) != len(names):
        raise StoreError(f"{table.name}: an aggregate's names must differ (and not be 'count')")
    return grouped, summed


def searched_columns(table: Table) -> list[Column]:
    """The columns that can hold a person's identifier: text and JSON."""
    return [column for column in table.columns if column.type in ("text", "json")]


def rewritten(table: Table, row: Mapping[str, Any], erasure: Erasure) -> dict[str, Any] | None:
    """``row`` (every column, as read) with each value that mentions the erased contact
    rewritten, or ``None`` when no value does (the store's text search only finds candidates:
    ``erasure`` decides, as it does for the core's tables)."""
    changed = False
    result = dict(row)
    for column in searched_columns(table):
        value = row.get(column.name)
        if value is None:
            continue
        if column.type == "text":
            if isinstance(value, str) and erasure.mentions(value):
                result[column.name] = erasure.rewrite_text(value)
                changed = True
        else:
            new = erasure.rewrite(value)
            if new != value:
                result[column.name] = new
                changed = True
    return result if changed else None


def mention_search(
    table: Table, erasure: Erasure, test: Callable[[str, bool], str]
) -> tuple[str, list[Any]]:
    """A ``WHERE`` condition finding the rows whose text or JSON columns may mention the
    erased contact, and its parameters; ``test(quoted column, folded)`` is the dialect's
    "contains" (``instr``, ``strpos``). Empty when the table has no such column."""
    tests, args = [], []
    for column in searched_columns(table):
        for term, folded in erasure.search_terms():
            tests.append(test(quote(column.name), folded))
            args.append(term)
    return " OR ".join(tests), args


def pseudonymise_rows(
    table: Table,
    rows: Iterable[dict[str, Any]],
    erasure: Erasure,
    replace: Callable[[dict[str, Any], dict[str, Any]], None],
) -> int:
    """Rewrite the ``rows`` found by :func:`mention_search` that do mention the contact:
    ``replace(old, new)`` deletes the old row by its key and inserts the new one (not an
    update: a ledger's rows may refuse updates, and a renamed key changes). How many changed,
    reported to ``erasure.pseudonymised``."""
    changed = 0
    for row in rows:
        new = rewritten(table, row, erasure)
        if new is not None:
            replace(row, new)
            changed += 1
    erasure.pseudonymised(table.name, changed)
    return changed


def key_of(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's primary key values, as a ``where``."""
    return {name: row[name] for name in table.primary_key}


def check_writable(table: Table, what: str) -> None:
    """An ``update``, ``delete`` or ``upsert`` of an append-only table is refused."""
    if table.append_only:
        raise StoreError(
            f"{table.name} is append-only: no {what} (add a row that records the change)"
        )


def check_key(table: Table, key: Sequence[str] | None) -> tuple[str, ...]:
    if key is None:
        return table.primary_key
    wanted = tuple(key)
    for candidate in table.conflict_keys():
        if set(candidate) == set(wanted):
            return candidate
    raise StoreError(
        f"{table.name}: {list(wanted)} is not its primary key or a unique constraint "
        f"(those are {[list(k) for k in table.conflict_keys()]})"
    )


def check_tables(tables: Iterable[Table]) -> dict[str, Table]:
    """Declarations by name; one name declared twice is an error."""
    found: dict[str, Table] = {}
    for table in tables:
        if not isinstance(table, Table):
            raise StoreError(f"{table!r} is not a clm_engine Table")
        if table.name in found and found[table.name] != table:
            raise StoreError(f"table {table.name!r} is declared twice, differently")
        found[table.name] = table
    return found


__all__ = [
    "Column",
    "ColumnType",
    "Index",
    "OnConflict",
    "Table",
    "TableAccess",
    "Tables",
]


# -- what both stores' implementations share -----------------------------------------------------


def read_erasure_key(conn: Any) -> bytes | None:
    """The store's erasure key (random, made by the core's schema), if any: what keys the
    hashes an erasure keeps. The same statement in both dialects, on a DB-API connection."""
    row = conn.execute("SELECT key FROM erasure_key WHERE id = 1").fetchone()
    return bytes.fromhex(row[0]) if row else None


def quote(name: str) -> str:
    """A declared name as an SQL identifier. Names were checked when declared
    (``[a-z][a-z0-9_]*``); quoting keeps keywords usable. The same in both dialects."""
    return f'"{name}"'


def index_steps(
    table: Table,
    indexes: Sequence[tuple[tuple[str, ...], bool]],
    named: Collection[str],
    index_where: Callable[[Table, Index], str],
) -> list[tuple[str, str]]:
    """The unique constraints and indexes ``table`` declares that the store lacks, as
    (``table:change``, SQL). ``indexes`` are the store's (columns, unique) ones, ``named`` the
    names of its indexes (a partial index is known by its name), ``index_where`` the dialect's
    ``WHERE`` of a partial index."""
    steps: list[tuple[str, str]] = []
    target = quote(table.name)
    for columns in table.unique:
        if not any(unique and set(cols) == set(columns) for cols, unique in indexes):
            name = f"{table.name}_unique_{'_'.join(columns)}"[:63]
            steps.append(
                (
                    f"{table.name}:add unique {name}",
                    f"CREATE UNIQUE INDEX {quote(name)} ON {target} "
                    f"({', '.join(map(quote, columns))})",
                )
            )
    for index in table.indexes:
        name = table.index_name(index)
        if index.conditions:
            if name in named:
                continue
        elif any(
            cols == index.columns and (unique or not index.unique) for cols, unique in indexes
        ):
            continue
        steps.append(
            (
                f"{table.name}:add index {name}",
                f"CREATE {'UNIQUE ' if index.unique else ''}INDEX {quote(name)} ON {target} "
                f"({', '.join(map(quote, index.columns))})"
                + (index_where(table, index) if index.conditions else ""),
            )
        )
    return steps


class DeclaredTables:
    """The declared tables, by name, of one view of a store (a write transaction, or read
    only): what :class:`Tables` promises, with the opening of one table's access left to the
    store (``_access``) and each access kept for the view's life (it caches its statements)."""

    def __init__(self, declared: Mapping[str, Table], *, writable: bool) -> None:
        self.declared = declared
        self.writable = writable
        self._open: dict[str, TableAccess] = {}
        #: The store's erasure key once read: made once with the schema and never changed,
        #: and asked for on every suppression check (a read per email otherwise).
        self._erasure_key: bytes | None = None

    def _access(self, table: Table) -> TableAccess:
        raise NotImplementedError

    def _read_erasure_key(self) -> bytes | None:
        """The store's erasure key, read from it (``read_erasure_key`` on its connection)."""
        raise NotImplementedError

    def erasure_hash(self, value: str) -> str | None:
        if self._erasure_key is None:
            self._erasure_key = self._read_erasure_key()
        key = self._erasure_key
        return keyed_hash(key, value) if key is not None else None

    def __getitem__(self, name: str) -> TableAccess:
        access = self._open.get(name)
        if access is None:
            table = self.declared.get(name)
            if table is None:
                raise StoreError(
                    f"no declared table {name!r} (a plugin declares its tables with the "
                    f"register_tables hook); declared: {sorted(self.declared)}"
                )
            access = self._open[name] = self._access(table)
        return access

    def __contains__(self, name: object) -> bool:
        return name in self.declared

    @property
    def names(self) -> list[str]:
        return sorted(self.declared)


#: The core's own declared tables whose rows are a contact's (by ``contact_id``): erased by
#: both stores' ``forget`` with the core's tables, through the table API (so on every store).
CORE_TABLES_BY_CONTACT = ("channel_messages",)


def erase_declared_core_tables(tables: Tables, contact_id: str) -> dict[str, int]:
    """Delete a contact's rows from the core's declared tables that exist in this store
    (a store opened without the built-ins has none): rows removed, by table."""
    return {
        name: tables[name].delete({"contact_id": contact_id})
        for name in CORE_TABLES_BY_CONTACT
        if name in tables
    }
