"""Plugins' declared tables on SQLite: DDL from the portable declarations, and rows through
parameterised statements built from checked names only.

Types: ``text``, ``json`` and ``timestamp`` are TEXT (JSON text; fixed-width UTC text), ``integer``
and ``boolean`` INTEGER (0/1), ``real`` REAL. A table is created as declared; a table that
exists (a store file from an older plugin, or one made by its old ``sqlite_utils`` migrations)
gets what it lacks: columns (``ALTER TABLE ... ADD COLUMN``), unique constraints and indexes
(an existing index over the same columns counts). Nothing is ever dropped or changed: a column
of another type, or another primary key, is a :class:`StoreError` naming it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic_core import to_json

from ..erasure import Erasure
from ..errors import StoreError
from .tables import (
    Column,
    DeclaredTables,
    Index,
    OnConflict,
    Table,
    check_aggregate,
    check_columns,
    check_key,
    check_order,
    check_where,
    check_writable,
    encoder,
    index_steps,
    key_of,
    mention_search,
    pseudonymise_rows,
    quote,
    read_erasure_key,
    to_store,
)

_SQL_TYPES = {
    "text": "TEXT",
    "integer": "INTEGER",
    "real": "REAL",
    "boolean": "INTEGER",
    "json": "TEXT",
    "timestamp": "TEXT",
}


def _dumps(value: Any) -> str:
    return to_json(value).decode()


def _param(column: Column, value: Any) -> Any:
    value = to_store(column, value)
    if value is None:
        return None
    if column.type == "json":
        try:
            return _dumps(value)
        except Exception as error:  # pydantic-core: what JSON cannot hold
            raise StoreError(f"column {column.name!r} is json; {error}") from None
    if column.type == "boolean":
        return int(value)
    return value


def _param_encoder(column: Column) -> Callable[[Any], Any]:
    """``_param`` for one column, as a function of the value alone."""
    if column.type in ("json", "boolean", "real"):
        return lambda value: _param(column, value)
    return encoder(column)


def _literal(column: Column, value: Any = None) -> str:
    """A column's default (or ``value``) as SQL text, from a checked value of its type given
    in a declaration, never from input."""
    value = _param(column, column.default if value is None else value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _index_where(table: Table, index: Index) -> str:
    """A partial index's WHERE, from the declaration's checked constants."""
    parts = []
    for name, value in index.conditions:
        if value is None:
            parts.append(f"{quote(name)} IS NULL")
        elif value == ("!=", None):
            parts.append(f"{quote(name)} IS NOT NULL")
        else:
            parts.append(f"{quote(name)} = {_literal(table.column(name), value)}")
    return " WHERE " + " AND ".join(parts) if parts else ""


def _column_sql(table: Table, column: Column) -> str:
    sql = f"{quote(column.name)} {_SQL_TYPES[column.type]}"
    if column.auto_increment:
        return sql + " PRIMARY KEY AUTOINCREMENT"  # grows only, never reuses a number
    if not column.nullable or column.name in table.primary_key:
        sql += " NOT NULL"
    if column.default is not None:
        sql += f" DEFAULT {_literal(column)}"
    return sql


def plan_tables(conn: sqlite3.Connection, tables: Iterable[Table]) -> list[tuple[str, str]]:
    """What creating or completing each declared table takes, as (``table:change``, SQL),
    read from the schema alone: an up-to-date store plans nothing and writes nothing."""
    steps: list[tuple[str, str]] = []
    for table in tables:
        existing = conn.execute(f"PRAGMA table_info({quote(table.name)})").fetchall()
        if not existing:
            parts = [_column_sql(table, c) for c in table.columns]
            if table.auto_key is None:
                parts.append(f"PRIMARY KEY ({', '.join(map(quote, table.primary_key))})")
            parts.extend(f"UNIQUE ({', '.join(map(quote, u))})" for u in table.unique)
            steps.append(
                (
                    f"{table.name}:create table",
                    f"CREATE TABLE {quote(table.name)} ({', '.join(parts)})",
                )
            )
            indexes: list[tuple[tuple[str, ...], bool]] = [(u, True) for u in table.unique]
            named: set[str] = set()
        else:
            steps.extend(_complete(table, existing))
            indexes = _indexes(conn, table.name)
            named = {row[1] for row in conn.execute(f"PRAGMA index_list({quote(table.name)})")}
        steps.extend(index_steps(table, indexes, named, _index_where))
    return steps


def ensure_tables(conn: sqlite3.Connection, tables: Iterable[Table]) -> list[str]:
    """Create or complete each declared table (in the caller's write); what was done."""
    steps = plan_tables(conn, tables)
    for _, sql in steps:
        conn.execute(sql)
    return [what for what, _ in steps]


def _complete(table: Table, existing: list[Any]) -> list[tuple[str, str]]:
    """What an existing table lacks; a StoreError for what would need a change."""
    found = {row[1]: row for row in existing}  # cid, name, type, notnull, default, pk
    primary = tuple(row[1] for row in sorted(existing, key=lambda r: r[5]) if row[5])
    if primary != table.primary_key:
        raise StoreError(
            f"table {table.name!r} exists with primary key {list(primary)}, not "
            f"{list(table.primary_key)}: a store changes tables only by adding to them"
        )
    steps = []
    for column in table.columns:
        row = found.get(column.name)
        if row is not None:
            if (row[2] or "").upper() != _SQL_TYPES[column.type]:
                raise StoreError(
                    f"column {table.name}.{column.name} exists as {row[2] or 'untyped'}, not "
                    f"{column.type} ({_SQL_TYPES[column.type]})"
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
                f"ALTER TABLE {quote(table.name)} ADD COLUMN {_column_sql(table, column)}",
            )
        )
    return steps


def _indexes(conn: sqlite3.Connection, table: str) -> list[tuple[tuple[str, ...], bool]]:
    """(columns, unique) of every full (not partial) index on ``table``, the key's included."""
    found = []
    for _, name, unique, _origin, partial in conn.execute(f"PRAGMA index_list({quote(table)})"):
        if partial:
            continue
        columns = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({quote(name)})"))
        found.append((columns, bool(unique)))
    return found


def _where_sql(shape: Sequence[tuple[str, str, bool | None]]) -> str:
    """The WHERE clause of a where's shape: (column, op, has a value / is non-empty)."""
    parts = []
    for column, op, has in shape:
        name = quote(column)
        if has is None:
            parts.append(f"{name} IS {'NOT ' if op == '!=' else ''}NULL")
        elif op in ("in", "not-in"):
            if not has:
                parts.append("0" if op == "in" else "1")
            else:
                parts.append(
                    f"{name} {'NOT ' if op == 'not-in' else ''}IN (SELECT value FROM json_each(?))"
                )
        elif op == "between":
            parts.append(f"{name} BETWEEN ? AND ?")
        else:
            parts.append(f"{name} {op} ?")
    return " WHERE " + " AND ".join(parts) if parts else ""


class SQLiteTables(DeclaredTables):
    """The declared tables of one SQLite transaction (or, read only, of the store's connection)."""

    def __init__(
        self, conn: sqlite3.Connection, declared: Mapping[str, Table], *, writable: bool
    ) -> None:
        super().__init__(declared, writable=writable)
        self.conn = conn

    def _access(self, table: Table) -> SQLiteTableAccess:
        return SQLiteTableAccess(self.conn, table, self.writable)

    def _read_erasure_key(self) -> bytes | None:
        try:
            return read_erasure_key(self.conn)
        except sqlite3.OperationalError:  # a file without the core's schema: nothing hashed
            return None


class SQLiteTableAccess:
    """One declared table's rows on a SQLite connection."""

    def __init__(self, conn: sqlite3.Connection, table: Table, writable: bool) -> None:
        self.conn = conn
        self._table = table
        self.writable = writable
        self._name = quote(table.name)
        # Which columns need converting back from what SQLite keeps.
        self._decode = {
            c.name: (json.loads if c.type == "json" else bool)
            for c in table.columns
            if c.type in ("json", "boolean")
        }
        self._sql: dict[Any, str] = {}
        self._selects: dict[Any, tuple[tuple[str, ...], str, str, list[Any]]] = {}
        self._encode = {c.name: _param_encoder(c) for c in table.columns}

    @property
    def schema(self) -> Table:
        return self._table

    # -- writing ---------------------------------------------------------------------------

    def _writing(self) -> None:
        if not self.writable:
            raise StoreError(
                f"{self._table.name}: this view is read only; write in a write transaction "
                "(an action's or handler's ctx.tables, or store.write())"
            )

    def _values(self, row: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
        names = list(row)
        if not names:
            raise StoreError(f"{self._table.name}: a row needs at least one column")
        encode = self._encode
        try:
            return names, [encode[n](row[n]) for n in names]
        except KeyError:
            for name in names:
                self._table.column(name)  # raises, naming the column
            raise

    def _insert_sql(self, names: Sequence[str], on_conflict: OnConflict) -> str:
        if on_conflict not in ("error", "ignore"):
            raise StoreError(f"on_conflict is 'error' or 'ignore' (got {on_conflict!r})")
        shape = ("insert", tuple(names), on_conflict)
        sql = self._sql.get(shape)
        if sql is None:
            sql = self._sql[shape] = (
                f"INSERT INTO {self._name} ({', '.join(map(quote, names))}) "
                f"VALUES ({', '.join('?' * len(names))})"
                + (" ON CONFLICT DO NOTHING" if on_conflict == "ignore" else "")
            )
        return sql

    def insert(self, row: Mapping[str, Any], *, on_conflict: OnConflict = "error") -> int:
        self._writing()
        names, values = self._values(row)
        try:
            cursor = self.conn.execute(self._insert_sql(names, on_conflict), values)
        except sqlite3.IntegrityError as error:
            raise StoreError(f"{self._table.name}: {error}") from None
        if cursor.rowcount != 1:
            return False
        if self._table.auto_key is not None and cursor.lastrowid is not None:
            return cursor.lastrowid  # the rowid: the auto_increment key is its alias
        return True

    def insert_many(
        self, rows: Iterable[Mapping[str, Any]], *, on_conflict: OnConflict = "error"
    ) -> int:
        self._writing()
        rows = list(rows)
        if not rows:
            return 0
        names = list(rows[0])
        table = self._table
        columns = [table.column(n) for n in names]
        batch = []
        for row in rows:
            if list(row) != names:
                raise StoreError(f"{table.name}: insert_many needs the same columns in every row")
            batch.append([_param(c, row[c.name]) for c in columns])
        before = self.conn.total_changes
        try:
            self.conn.executemany(self._insert_sql(names, on_conflict), batch)
        except sqlite3.IntegrityError as error:
            raise StoreError(f"{self._table.name}: {error}") from None
        return self.conn.total_changes - before

    def upsert(
        self,
        row: Mapping[str, Any],
        *,
        key: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
    ) -> None:
        self._writing()
        table = self._table
        check_writable(table, "upsert")
        target = check_key(table, key)
        names, values = self._values(row)
        missing = [k for k in target if k not in row]
        if missing:
            raise StoreError(f"{table.name}: an upsert's row needs its key columns {missing}")
        changed = [n for n in names if n not in target] if update is None else list(update)
        for name in changed:
            if name not in row:
                raise StoreError(f"{table.name}: upsert updates {name!r}, which the row lacks")
        action = (
            "DO UPDATE SET " + ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in changed)
            if changed
            else "DO NOTHING"
        )
        sql = (
            f"INSERT INTO {self._name} ({', '.join(map(quote, names))}) "
            f"VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(map(quote, target))}) {action}"
        )
        try:
            self.conn.execute(sql, values)
        except sqlite3.IntegrityError as error:
            raise StoreError(f"{table.name}: {error}") from None

    def update(
        self,
        where: Mapping[str, Any],
        values: Mapping[str, Any] | None = None,
        *,
        add: Mapping[str, int | float] | None = None,
    ) -> int:
        self._writing()
        table = self._table
        check_writable(table, "update")
        sets, params = [], []
        for name, value in (values or {}).items():
            sets.append(f"{quote(name)} = ?")
            params.append(_param(table.column(name), value))
        for name, amount in (add or {}).items():
            column = table.column(name)
            if column.type not in ("integer", "real"):
                raise StoreError(f"{table.name}.{name} is {column.type}: add takes numbers")
            sets.append(f"{quote(name)} = {quote(name)} + ?")
            params.append(to_store(column, amount))
        if not sets:
            raise StoreError(f"{table.name}: an update needs values or add")
        clause, where_params = self._where(where)
        try:
            cursor = self.conn.execute(
                f"UPDATE {self._name} SET {', '.join(sets)}{clause}", [*params, *where_params]
            )
        except sqlite3.IntegrityError as error:
            raise StoreError(f"{table.name}: {error}") from None
        return cursor.rowcount

    def delete(self, where: Mapping[str, Any]) -> int:
        self._writing()
        check_writable(self._table, "delete")
        clause, params = self._where(where)
        return self.conn.execute(f"DELETE FROM {self._name}{clause}", params).rowcount

    def pseudonymise(self, erasure: Erasure) -> int:
        self._writing()
        table = self._table
        condition, args = mention_search(
            table,
            erasure,
            lambda c, folded: f"instr(lower({c}), ?)" if folded else f"instr({c}, ?)",
        )
        if not condition:
            return 0
        names = [column.name for column in table.columns]
        found = self.conn.execute(
            f"SELECT {', '.join(map(quote, names))} FROM {self._name} WHERE {condition}", args
        ).fetchall()
        rows = [
            {
                name: self._decode[name](value)
                if value is not None and name in self._decode
                else value
                for name, value in zip(names, values, strict=True)
            }
            for values in found
        ]

        def replace(old: dict[str, Any], new: dict[str, Any]) -> None:
            clause, params = self._where(key_of(table, old))
            self.conn.execute(f"DELETE FROM {self._name}{clause}", params)
            columns, encoded = self._values(new)
            self.conn.execute(self._insert_sql(columns, "error"), encoded)

        return pseudonymise_rows(table, rows, erasure, replace)

    # -- reading ---------------------------------------------------------------------------

    def _where(self, where: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        if where is None:
            raise StoreError(f"{self._table.name}: say which rows ({{}} for all)")
        params: list[Any] = []
        shape: list[tuple[str, str, bool | None]] = []
        for column, op, value in check_where(self._table, where):
            if column.type == "boolean" and value is not None:
                value = [int(v) for v in value] if op in ("in", "not-in") else int(value)
            if value is None:
                shape.append((column.name, op, None))
            elif op in ("in", "not-in"):
                shape.append((column.name, op, bool(value)))
                if value:
                    params.append(_dumps(value))
            elif op == "between":
                shape.append((column.name, op, True))
                params.extend(value)
            else:
                shape.append((column.name, op, True))
                params.append(value)
        key = ("where", *shape)
        clause = self._sql.get(key)
        if clause is None:
            clause = self._sql[key] = _where_sql(shape)
        return clause, params

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
        shape = (
            "select",
            None if columns is None else tuple(columns),
            tuple(order_by),
        )
        cached = self._selects.get(shape)
        if cached is None:
            selected = check_columns(self._table, columns)
            head = f"SELECT {', '.join(map(quote, selected))} FROM {self._name}"
            order = check_order(self._table, order_by)
            tail = (
                " ORDER BY " + ", ".join(f"{quote(n)}{' DESC' if d else ''}" for n, d in order)
                if order
                else ""
            )
            decode = [(n, self._decode[n]) for n in selected if n in self._decode]
            cached = self._selects[shape] = (tuple(selected), head, tail, decode)
        names, head, tail, decode = cached
        clause, params = self._where(where or {})
        sql = head + clause + tail
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if limit is None else int(limit), int(offset)]
        found = [dict(zip(names, values, strict=True)) for values in self.conn.execute(sql, params)]
        if decode:
            for row in found:
                for name, convert in decode:
                    if row[name] is not None:
                        row[name] = convert(row[name])
        return found

    def one(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        columns: Sequence[str] | None = None,
        order_by: Sequence[str] = (),
        for_update: bool = False,
    ) -> dict[str, Any] | None:
        found = self.rows(where, columns=columns, order_by=order_by, limit=1)
        return found[0] if found else None

    def count(self, where: Mapping[str, Any] | None = None) -> int:
        clause, params = self._where(where or {})
        total: int = self.conn.execute(
            f"SELECT count(*) FROM {self._name}{clause}", params
        ).fetchone()[0]
        return total

    def aggregate(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        group_by: Sequence[str] = (),
        sums: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        table = self._table
        grouped, summed = check_aggregate(table, group_by, sums)
        selected = [quote(n) for n in grouped] + ["count(*)"]
        selected += [f"coalesce(sum({quote(n)}), 0)" for n in summed]
        clause, params = self._where(where or {})
        sql = f"SELECT {', '.join(selected)} FROM {self._name}{clause}"
        if grouped:
            names = ", ".join(map(quote, grouped))
            sql += f" GROUP BY {names} ORDER BY {names}"
        real = {n for n in summed if table.column(n).type == "real"}
        found = []
        for values in self.conn.execute(sql, params):
            row = dict(zip([*grouped, "count", *summed], values, strict=True))
            for name in grouped:
                if name in self._decode and row[name] is not None:
                    row[name] = self._decode[name](row[name])
            for name in real:
                row[name] = float(row[name])
            found.append(row)
        return found
