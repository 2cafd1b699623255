"""Plugins' declared tables on PostgreSQL: the table API of ``tables.py``, as ``sqlite_tables.py``
gives it on SQLite, with the same answers (``tests/test_store_protocol.py`` runs on both).

Types: ``text`` is ``text COLLATE "C"`` (byte order, as SQLite sorts), ``integer`` ``bigint``,
``real`` ``double precision``, ``boolean`` ``boolean``, ``json`` ``json`` (kept as written, key
order included) and ``timestamp`` the same fixed-width UTC text as the core's times (text order
is time order; every value is normalised by ``timestamp_text`` on the way in). A table is
created as declared, or completed by additive changes only, as on SQLite.

Two things differ from SQLite because PostgreSQL differs:

* a statement that fails aborts the whole transaction on PostgreSQL, while SQLite goes on: a
  write that can break a key (an insert that does not ignore conflicts, an upsert, an update)
  runs inside a savepoint, so a plugin that catches the ``StoreError`` can go on as on SQLite;
* ``rows(..., for_update=True)`` in a write locks the rows it read (``FOR UPDATE``): another
  engine's read-modify-write of the same rows waits for this transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import psycopg
from pydantic_core import to_json

from ..errors import StoreError
from .tables import (
    Column,
    OnConflict,
    Table,
    check_columns,
    check_key,
    check_order,
    check_where,
    to_store,
)

Connection = psycopg.Connection[tuple[Any, ...]]

_SQL_TYPES = {
    "text": 'text COLLATE "C"',
    "integer": "bigint",
    "real": "double precision",
    "boolean": "boolean",
    "json": "json",
    "timestamp": 'text COLLATE "C"',
}
#: What ``information_schema.columns.data_type`` says for each.
_DATA_TYPES = {
    "text": "text",
    "integer": "bigint",
    "real": "double precision",
    "boolean": "boolean",
    "json": "json",
    "timestamp": "text",
}


def _q(name: str) -> str:
    # Names were checked when declared (``[a-z][a-z0-9_]*``); quoting keeps keywords usable.
    return f'"{name}"'


def _param(column: Column, value: Any) -> Any:
    value = to_store(column, value)
    if value is not None and column.type == "json":
        try:
            return to_json(value).decode()
        except Exception as error:  # pydantic-core: what JSON cannot hold
            raise StoreError(f"column {column.name!r} is json; {error}") from None
    return value


def _placeholder(column: Column) -> str:
    return "%s::json" if column.type == "json" else "%s"


def _literal(column: Column) -> str:
    """A column's default as SQL text (from a checked value of its type, never from input)."""
    value = _param(column, column.default)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _column_sql(table: Table, column: Column) -> str:
    sql = f"{_q(column.name)} {_SQL_TYPES[column.type]}"
    if not column.nullable or column.name in table.primary_key:
        sql += " NOT NULL"
    if column.default is not None:
        sql += f" DEFAULT {_literal(column)}"
    return sql


def plan_tables(conn: Connection, tables: Iterable[Table]) -> list[tuple[str, str]]:
    """What creating or completing each declared table takes, as (``table:change``, SQL)."""
    steps: list[tuple[str, str]] = []
    for table in tables:
        existing = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            [table.name],
        ).fetchall()
        if not existing:
            parts = [_column_sql(table, c) for c in table.columns]
            parts.append(f"PRIMARY KEY ({', '.join(map(_q, table.primary_key))})")
            parts.extend(f"UNIQUE ({', '.join(map(_q, u))})" for u in table.unique)
            steps.append(
                (
                    f"{table.name}:create table",
                    f"CREATE TABLE {_q(table.name)} ({', '.join(parts)})",
                )
            )
            indexes: list[tuple[tuple[str, ...], bool]] = [(u, True) for u in table.unique]
        else:
            indexes = _indexes(conn, table.name)
            primary = next((cols for cols, _unique, is_pk in _keys(conn, table.name) if is_pk), ())
            if primary != table.primary_key:
                raise StoreError(
                    f"table {table.name!r} exists with primary key {list(primary)}, not "
                    f"{list(table.primary_key)}: a store changes tables only by adding to them"
                )
            steps.extend(_complete(table, dict(existing)))
        for columns in table.unique:
            if not any(unique and set(cols) == set(columns) for cols, unique in indexes):
                name = f"{table.name}_unique_{'_'.join(columns)}"[:63]
                steps.append(
                    (
                        f"{table.name}:add unique {name}",
                        f"CREATE UNIQUE INDEX {_q(name)} ON {_q(table.name)} "
                        f"({', '.join(map(_q, columns))})",
                    )
                )
        for index in table.indexes:
            if not any(
                cols == index.columns and (unique or not index.unique) for cols, unique in indexes
            ):
                name = table.index_name(index)
                steps.append(
                    (
                        f"{table.name}:add index {name}",
                        f"CREATE {'UNIQUE ' if index.unique else ''}INDEX {_q(name)} "
                        f"ON {_q(table.name)} ({', '.join(map(_q, index.columns))})",
                    )
                )
    return steps


def ensure_tables(conn: Connection, tables: Iterable[Table]) -> list[str]:
    """Create or complete each declared table (in the caller's write); what was done."""
    steps = plan_tables(conn, tables)
    for _, sql in steps:
        conn.execute(sql)
    return [what for what, _ in steps]


def _complete(table: Table, existing: Mapping[str, str]) -> list[tuple[str, str]]:
    steps = []
    for column in table.columns:
        found = existing.get(column.name)
        if found is not None:
            if found != _DATA_TYPES[column.type]:
                raise StoreError(
                    f"column {table.name}.{column.name} exists as {found}, not {column.type} "
                    f"({_SQL_TYPES[column.type]})"
                )
            continue
        if not column.nullable and column.default is None:
            raise StoreError(
                f"cannot add column {table.name}.{column.name} to a table that exists: a new "
                "column must be nullable or have a default"
            )
        steps.append(
            (
                f"{table.name}:add column {column.name}",
                f"ALTER TABLE {_q(table.name)} ADD COLUMN {_column_sql(table, column)}",
            )
        )
    return steps


def _keys(conn: Connection, table: str) -> list[tuple[tuple[str, ...], bool, bool]]:
    """(columns, unique, primary) of every full (not partial) index on ``table``."""
    rows = conn.execute(
        "SELECT i.indisunique, i.indisprimary, ARRAY(SELECT a.attname::text FROM "
        "unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n) "
        "FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indpred IS NULL",
        [_q(table)],
    ).fetchall()
    return [(tuple(columns), bool(unique), bool(primary)) for unique, primary, columns in rows]


def _indexes(conn: Connection, table: str) -> list[tuple[tuple[str, ...], bool]]:
    return [(columns, unique) for columns, unique, _ in _keys(conn, table)]


class PostgresTables:
    """The declared tables of one PostgreSQL transaction (or, read only, of the pool)."""

    def __init__(
        self,
        connection: Callable[[], AbstractContextManager[Connection]],
        declared: Mapping[str, Table],
        *,
        writable: bool,
    ) -> None:
        self._connection = connection
        self.declared = declared
        self.writable = writable
        self._open: dict[str, PostgresTableAccess] = {}

    def __getitem__(self, name: str) -> PostgresTableAccess:
        access = self._open.get(name)
        if access is None:
            table = self.declared.get(name)
            if table is None:
                raise StoreError(
                    f"no declared table {name!r} (a plugin declares its tables with the "
                    f"register_tables hook); declared: {sorted(self.declared)}"
                )
            access = self._open[name] = PostgresTableAccess(self._connection, table, self.writable)
        return access

    def __contains__(self, name: object) -> bool:
        return name in self.declared

    @property
    def names(self) -> list[str]:
        return sorted(self.declared)


class PostgresTableAccess:
    """One declared table's rows on PostgreSQL."""

    def __init__(
        self,
        connection: Callable[[], AbstractContextManager[Connection]],
        table: Table,
        writable: bool,
    ) -> None:
        self._connection = connection
        self._table = table
        self.writable = writable
        self._name = _q(table.name)

    @property
    def schema(self) -> Table:
        return self._table

    # -- running ---------------------------------------------------------------------------

    @contextmanager
    def _guarded(self, conn: Connection) -> Iterator[None]:
        """A savepoint around a write that can break a key: the transaction goes on after a
        caught error, as SQLite's does. A key broken is a StoreError naming the table."""
        try:
            with conn.transaction() if self.writable else nullcontext():
                yield
        except psycopg.errors.IntegrityError as error:
            raise StoreError(f"{self._table.name}: {error}".strip()) from None

    def _execute(self, sql: str, params: Sequence[Any], *, guard: bool = False) -> int:
        with self._connection() as conn:
            if not guard:
                return conn.execute(sql, params).rowcount
            with self._guarded(conn):
                return conn.execute(sql, params).rowcount

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    # -- writing ---------------------------------------------------------------------------

    def _writing(self) -> None:
        if not self.writable:
            raise StoreError(
                f"{self._table.name}: this view is read only; write in a write transaction "
                "(an action's or handler's ctx.tables, or store.write())"
            )

    def _values(self, row: Mapping[str, Any]) -> tuple[list[Column], list[Any]]:
        if not row:
            raise StoreError(f"{self._table.name}: a row needs at least one column")
        columns = [self._table.column(name) for name in row]
        return columns, [_param(c, row[c.name]) for c in columns]

    def _insert_sql(self, columns: Sequence[Column], on_conflict: OnConflict) -> str:
        if on_conflict not in ("error", "ignore"):
            raise StoreError(f"on_conflict is 'error' or 'ignore' (got {on_conflict!r})")
        return (
            f"INSERT INTO {self._name} ({', '.join(_q(c.name) for c in columns)}) "
            f"VALUES ({', '.join(map(_placeholder, columns))})"
            + (" ON CONFLICT DO NOTHING" if on_conflict == "ignore" else "")
        )

    def insert(self, row: Mapping[str, Any], *, on_conflict: OnConflict = "error") -> bool:
        self._writing()
        columns, values = self._values(row)
        sql = self._insert_sql(columns, on_conflict)
        return self._execute(sql, values, guard=on_conflict == "error") == 1

    def insert_many(
        self, rows: Iterable[Mapping[str, Any]], *, on_conflict: OnConflict = "error"
    ) -> int:
        self._writing()
        rows = list(rows)
        if not rows:
            return 0
        names = list(rows[0])
        columns = [self._table.column(n) for n in names]
        batch = []
        for row in rows:
            if list(row) != names:
                raise StoreError(
                    f"{self._table.name}: insert_many needs the same columns in every row"
                )
            batch.append([_param(c, row[c.name]) for c in columns])
        sql = self._insert_sql(columns, on_conflict)
        with self._connection() as conn, conn.cursor() as cursor:
            if on_conflict == "error":
                with self._guarded(conn):
                    cursor.executemany(sql, batch)
            else:
                cursor.executemany(sql, batch)
            return cursor.rowcount

    def upsert(
        self,
        row: Mapping[str, Any],
        *,
        key: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
    ) -> None:
        self._writing()
        table = self._table
        target = check_key(table, key)
        columns, values = self._values(row)
        missing = [k for k in target if k not in row]
        if missing:
            raise StoreError(f"{table.name}: an upsert's row needs its key columns {missing}")
        names = [c.name for c in columns]
        changed = [n for n in names if n not in target] if update is None else list(update)
        for name in changed:
            if name not in row:
                raise StoreError(f"{table.name}: upsert updates {name!r}, which the row lacks")
        action = (
            "DO UPDATE SET " + ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in changed)
            if changed
            else "DO NOTHING"
        )
        sql = (
            f"INSERT INTO {self._name} ({', '.join(map(_q, names))}) "
            f"VALUES ({', '.join(map(_placeholder, columns))}) "
            f"ON CONFLICT ({', '.join(map(_q, target))}) {action}"
        )
        self._execute(sql, values, guard=True)

    def update(
        self,
        where: Mapping[str, Any],
        values: Mapping[str, Any] | None = None,
        *,
        add: Mapping[str, int | float] | None = None,
    ) -> int:
        self._writing()
        table = self._table
        sets, params = [], []
        for name, value in (values or {}).items():
            column = table.column(name)
            sets.append(f"{_q(name)} = {_placeholder(column)}")
            params.append(_param(column, value))
        for name, amount in (add or {}).items():
            column = table.column(name)
            if column.type not in ("integer", "real"):
                raise StoreError(f"{table.name}.{name} is {column.type}: add takes numbers")
            sets.append(f"{_q(name)} = {_q(name)} + %s")
            params.append(to_store(column, amount))
        if not sets:
            raise StoreError(f"{table.name}: an update needs values or add")
        clause, where_params = self._where(where)
        sql = f"UPDATE {self._name} SET {', '.join(sets)}{clause}"
        return self._execute(sql, [*params, *where_params], guard=True)

    def delete(self, where: Mapping[str, Any]) -> int:
        self._writing()
        clause, params = self._where(where)
        return self._execute(f"DELETE FROM {self._name}{clause}", params)

    # -- reading ---------------------------------------------------------------------------

    def _where(self, where: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        if where is None:
            raise StoreError(f"{self._table.name}: say which rows ({{}} for all)")
        parts: list[str] = []
        params: list[Any] = []
        for column, op, value in check_where(self._table, where):
            name = _q(column.name)
            if value is None:
                parts.append(f"{name} IS {'NOT ' if op == '!=' else ''}NULL")
            elif op in ("in", "not-in"):
                if not value:
                    parts.append("false" if op == "in" else "true")
                else:
                    parts.append(f"{name} = ANY(%s)" if op == "in" else f"{name} <> ALL(%s)")
                    params.append(list(value))
            elif op == "between":
                parts.append(f"{name} BETWEEN %s AND %s")
                params.extend(value)
            else:
                parts.append(f"{name} {'<>' if op == '!=' else op} %s")
                params.append(value)
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

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
        if isinstance(order_by, str):
            order_by = [order_by]
        selected = check_columns(self._table, columns)
        order = check_order(self._table, order_by)
        clause, params = self._where(where or {})
        sql = f"SELECT {', '.join(map(_q, selected))} FROM {self._name}{clause}"
        if order:  # NULLs as SQLite sorts them: first going up, last going down
            sql += " ORDER BY " + ", ".join(
                f"{_q(n)} {'DESC NULLS LAST' if d else 'NULLS FIRST'}" for n, d in order
            )
        if limit is not None or offset:
            sql += " LIMIT %s OFFSET %s"
            params += [None if limit is None else int(limit), int(offset)]
        if for_update and self.writable:
            sql += " FOR UPDATE"
        return [dict(zip(selected, values, strict=True)) for values in self._fetch(sql, params)]

    def one(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        columns: Sequence[str] | None = None,
        order_by: Sequence[str] = (),
        for_update: bool = False,
    ) -> dict[str, Any] | None:
        found = self.rows(where, columns=columns, order_by=order_by, limit=1, for_update=for_update)
        return found[0] if found else None

    def count(self, where: Mapping[str, Any] | None = None) -> int:
        clause, params = self._where(where or {})
        return int(self._fetch(f"SELECT count(*) FROM {self._name}{clause}", params)[0][0])
