"""Where the analytics SQL of SQLite and PostgreSQL differ, in one place.

``clm_engine.store.analytics`` writes its queries once, in standard SQL with ``?`` and
``:name`` parameters, and asks a :class:`Dialect` for the few fragments that differ: reading a
number or a text out of a JSON column, days between two UTC time texts, the rows of a JSON
array parameter, the Monday of a week, a floor to an integer, a temporary table's name. A
PostgreSQL connection is wrapped in :class:`PostgresAnalytics`, which rewrites the parameters
into psycopg's ``%s`` / ``%(name)s`` style (and doubles a literal ``%``); SQLite connections are
used as they are.

Nothing here imports psycopg: a PostgreSQL store is recognised by its module, which is only
loaded when such a store was opened.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Dialect:
    """The fragments of SQL that differ between the stores."""

    name: str

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def number(self, column: str, path: str) -> str:
        """The number at ``path`` (dotted) in a JSON column; NULL where it is not a number
        (PostgreSQL) or missing."""
        if self.postgres:
            keys = _pg_path(path)
            return (
                f"(CASE WHEN jsonb_typeof({column} #> '{keys}') = 'number' "
                f"THEN CAST({column} #>> '{keys}' AS double precision) END)"
            )
        return f"json_extract({column}, '{_sqlite_path(path)}')"

    def typed(self, column: str, path: str, kind: str) -> str:
        """The value at ``path`` if it is a JSON ``kind`` ("number" or "string"; never a
        boolean for a number), else NULL: comparisons as strict as the rule language's."""
        if self.postgres:
            keys = _pg_path(path)
            cast = " AS double precision" if kind == "number" else " AS text"
            return (
                f"(CASE WHEN jsonb_typeof({column} #> '{keys}') = '{kind}' "
                f"THEN CAST({column} #>> '{keys}'{cast}) END)"
            )
        kinds = "'integer', 'real'" if kind == "number" else "'text'"
        where = _sqlite_path(path)
        return (
            f"(CASE WHEN json_type({column}, '{where}') IN ({kinds}) "
            f"THEN json_extract({column}, '{where}') END)"
        )

    def is_boolean(self, column: str, path: str, value: bool) -> str:
        """Whether the value at ``path`` is JSON ``true`` (or ``false``); never NULL."""
        word = "true" if value else "false"
        if self.postgres:
            return f"coalesce(({column} #> '{_pg_path(path)}') = CAST('{word}' AS jsonb), FALSE)"
        return f"coalesce(json_type({column}, '{_sqlite_path(path)}') = '{word}', FALSE)"

    def present(self, column: str, path: str) -> str:
        """Whether ``path`` is in the JSON (its value may be null); never NULL."""
        if self.postgres:
            return f"(({column} #> '{_pg_path(path)}') IS NOT NULL)"
        return f"(json_type({column}, '{_sqlite_path(path)}') IS NOT NULL)"

    def text(self, column: str, path: str) -> str:
        """The value at ``path`` in a JSON column, as text (the time and name fields)."""
        if self.postgres:
            return f"({column} #>> '{_pg_path(path)}')"
        return f"json_extract({column}, '{_sqlite_path(path)}')"

    def days(self, later: str, earlier: str) -> str:
        """Days (fractional) from ``earlier`` to ``later``: UTC time texts or dates."""
        if self.postgres:
            return (
                "(CAST(extract(epoch FROM CAST("
                f"{later} AS timestamp) - CAST({earlier} AS timestamp)) AS double precision)"
                " / 86400.0)"
            )
        return f"(julianday({later}) - julianday({earlier}))"

    def floor_int(self, expression: str) -> str:
        """The integer part of a non-negative number (PostgreSQL's CAST rounds)."""
        if self.postgres:
            return f"CAST(floor({expression}) AS INTEGER)"
        return f"CAST({expression} AS INTEGER)"

    def smaller(self, a: str, b: str) -> str:
        """The smaller of two values (NULL if either is)."""
        if self.postgres:  # least() skips a NULL: keep SQLite's min()'s NULL
            return f"(CASE WHEN ({a}) IS NULL OR ({b}) IS NULL THEN NULL ELSE least({a}, {b}) END)"
        return f"min({a}, {b})"

    def larger(self, a: str, b: str) -> str:
        """The larger of two values (NULL if either is)."""
        if self.postgres:
            return (
                f"(CASE WHEN ({a}) IS NULL OR ({b}) IS NULL THEN NULL ELSE greatest({a}, {b}) END)"
            )
        return f"max({a}, {b})"

    def array_rows(self, parameter: str) -> str:
        """A FROM item with one row per element of a JSON array parameter: ``value`` (text)
        and ``pos`` (0-based)."""
        if self.postgres:
            return (
                f'(SELECT value COLLATE "C" AS value, CAST(ord - 1 AS INTEGER) AS pos '
                f"FROM jsonb_array_elements_text(CAST({parameter} AS jsonb)) "
                "WITH ORDINALITY AS elements(value, ord))"
            )
        return f"(SELECT value, CAST(key AS INTEGER) AS pos FROM json_each({parameter}))"

    def json_rows(self, parameter: str) -> str:
        """A FROM item with one row (``value``) per element of a JSON array parameter."""
        if self.postgres:
            return f"jsonb_array_elements(CAST({parameter} AS jsonb))"
        return f"json_each({parameter})"

    def json_item(self, value: str, index: int) -> str:
        """Element ``index`` of a JSON array ``value`` of :meth:`json_rows`, as text or
        number (text on PostgreSQL: cast it)."""
        if self.postgres:
            return f'({value} ->> {int(index)}) COLLATE "C"'
        return f"({value} ->> {int(index)})"

    def week_start(self, column: str) -> str:
        """The Monday (``YYYY-MM-DD``) of the week of a UTC time text."""
        if self.postgres:
            return (
                f"to_char(date_trunc('week', CAST(substr({column}, 1, 10) AS timestamp)), "
                "'YYYY-MM-DD')"
            )
        return (
            f"date(substr({column}, 1, 10), '-' || "
            f"((CAST(strftime('%w', {column}) AS INTEGER) + 6) % 7) || ' days')"
        )

    def json_parameter(self, parameter: str) -> str:
        """A parameter written into a ``json`` column."""
        return f"CAST({parameter} AS json)" if self.postgres else parameter

    @property
    def text_type(self) -> str:
        """Text that compares byte by byte, like the stores' own columns."""
        return 'TEXT COLLATE "C"' if self.postgres else "TEXT"

    def temporary(self, name: str) -> str:
        """A temporary table's qualified name (after ``CREATE TEMP TABLE name``)."""
        return f"pg_temp.{name}" if self.postgres else f"temp.{name}"


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgresql")


def _keys(path: str) -> list[str]:
    """The keys of a dotted path: fact-path characters only (they are written into SQL)."""
    keys = path.split(".")
    if not all(re.fullmatch(r"[A-Za-z0-9_-]+", key) for key in keys):
        raise ValueError(f"not a plain JSON path: {path!r}")
    return keys


def _pg_path(path: str) -> str:
    return "{" + ",".join(f'"{key}"' if "-" in key else key for key in _keys(path)) + "}"


def _sqlite_path(path: str) -> str:
    return "$" + "".join(f'."{key}"' if "-" in key else f".{key}" for key in _keys(path))


class _Rows:
    """A query's rows, fetched at once (the connection goes back to the pool), with
    PostgreSQL's ``numeric`` (what ``sum`` of integers gives) as the int or float SQLite
    gives, so both stores answer with the same Python (and JSON) values."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = [tuple(_plain(value) for value in row) for row in rows]

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return (
            int(value)
            if value == value.to_integral_value() and value.as_tuple().exponent == 0
            else float(value)
        )
    return value


class PostgresAnalytics:
    """A PostgreSQL connection for ``clm_engine.store.analytics``: its queries' parameters
    rewritten for psycopg, each run on the connection ``connection`` gives (a write
    transaction's own, or one from the pool)."""

    dialect = POSTGRES

    def __init__(self, connection: Callable[[], AbstractContextManager[Any]]) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Any = ()) -> _Rows:
        with self._connection() as conn:
            cursor = conn.execute(psycopg_style(sql), parameters)
            return _Rows(cursor.fetchall() if cursor.description is not None else [])

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._connection() as conn, conn.cursor() as cursor:
            cursor.executemany(psycopg_style(sql), list(rows))


@lru_cache(maxsize=256)
def psycopg_style(sql: str) -> str:
    """``?`` -> ``%s``, ``:name`` -> ``%(name)s``, ``%`` -> ``%%``, outside quoted text
    (where only ``%`` is doubled); ``::`` casts are left alone."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in "'\"":
            end = sql.find(char, i + 1)
            end = n - 1 if end < 0 else end
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif char == "%":
            out.append("%%")
            i += 1
        elif char == "?":
            out.append("%s")
            i += 1
        elif char == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")
            i += 2
        elif char == ":" and (match := re.match(r"[A-Za-z_][A-Za-z0-9_]*", sql[i + 1 :])):
            out.append(f"%({match.group()})s")
            i += 1 + match.end()
        elif char == "-" and sql.startswith("--", i):  # a comment, to the end of its line
            end = sql.find("\n", i)
            end = n if end < 0 else end
            i = end
        else:
            out.append(char)
            i += 1
    return "".join(out)


def dialect_of(conn: Any) -> Dialect:
    """The dialect of what ``clm_engine.store.analytics`` was given."""
    return getattr(conn, "dialect", SQLITE)


def _is_postgres(thing: Any) -> bool:
    module = sys.modules.get("clm_engine.store.postgres")
    if module is None:
        return False
    kinds = (module.PostgresStore, module.PostgresTransaction)
    return isinstance(thing, kinds)


def analytics_db(store_or_transaction: Any) -> Any:
    """What the analytics queries run on, for a store (reports: reads from the pool) or a
    write transaction (refresh: its own connection) of either kind."""
    if _is_postgres(store_or_transaction):
        return PostgresAnalytics(store_or_transaction._connection)
    return store_or_transaction.db


def fact_db(db: Any, tables: Any) -> Any:
    """What a fact reads the analytics tables through: the context's ``db`` on SQLite, the
    connection of its ``tables`` on PostgreSQL (whose ``db`` is no database); None without a
    store."""
    module = sys.modules.get("clm_engine.store.postgres_tables")
    if module is not None and isinstance(tables, module.PostgresTables):
        return PostgresAnalytics(tables._connection)
    return db
