"""The SQL of lifecycle analytics (``clm_engine.analytics``): set-based aggregate queries over
the events and contacts, with parameters only.

Written once, in standard SQL (CTEs, window functions, ``CASE``), for SQLite and PostgreSQL
alike: the few fragments that differ (JSON fields, day arithmetic, array parameters) come from
the connection's :class:`~clm_engine.store.analytics_dialect.Dialect`, and every function takes
what :func:`~clm_engine.store.analytics_dialect.analytics_db` gives for a store or a write
transaction. Days are UTC dates as text (``YYYY-MM-DD``), the first ten characters of the
stored fixed-width times.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..rulesets.goals import Filter, GoalQuery, Group
from .analytics_dialect import Dialect, PostgresAnalytics, dialect_of


class Executes(Protocol):
    """What these functions need of a connection: ``sqlite3.Connection`` and
    ``sqlite_utils.Database`` both fit."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


def _purchase_days(d: Dialect) -> str:
    """One row per customer and purchase day: that day's purchases are one transaction (the
    convention of the BG/NBD and Gamma-Gamma papers' CDNOW data)."""
    return f"""
    purchase_days AS (
        SELECT contact_id, substr(occurred_at, 1, 10) AS day,
               sum({d.number("properties", "amount")}) AS amount
        FROM events
        WHERE type = 'purchase' AND occurred_at < :until
        GROUP BY contact_id, substr(occurred_at, 1, 10)
    )"""


def purchase_summary(conn: Executes, *, until: str, end_day: str) -> list[tuple[Any, ...]]:
    """One row per customer with a purchase before ``until`` (UTC time text, exclusive):
    ``(contact_id, first_day, last_day, x, t_x, T, repeat_mean)`` with ``x`` the repeat
    purchase days, ``t_x`` and ``T`` in weeks (``T`` up to ``end_day``) and ``repeat_mean`` the
    mean value of the repeat purchase days (0 without any), in contact id order."""
    d = dialect_of(conn)
    sql = f"""
        WITH {_purchase_days(d)},
        numbered AS (
            SELECT contact_id, day, amount,
                   row_number() OVER (PARTITION BY contact_id ORDER BY day) AS nth
            FROM purchase_days
        )
        SELECT contact_id, min(day), max(day), count(*) - 1,
               {d.days("max(day)", "min(day)")} / 7.0,
               {d.days(":end_day", "min(day)")} / 7.0,
               coalesce(sum(CASE WHEN nth > 1 THEN amount END) / nullif(count(*) - 1, 0), 0)
        FROM numbered
        GROUP BY contact_id
        ORDER BY contact_id
    """
    return list(conn.execute(sql, {"until": until, "end_day": end_day}).fetchall())


def save_model(
    conn: Executes,
    name: str,
    params: dict[str, float],
    *,
    calibration_end: str,
    customers: int,
    log_likelihood: float | None,
    at: str,
) -> None:
    conn.execute(
        "INSERT INTO analytics_models (name, params, calibration_end, customers, log_likelihood, "
        f"fitted_at) VALUES (?, {dialect_of(conn).json_parameter('?')}, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET "
        "params = excluded.params, calibration_end = excluded.calibration_end, "
        "customers = excluded.customers, log_likelihood = excluded.log_likelihood, "
        "fitted_at = excluded.fitted_at",
        [name, json.dumps(params), calibration_end, customers, log_likelihood, at],
    )


def load_models(conn: Executes) -> dict[str, dict[str, Any]]:
    """Every fitted model: name -> params, calibration_end, customers, log_likelihood, at."""
    rows = conn.execute(
        "SELECT name, params, calibration_end, customers, log_likelihood, fitted_at "
        "FROM analytics_models ORDER BY name"
    ).fetchall()
    return {
        name: {
            "params": params if isinstance(params, dict) else json.loads(params),
            "calibration_end": end,
            "customers": customers,
            "log_likelihood": ll,
            "fitted_at": at,
        }
        for name, params, end, customers, ll, at in rows
    }


def replace_customers(conn: Executes, rows: Iterable[Sequence[Any]]) -> None:
    """Replace every customer's summary and predictions: ``(contact_id, first_day, last_day,
    x, repeat_mean, p_alive, expected_purchases, expected_value, predicted_clv, as_of)``."""
    conn.execute("DELETE FROM analytics_customers")
    columns = (
        "contact_id, first_day, last_day, x, repeat_mean, p_alive, expected_purchases, "
        "expected_value, predicted_clv, as_of"
    )
    if isinstance(conn, PostgresAnalytics):  # psycopg pipelines the rows
        for chunk in _chunks(rows, 5000):
            conn.executemany(
                f"INSERT INTO analytics_customers ({columns}) VALUES ({', '.join('?' * 10)})",
                chunk,
            )
        return
    for chunk in _chunks(rows, 5000):
        conn.execute(
            "INSERT INTO analytics_customers (contact_id, first_day, last_day, x, repeat_mean, "
            "p_alive, expected_purchases, expected_value, predicted_clv, as_of) "
            "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, "
            "value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 "
            "FROM json_each(?)",  # SQLite: one parameter however many rows
            [json.dumps(chunk)],
        )


def _chunks(rows: Iterable[Sequence[Any]], size: int) -> Iterable[list[list[Any]]]:
    chunk: list[list[Any]] = []
    for row in rows:
        chunk.append(list(row))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def customer(conn: Executes, contact_id: str) -> tuple[Any, ...] | None:
    """``(first_day, last_day, x, repeat_mean)`` of one customer as of the last refresh."""
    row = conn.execute(
        "SELECT first_day, last_day, x, repeat_mean FROM analytics_customers WHERE contact_id = ?",
        [contact_id],
    ).fetchone()
    return tuple(row) if row is not None else None


def predicted_clv_total(conn: Executes) -> tuple[int, float]:
    """``(customers with a prediction, sum of their predicted CLV)``."""
    customers, total = conn.execute(
        "SELECT count(predicted_clv), coalesce(sum(predicted_clv), 0) FROM analytics_customers"
    ).fetchone()
    return int(customers), float(total)


def predicted_clv_histogram(conn: Executes, *, bins: int) -> list[tuple[float, float, int]]:
    """The predicted CLV distribution: ``(from, to, customers)`` for ``bins`` equal bins from
    0 to the 99th percentile, the last bin open-ended (it holds the top percent too)."""
    d = dialect_of(conn)
    sql = f"""
        WITH ranked AS (
            SELECT predicted_clv AS v,
                   row_number() OVER (ORDER BY predicted_clv) AS nth, count(*) OVER () AS n
            FROM analytics_customers WHERE predicted_clv IS NOT NULL
        ),
        top AS (SELECT max(v) AS high FROM ranked WHERE nth <= (99 * n + 99) / 100),
        binned AS (
            SELECT CASE WHEN top.high <= 0 THEN 0
                        ELSE {d.smaller(":bins - 1", d.floor_int("ranked.v * :bins / top.high"))}
                   END
                   AS bin
            FROM ranked, top
        )
        SELECT bin, count(*), (SELECT high FROM top) FROM binned GROUP BY bin ORDER BY bin
    """
    rows = conn.execute(sql, {"bins": bins}).fetchall()
    if not rows:
        return []
    high = float(rows[0][2] or 0) or 1.0
    width = high / bins
    counts = {int(b): int(n) for b, n, _ in rows}
    return [(i * width, (i + 1) * width, counts.get(i, 0)) for i in range(bins)]


# -- RFM --------------------------------------------------------------------------------------


def _score(column: str, order: str) -> str:
    """A 1-5 quantile score by rank: ``1 + floor(5 * (rank - 1) / n)``. Equal values share a
    rank and so a score (NTILE would split a tie between two scores, arbitrarily)."""
    return (
        f"1 + CAST(5 * (rank() OVER (ORDER BY {column} {order}) - 1) AS INTEGER) / count(*) OVER ()"
    )


def refresh_rfm(
    conn: Executes,
    *,
    until: str,
    as_of: str,
    window_start: str,
    segments: Sequence[tuple[str, int, int, int, int, int, int]],
    otherwise: str,
) -> list[tuple[str, str | None, str, int, int, int]]:
    """Score every customer and name their segment, in one statement, and return the changes:
    ``(contact_id, old segment or None, new segment, r, f, m)``.

    The customers are the contacts with a purchase before ``until``; recency is days from
    their last purchase to ``as_of``; frequency and monetary count the purchases from
    ``window_start`` on (both UTC time text). ``segments`` are tried in order:
    ``(name, r_min, r_max, f_min, f_max, m_min, m_max)``; ``otherwise`` names the rest.
    """
    cases = " ".join(
        "WHEN r BETWEEN ? AND ? AND f BETWEEN ? AND ? AND m BETWEEN ? AND ? THEN ?"
        for _ in segments
    )
    case_params: list[Any] = []
    for name, r_min, r_max, f_min, f_max, m_min, m_max in segments:
        case_params += [r_min, r_max, f_min, f_max, m_min, m_max, name]
    d = dialect_of(conn)
    scratch = d.temporary("rfm_next")
    conn.execute(f"DROP TABLE IF EXISTS {scratch}")
    conn.execute(
        f"CREATE TEMP TABLE rfm_next (contact_id {d.text_type}, recency_days INTEGER, "
        "frequency INTEGER, monetary double precision, r INTEGER, f INTEGER, m INTEGER, "
        f"segment {d.text_type})"
    )
    conn.execute(
        f"""
        WITH purchases AS (
            SELECT contact_id, occurred_at, {d.number("properties", "amount")} AS amount
            FROM events WHERE type = 'purchase' AND occurred_at < ?
        ),
        per_customer AS (
            SELECT contact_id,
                   CAST({d.days("?", "substr(max(occurred_at), 1, 10)")} AS INTEGER)
                       AS recency_days,
                   count(CASE WHEN occurred_at >= ? THEN 1 END) AS frequency,
                   coalesce(sum(CASE WHEN occurred_at >= ? THEN amount END), 0) AS monetary
            FROM purchases GROUP BY contact_id
        ),
        scored AS (
            SELECT contact_id, recency_days, frequency, monetary,
                   {_score("recency_days", "DESC")} AS r,
                   {_score("frequency", "ASC")} AS f,
                   {_score("monetary", "ASC")} AS m
            FROM per_customer
        )
        INSERT INTO {scratch} (contact_id, recency_days, frequency, monetary, r, f, m, segment)
        SELECT contact_id, recency_days, frequency, monetary, r, f, m,
               CASE {cases} ELSE ? END AS segment
        FROM scored
        """,
        [until, as_of, window_start, window_start, *case_params, otherwise],
    )
    changes = conn.execute(
        f"SELECT n.contact_id, o.segment, n.segment, n.r, n.f, n.m FROM {scratch} AS n "
        "LEFT JOIN analytics_rfm AS o ON o.contact_id = n.contact_id "
        "WHERE o.segment IS NULL OR o.segment <> n.segment ORDER BY n.contact_id"
    ).fetchall()
    conn.execute("DELETE FROM analytics_rfm")
    conn.execute(
        "INSERT INTO analytics_rfm (contact_id, recency_days, frequency, monetary, r, f, m, "
        "segment, as_of) SELECT contact_id, recency_days, frequency, monetary, r, f, m, "
        f"segment, ? FROM {scratch}",
        [as_of],
    )
    conn.execute(f"DROP TABLE {scratch}")
    return [tuple(row) for row in changes]


def rfm_of(conn: Executes, contact_id: str) -> tuple[Any, ...] | None:
    """``(r, f, m, segment, recency_days, frequency, monetary)`` of one customer."""
    row = conn.execute(
        "SELECT r, f, m, segment, recency_days, frequency, monetary FROM analytics_rfm "
        "WHERE contact_id = ?",
        [contact_id],
    ).fetchone()
    return tuple(row) if row is not None else None


def rfm_grid(conn: Executes) -> list[tuple[int, int, int]]:
    """Customers by (r, f): the RFM grid."""
    rows = conn.execute(
        "SELECT r, f, count(*) FROM analytics_rfm GROUP BY r, f ORDER BY r, f"
    ).fetchall()
    return [tuple(row) for row in rows]


def rfm_segments(conn: Executes) -> dict[str, int]:
    rows = conn.execute(
        "SELECT segment, count(*) FROM analytics_rfm GROUP BY segment ORDER BY count(*) DESC"
    ).fetchall()
    return {segment: count for segment, count in rows}


# -- KPIs -------------------------------------------------------------------------------------

#: Events from outside the engine: not its own ``clm.*`` events, nor what its actions emitted
#: (ids ``a-`` and 32 hex digits, ``clm_engine.builtins.reducers.is_emitted``).
_OUTSIDE = (
    "type NOT LIKE 'clm.%' AND type NOT IN ('marketing.spend', 'spend') "
    "AND NOT (id LIKE 'a-%' AND length(id) = 34)"
)
#: A month as a number (year * 12 + month - 1) from a UTC time text: month arithmetic.
_MONTH = "(CAST(substr({0}, 1, 4) AS INTEGER) * 12 + CAST(substr({0}, 6, 2) AS INTEGER) - 1)"


def funnel(conn: Executes, stages: Sequence[str]) -> list[tuple[Any, ...]]:
    """Per stage of the model, in order: ``(stage, reached, went_on, median_days,
    backward_moves_into)``. ``reached``: contacts with a transition into it; ``went_on``: of
    those, contacts who later reached the next stage of the model; ``median_days``: median
    length of completed stays in it (entry to the contact's next transition)."""
    d = dialect_of(conn)
    sql = f"""
        WITH model AS (SELECT value AS stage, pos FROM {d.array_rows("?")} AS elements),
        moves AS (
            SELECT t.contact_id, t.from_stage, t.to_stage, t.at,
                   lead(t.at) OVER (PARTITION BY t.contact_id ORDER BY t.at, t.id) AS left_at
            FROM stage_transitions AS t
        ),
        stays AS (
            SELECT to_stage AS stage,
                   {d.days("left_at", "at")} AS days,
                   row_number() OVER (PARTITION BY to_stage
                                      ORDER BY {d.days("left_at", "at")}) AS nth,
                   count(*) OVER (PARTITION BY to_stage) AS n
            FROM moves WHERE left_at IS NOT NULL
        ),
        medians AS (
            SELECT stage, avg(days) AS median_days FROM stays
            WHERE nth IN ((n + 1) / 2, (n + 2) / 2) GROUP BY stage
        ),
        reached AS (
            SELECT to_stage AS stage, contact_id, min(at) AS first_at FROM stage_transitions
            GROUP BY to_stage, contact_id
        ),
        counts AS (
            SELECT m.stage, m.pos, count(r.contact_id) AS reached,
                   count(nxt.contact_id) AS went_on
            FROM model AS m
            LEFT JOIN reached AS r ON r.stage = m.stage
            LEFT JOIN model AS m2 ON m2.pos = m.pos + 1
            LEFT JOIN reached AS nxt
                   ON nxt.stage = m2.stage AND nxt.contact_id = r.contact_id
                  AND nxt.first_at >= r.first_at
            GROUP BY m.stage, m.pos
        ),
        backward AS (
            SELECT t.to_stage AS stage, count(*) AS moves
            FROM stage_transitions AS t
            JOIN model AS f ON f.stage = t.from_stage
            JOIN model AS d ON d.stage = t.to_stage
            WHERE d.pos < f.pos GROUP BY t.to_stage
        )
        SELECT c.stage, c.reached, c.went_on, md.median_days, coalesce(b.moves, 0)
        FROM counts AS c
        LEFT JOIN medians AS md ON md.stage = c.stage
        LEFT JOIN backward AS b ON b.stage = c.stage
        ORDER BY c.pos
    """
    return [tuple(row) for row in conn.execute(sql, [json.dumps(list(stages))]).fetchall()]


def cohorts(conn: Executes, *, until: str) -> list[tuple[str, int, int, int]]:
    """``(signup month 'YYYY-MM', months since signup, cohort size, active contacts)``: a
    contact is active in a month with an event from outside the engine in it. The cohorts are
    the contacts with a signup (``metrics.signed_up_at``), by its month."""
    signup = dialect_of(conn).text("data", "metrics.signed_up_at")
    sql = f"""
        WITH members AS (
            SELECT id, {_MONTH.format(signup)} AS cohort FROM contacts
            WHERE {signup} IS NOT NULL AND {signup} < :until
        ),
        sizes AS (SELECT cohort, count(*) AS size FROM members GROUP BY cohort),
        active AS (
            SELECT DISTINCT contact_id, {_MONTH.format("occurred_at")} AS month FROM events
            WHERE {_OUTSIDE} AND occurred_at < :until
        ),
        counts AS (
            SELECT m.cohort, a.month - m.cohort AS age, count(*) AS active
            FROM members AS m JOIN active AS a ON a.contact_id = m.id
            WHERE a.month >= m.cohort GROUP BY m.cohort, a.month - m.cohort
        )
        SELECT s.cohort, c.age, s.size, c.active FROM sizes AS s
        JOIN counts AS c ON c.cohort = s.cohort ORDER BY s.cohort, c.age
    """
    rows = conn.execute(sql, {"until": until}).fetchall()
    return [
        (f"{cohort // 12:04d}-{cohort % 12 + 1:02d}", age, size, n) for cohort, age, size, n in rows
    ]


def churned(conn: Executes, *, until: str) -> list[tuple[str, int, int]]:
    """Per complete month before ``until``'s: ``(month 'YYYY-MM', contacts active the month
    before, of them not active in this month)``, activity as in :func:`cohorts`."""
    sql = f"""
        WITH active AS (
            SELECT DISTINCT contact_id, {_MONTH.format("occurred_at")} AS month FROM events
            WHERE {_OUTSIDE} AND occurred_at < :until
        )
        SELECT p.month + 1, count(*), count(*) - count(n.contact_id)
        FROM active AS p
        LEFT JOIN active AS n ON n.contact_id = p.contact_id AND n.month = p.month + 1
        WHERE p.month + 1 < {_MONTH.format(":until")}
        GROUP BY p.month + 1 ORDER BY p.month + 1
    """
    rows = conn.execute(sql, {"until": until}).fetchall()
    return [(f"{m // 12:04d}-{m % 12 + 1:02d}", before, gone) for m, before, gone in rows]


def purchases(conn: Executes, *, since: str, until: str) -> tuple[int, int, int, float]:
    """``(customers, repeat customers (2+ purchases), purchases, revenue)`` in [since, until)."""
    amount = dialect_of(conn).number("properties", "amount")
    sql = f"""
        WITH per_customer AS (
            SELECT contact_id, count(*) AS n, sum({amount}) AS revenue
            FROM events WHERE type = 'purchase' AND occurred_at >= ? AND occurred_at < ?
            GROUP BY contact_id
        )
        SELECT count(*), count(CASE WHEN n >= 2 THEN 1 END), coalesce(sum(n), 0),
               coalesce(sum(revenue), 0)
        FROM per_customer
    """
    customers, repeat, count, revenue = conn.execute(sql, [since, until]).fetchone()
    return int(customers), int(repeat), int(count), float(revenue)


def retained(conn: Executes, *, before: tuple[str, str], after: tuple[str, str]) -> tuple[int, int]:
    """``(customers purchasing in before, of them purchasing in after)``: two [from, to) spans."""
    sql = """
        WITH earlier AS (
            SELECT DISTINCT contact_id FROM events
            WHERE type = 'purchase' AND occurred_at >= ? AND occurred_at < ?
        ),
        later AS (
            SELECT DISTINCT contact_id FROM events
            WHERE type = 'purchase' AND occurred_at >= ? AND occurred_at < ?
        )
        SELECT count(*), count(l.contact_id)
        FROM earlier AS e LEFT JOIN later AS l ON l.contact_id = e.contact_id
    """
    base, kept = conn.execute(sql, [*before, *after]).fetchone()
    return int(base), int(kept)


def monthly_orders(conn: Executes, *, until: str) -> list[tuple[str, int, float]]:
    """``(month, purchases, revenue)`` per month."""
    amount = dialect_of(conn).number("properties", "amount")
    sql = f"""
        SELECT substr(occurred_at, 1, 7), count(*), coalesce(sum({amount}), 0)
        FROM events WHERE type = 'purchase' AND occurred_at < ?
        GROUP BY substr(occurred_at, 1, 7) ORDER BY 1
    """
    return [tuple(row) for row in conn.execute(sql, [until]).fetchall()]


def survey_scores(
    conn: Executes, event_type: str, *, until: str
) -> list[tuple[str, int, int, int]]:
    """Per month: ``(month, answers, high, low)`` counting each contact's latest answer in the
    month: NPS (``nps.answered``): high = promoters (9-10), low = detractors (0-6); CSAT
    (``csat.answered``, 1-5): high = satisfied (4-5), low = the rest."""
    high, low = (
        ("score >= 9", "score <= 6")
        if event_type == "nps.answered"
        else ("score >= 4", "score < 4")
    )
    sql = f"""
        WITH answers AS (
            SELECT substr(occurred_at, 1, 7) AS month,
                   {dialect_of(conn).number("properties", "score")} AS score,
                   row_number() OVER (PARTITION BY contact_id, substr(occurred_at, 1, 7)
                                      ORDER BY occurred_at DESC, seq DESC) AS nth
            FROM events WHERE type = ? AND occurred_at < ?
        )
        SELECT month, count(*), count(CASE WHEN {high} THEN 1 END),
               count(CASE WHEN {low} THEN 1 END)
        FROM answers WHERE nth = 1 GROUP BY month ORDER BY month
    """
    return [tuple(row) for row in conn.execute(sql, [event_type, until]).fetchall()]


def email_engagement(conn: Executes, *, until: str) -> list[tuple[Any, ...]]:
    """Per template: ``(template, sent, opened, clicked, unsubscribed, bounced)``, each the
    number of distinct contacts with such an event naming the template."""
    template = dialect_of(conn).text("properties", "template")
    sql = f"""
        WITH mail AS (
            SELECT {template} AS template, type, contact_id
            FROM events
            WHERE type IN ('email.sent', 'email.opened', 'email.clicked', 'unsubscribed',
                           'email.bounced') AND occurred_at < ?
        )
        SELECT template,
               count(DISTINCT CASE WHEN type = 'email.sent' THEN contact_id END),
               count(DISTINCT CASE WHEN type = 'email.opened' THEN contact_id END),
               count(DISTINCT CASE WHEN type = 'email.clicked' THEN contact_id END),
               count(DISTINCT CASE WHEN type = 'unsubscribed' THEN contact_id END),
               count(DISTINCT CASE WHEN type = 'email.bounced' THEN contact_id END)
        FROM mail WHERE template IS NOT NULL GROUP BY template ORDER BY template
    """
    return [tuple(row) for row in conn.execute(sql, [until]).fetchall()]


def activation(
    conn: Executes, *, event_type: str, within_days: float, until: str
) -> tuple[int, int]:
    """``(signed up contacts, of them with an event_type within within_days of signup)``."""
    d = dialect_of(conn)
    signed_up = d.text("c.data", "metrics.signed_up_at")
    signed = f"{signed_up} IS NOT NULL AND {signed_up} < :until"
    # From the type's events to their contacts by primary key: the plan stays one pass over
    # those events whatever indexes events has (with one on (type, occurred_at) and no
    # statistics, SQLite would otherwise scan the events once per signed-up contact).
    sql = f"""
        WITH typed AS MATERIALIZED (
            SELECT contact_id, occurred_at FROM events
            WHERE type = :type AND occurred_at < :until
        ),
        activated AS (
            SELECT DISTINCT c.id FROM typed AS e JOIN contacts AS c ON c.id = e.contact_id
            WHERE {signed} AND e.occurred_at >= {signed_up}
              AND {d.days("e.occurred_at", signed_up)} <= :days
        )
        SELECT (SELECT count(*) FROM contacts AS c WHERE {signed}),
               (SELECT count(*) FROM activated)
    """
    signed, activated = conn.execute(
        sql, {"type": event_type, "days": within_days, "until": until}
    ).fetchone()
    return int(signed), int(activated)


def referred(conn: Executes, *, until: str) -> tuple[int, int]:
    """``(signed up contacts, of them with a referral.signup event)``."""
    signed_up = dialect_of(conn).text("c.data", "metrics.signed_up_at")
    signed = f"{signed_up} IS NOT NULL AND {signed_up} < :until"
    sql = f"""
        WITH referrals AS MATERIALIZED (
            SELECT DISTINCT contact_id FROM events
            WHERE type = 'referral.signup' AND occurred_at < :until
        )
        SELECT (SELECT count(*) FROM contacts AS c WHERE {signed}),
               (SELECT count(*) FROM referrals AS r JOIN contacts AS c ON c.id = r.contact_id
                WHERE {signed})
    """
    signed, with_referral = conn.execute(sql, {"until": until}).fetchone()
    return int(signed), int(with_referral)


def acquisition(
    conn: Executes, *, until: str, spend: Sequence[tuple[str, str, float]] = ()
) -> list[tuple[str, float, int, float]]:
    """Per channel: ``(channel, spend, customers acquired, their revenue)``. Spend is the sum of
    ``marketing.spend`` (or ``spend``, as the synthetic history has it) events' ``amount``
    before ``until`` by ``properties.channel``, plus ``spend`` rows ``(day 'YYYY-MM-DD',
    channel, amount)`` (a spend file) dated before ``until``'s day; a customer is acquired by
    the ``channel`` attribute of the contact (``signup`` property) when their first purchase is
    before ``until``; revenue is all their purchases."""
    d = dialect_of(conn)
    channel_of = d.text("properties", "channel")
    # The contact's acquisition channel: its ``channel`` attribute (a signup's ``channel``
    # property), or ``source`` where the CRM calls it so (the synthetic history does).
    contact_channel = (
        f"coalesce({d.text('c.data', 'attributes.channel')}, "
        f"{d.text('c.data', 'attributes.source')})"
    )
    sql = f"""
        WITH spend_file AS (
            SELECT {d.json_item("value", 0)} AS day, {d.json_item("value", 1)} AS channel,
                   CAST({d.json_item("value", 2)} AS double precision) AS amount
            FROM {d.json_rows(":spend")} AS items
        ),
        spent AS (
            SELECT {channel_of} AS channel, {d.number("properties", "amount")} AS amount
            FROM events WHERE type IN ('marketing.spend', 'spend') AND occurred_at < :until
            UNION ALL
            SELECT channel, amount FROM spend_file WHERE day < substr(:until, 1, 10)
        ),
        spend AS (SELECT channel, sum(amount) AS amount FROM spent GROUP BY channel),
        customers AS (
            SELECT {contact_channel} AS channel, count(*) AS acquired,
                   sum({d.number("c.data", "metrics.total_spent")}) AS revenue
            FROM contacts AS c
            WHERE {d.text("c.data", "metrics.first_order_at")} < :until
              AND {contact_channel} IS NOT NULL
            GROUP BY {contact_channel}
        ),
        channels AS (SELECT channel FROM spend UNION SELECT channel FROM customers)
        SELECT ch.channel, coalesce(s.amount, 0), coalesce(cu.acquired, 0),
               coalesce(cu.revenue, 0)
        FROM channels AS ch
        LEFT JOIN spend AS s ON s.channel = ch.channel
        LEFT JOIN customers AS cu ON cu.channel = ch.channel
        WHERE ch.channel IS NOT NULL ORDER BY ch.channel
    """
    rows = json.dumps([list(row) for row in spend])
    return [tuple(row) for row in conn.execute(sql, {"until": until, "spend": rows}).fetchall()]


def rule_fires_by_week(conn: Executes) -> list[tuple[str, str, int]]:
    """``(week's Monday 'YYYY-MM-DD', rule, fires)`` from the decision traces."""
    sql = f"""
        SELECT {dialect_of(conn).week_start("at")} AS week, ruleset || '/' || rule, count(*)
        FROM traces WHERE decision = 'fired' GROUP BY week, ruleset, rule ORDER BY week, 2
    """
    return [tuple(row) for row in conn.execute(sql).fetchall()]


def stage_flows(conn: Executes) -> list[tuple[str, str, int]]:
    """``(from stage, to stage, transitions)``: the flows between stages."""
    rows = conn.execute(
        "SELECT from_stage, to_stage, count(*) FROM stage_transitions "
        "WHERE from_stage IS NOT NULL GROUP BY from_stage, to_stage ORDER BY 1, 2"
    ).fetchall()
    return [tuple(row) for row in rows]


# -- conversion goals ---------------------------------------------------------------------------


def goal_attribution(
    conn: Executes, *, ruleset: str, rule: str, goal: GoalQuery, until: str
) -> tuple[int, int, int, float]:
    """``(exposed contacts, converted contacts, conversions, revenue)`` of one rule's goal.

    Exposed: contacts the rule fired for (its ``fired`` traces) before ``until``, from their
    first fire; a conversion is a goal event of the contact at or after that first fire, at
    most ``goal.within_days`` later and before ``until``, meeting ``goal.where``; revenue sums
    the goal events' ``goal.revenue`` property (numbers only)."""
    d = dialect_of(conn)
    params: dict[str, Any] = {
        "ruleset": ruleset,
        "rule": rule,
        "until": until,
        "event": goal.event,
        "within": goal.within_days,
    }
    where = "TRUE" if goal.where is None else goal_filter(d, goal.where, "e.properties", params)
    revenue = "0" if goal.revenue is None else d.typed("e.properties", goal.revenue, "number")
    sql = f"""
        WITH exposed AS (
            SELECT contact_id, min(at) AS first_at FROM traces
            WHERE ruleset = :ruleset AND rule = :rule AND decision = 'fired' AND at < :until
            GROUP BY contact_id
        ),
        goal_events AS MATERIALIZED (
            SELECT contact_id, occurred_at, properties FROM events
            WHERE type = :event AND occurred_at < :until
        ),
        conversions AS (
            SELECT x.contact_id, {revenue} AS revenue
            FROM exposed AS x JOIN goal_events AS e ON e.contact_id = x.contact_id
            WHERE e.occurred_at >= x.first_at
              AND {d.days("e.occurred_at", "x.first_at")} <= :within AND {where}
        )
        SELECT (SELECT count(*) FROM exposed), count(DISTINCT contact_id), count(*),
               coalesce(sum(revenue), 0)
        FROM conversions
    """
    exposed, converted, conversions, total = conn.execute(sql, params).fetchone()
    return int(exposed), int(converted), int(conversions), float(total)


def goal_filter(d: Dialect, node: Filter, column: str, params: dict[str, Any]) -> str:
    """A goal's ``where`` as a SQL boolean over the JSON ``column`` (never NULL, so ``NOT``
    means what the rule language's ``not`` means), its values added to ``params``. As strict
    as the rule language: a text never equals a number, true is not 1, a missing property
    fails every test but ``exists: false`` (a null one is there: it is ``ne`` anything)."""
    if isinstance(node, Group):
        parts = [goal_filter(d, part, column, params) for part in node.parts]
        if node.kind == "not":
            return f"(NOT {parts[0]})"
        return "(" + (" AND " if node.kind == "all" else " OR ").join(parts) + ")"

    def value(item: Any) -> str:
        name = f"g{len(params)}"
        params[name] = item
        return f":{name}"

    op, wanted, path = node.op, node.value, node.path
    if op == "exists":
        present = d.present(column, path)
        return present if wanted is not False else f"(NOT {present})"
    if op in ("in", "not_in"):
        kind = "string" if isinstance(wanted[0], str) else "number"
        members = ", ".join(value(item) for item in wanted)
        test = f"coalesce({d.typed(column, path, kind)} IN ({members}), FALSE)"
        return test if op == "in" else f"({d.present(column, path)} AND NOT {test})"
    if op in ("eq", "ne"):
        if isinstance(wanted, bool):
            test = d.is_boolean(column, path, wanted)
        else:
            kind = "string" if isinstance(wanted, str) else "number"
            test = f"coalesce({d.typed(column, path, kind)} = {value(wanted)}, FALSE)"
        return test if op == "eq" else f"({d.present(column, path)} AND NOT {test})"
    symbol = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
    return f"coalesce({d.typed(column, path, 'number')} {symbol} {value(wanted)}, FALSE)"


# -- the journey map ----------------------------------------------------------------------------


def stage_counts(conn: Executes) -> list[tuple[str, int, int]]:
    """``(stage, contacts in it now, contacts who ever reached it)`` per stage seen."""
    sql = """
        WITH now_in AS (SELECT stage, count(*) AS n FROM contacts WHERE stage IS NOT NULL
                        GROUP BY stage),
        reached AS (SELECT to_stage AS stage, count(DISTINCT contact_id) AS n
                    FROM stage_transitions GROUP BY to_stage),
        stages AS (SELECT stage FROM now_in UNION SELECT stage FROM reached)
        SELECT s.stage, coalesce(n.n, 0), coalesce(r.n, 0) FROM stages AS s
        LEFT JOIN now_in AS n ON n.stage = s.stage LEFT JOIN reached AS r ON r.stage = s.stage
        ORDER BY s.stage
    """
    return [tuple(row) for row in conn.execute(sql).fetchall()]


def transitions_by_cause(conn: Executes, *, until: str) -> list[tuple[str, str | None, str, int]]:
    """``(cause, from stage, to stage, transitions)`` before ``until``: a rule's stage.set
    records its cause as ``rule <id> of ruleset <name>`` (and a reason after a colon)."""
    rows = conn.execute(
        "SELECT cause, from_stage, to_stage, count(*) FROM stage_transitions WHERE at < ? "
        "GROUP BY cause, from_stage, to_stage ORDER BY 1, 2, 3",
        [until],
    ).fetchall()
    return [tuple(row) for row in rows]


def fires_by_rule(conn: Executes, *, until: str) -> list[tuple[str, str, int, int]]:
    """``(ruleset, rule, fires, contacts)``: decisions ``fired`` in the traces before ``until``."""
    rows = conn.execute(
        "SELECT ruleset, rule, count(*), count(DISTINCT contact_id) FROM traces "
        "WHERE decision = 'fired' AND at < ? GROUP BY ruleset, rule ORDER BY 1, 2",
        [until],
    ).fetchall()
    return [tuple(row) for row in rows]


# -- customer health ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthPartQuery:
    """One part of the health score as the store computes it
    (``clm_engine.analytics.health``): ``count`` events of ``events`` (score 100 at
    ``target``, or 0 at ``target`` when ``lower_is_better``), or the ``value`` at ``fact``
    in the contact's state (its time at ``at`` in the window), scaled from ``[low, high]``."""

    measure: str
    events: tuple[str, ...]
    weight: float
    target: float
    lower_is_better: bool
    fact: str | None
    at: str | None
    low: float
    high: float


def _health(d: Dialect, parts: Sequence[HealthPartQuery], params: dict[str, Any], one: bool) -> str:
    """The CTEs ending in ``health (contact_id, v0, s0, v1, s1, ..., score)``: each part's
    value and score, and the weighted mean of the scores there are, per contact (only
    ``:contact`` when ``one``)."""

    def listed(values: Sequence[Any], prefix: str) -> str:
        names = []
        for n, value in enumerate(values):
            params[f"{prefix}{n}"] = value
            names.append(f":{prefix}{n}")
        return ", ".join(names)

    only = " AND contact_id = :contact" if one else ""
    every_type = sorted({t for p in parts for t in p.events})
    ctes = [
        f"""windowed AS (
            SELECT contact_id, type FROM events
            WHERE type IN ({listed(every_type or [""], "t")}) AND occurred_at >= :since
              AND occurred_at < :until{only})"""
    ]
    columns, joins, weighted, present = [], [], [], []
    for i, part in enumerate(parts):
        types = listed(part.events, f"p{i}t")
        params[f"w{i}"] = part.weight
        if part.measure == "count":
            params[f"target{i}"] = part.target
            ctes.append(
                f"part{i} AS (SELECT contact_id, count(*) AS v FROM windowed "
                f"WHERE type IN ({types}) GROUP BY contact_id)"
            )
            share = d.smaller("1.0", f"coalesce(p{i}.v, 0) * 1.0 / :target{i}")
            score = f"100.0 * (1.0 - {share})" if part.lower_is_better else f"100.0 * {share}"
            columns.append(f"coalesce(p{i}.v, 0) AS v{i}, {score} AS s{i}")
        else:
            assert part.fact is not None
            params[f"low{i}"], params[f"high{i}"] = part.low, part.high
            value = d.typed("c.data", part.fact, "number")
            if part.at is not None:
                at = d.text("c.data", part.at)
                params["first_second"] = params["since"][:19]
                params["last_second"] = last_second(params["until"])
                second = f"substr({at}, 1, 19)"
                value = (
                    f"CASE WHEN {second} >= :first_second AND {second} <= :last_second "
                    f"THEN {value} END"
                )
            ctes.append(
                f"part{i} AS (SELECT c.id AS contact_id, {value} AS v FROM contacts AS c"
                f"{' WHERE c.id = :contact' if one else ''})"
            )
            scaled = f"(p{i}.v - :low{i}) * 1.0 / (:high{i} - :low{i})"
            clamped = d.larger("0.0", d.smaller("1.0", scaled))
            columns.append(
                f"p{i}.v AS v{i}, CASE WHEN p{i}.v IS NULL THEN NULL ELSE 100.0 * {clamped} END "
                f"AS s{i}"
            )
        joins.append(f"LEFT JOIN part{i} AS p{i} ON p{i}.contact_id = c.id")
        weighted.append(f"coalesce(s{i}, 0) * :w{i}")
        present.append(f"CASE WHEN s{i} IS NULL THEN 0 ELSE :w{i} END")
    ctes.append(
        f"parts AS (SELECT c.id AS contact_id, {', '.join(columns)} FROM contacts AS c "
        f"{' '.join(joins)}{' WHERE c.id = :contact' if one else ''})"
    )
    values = ", ".join(f"v{i}, s{i}" for i in range(len(parts)))
    ctes.append(
        f"health AS (SELECT contact_id, {values}, "
        f"({' + '.join(weighted)}) / nullif({' + '.join(present)}, 0) AS score FROM parts)"
    )
    return "WITH " + ",\n".join(ctes)


def last_second(until: str) -> str:
    """The last whole second before ``until`` (UTC time text), as the first 19 characters of
    a time: times kept to the second (``metrics.nps_answered_at``) compare with it."""
    moment = datetime.fromisoformat(until.replace("Z", "+00:00")) - timedelta(microseconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def health_scores(
    conn: Executes,
    parts: Sequence[HealthPartQuery],
    *,
    since: str,
    until: str,
    contact_id: str,
) -> list[tuple[Any, ...]]:
    """``(contact_id, v0, s0, v1, s1, ..., score)`` of one contact: its events in
    [``since``, ``until``)."""
    params: dict[str, Any] = {"since": since, "until": until, "contact": contact_id}
    sql = _health(dialect_of(conn), parts, params, one=True) + " SELECT * FROM health"
    return [tuple(row) for row in conn.execute(sql, params).fetchall()]


def health_bins(
    conn: Executes, parts: Sequence[HealthPartQuery], *, since: str, until: str
) -> list[tuple[int, int, float, list[tuple[float, int]]]]:
    """Every contact's score by bins of ten points (the last holds 100): ``(bin, contacts,
    sum of their scores, [(sum of part i's scores, contacts with part i)])``."""
    d = dialect_of(conn)
    params: dict[str, Any] = {"since": since, "until": until}
    sums = ", ".join(f"coalesce(sum(s{i}), 0), count(s{i})" for i in range(len(parts)))
    sql = (
        _health(d, parts, params, one=False)
        + f"""
        SELECT {d.smaller("9", d.floor_int("score / 10"))} AS bin, count(*), sum(score), {sums}
        FROM health WHERE score IS NOT NULL GROUP BY 1 ORDER BY 1
        """
    )
    result = []
    for row in conn.execute(sql, params).fetchall():
        rest = row[3:]
        result.append(
            (
                int(row[0]),
                int(row[1]),
                float(row[2]),
                [(float(rest[2 * i]), int(rest[2 * i + 1])) for i in range(len(parts))],
            )
        )
    return result
