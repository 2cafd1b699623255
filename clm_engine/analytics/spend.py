"""Acquisition spend from a file: the CSV a marketing team exports (``date,channel,amount,
currency``), read for the CAC and ROMI of ``clm report --spend FILE``.

Spend may also arrive as ``marketing.spend`` events (``docs/metrics.md``); the report adds
both. A file is read whole and checked before anything is computed: every bad line is named
with the file, its line number and what was expected, and one bad line means no report.
Amounts are exact decimals in the currency's minor units (``clm_engine.money``); one file is
one currency, since purchase amounts carry none and a CAC across currencies means nothing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ..errors import ClmError
from ..money import minor_digits, to_minor

COLUMNS = ("date", "channel", "amount", "currency")
#: The largest amount taken, in minor units: beyond it a float (how the store sums) loses cents.
MAX_MINOR = 2**53
#: Problems shown at most (a file of a million bad lines says so in a few lines).
SHOWN = 20


class SpendFileError(ClmError):
    """A spend file that cannot be read; the message lists each problem with its line."""


@dataclass
class SpendFile:
    """The rows of a spend file: ``(day 'YYYY-MM-DD', channel, amount)``, and its currency."""

    path: str
    currency: str | None = None
    rows: list[tuple[str, str, float]] = field(default_factory=list)

    def total(self) -> float:
        return round(sum(amount for _, _, amount in self.rows), 2)


def load_spend(path: str | Path) -> SpendFile:
    """The spend in ``path``; :class:`SpendFileError` naming every bad line (up to
    :data:`SHOWN`) if any."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SpendFileError(f"{file}: cannot read: {error}") from None
    result = SpendFile(str(file))
    problems: list[str] = []
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != list(COLUMNS):
        raise SpendFileError(
            f"{file}:1: expected the header {','.join(COLUMNS)}, got "
            f"{','.join(header) if header else 'an empty file'!r}"
        )
    currencies: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(COLUMNS):
            problems.append(
                f"{file}:{line}: expected 4 columns ({','.join(COLUMNS)}), got {len(row)}"
            )
            continue
        day, channel, amount, currency = (cell.strip() for cell in row)
        try:
            date.fromisoformat(day)
            if len(day) != 10:
                raise ValueError
        except ValueError:
            problems.append(f"{file}:{line}: date: expected YYYY-MM-DD, got {day!r}")
            continue
        if not channel or not channel.isprintable():
            problems.append(f"{file}:{line}: channel: expected a name, got {channel!r}")
            continue
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            problems.append(
                f"{file}:{line}: currency: expected an ISO 4217 code like EUR, got {currency!r}"
            )
            continue
        currencies.setdefault(currency, line)
        try:
            minor = to_minor(amount, currency)
        except ValueError as error:
            problems.append(f"{file}:{line}: amount: {error}")
            continue
        if minor < 0:
            problems.append(f"{file}:{line}: amount: expected zero or more, got {amount!r}")
            continue
        if minor > MAX_MINOR:
            problems.append(
                f"{file}:{line}: amount: expected at most {MAX_MINOR:,} minor units, got {amount!r}"
            )
            continue
        result.rows.append((day, channel, minor / 10 ** minor_digits(currency)))
    if len(currencies) > 1:
        first, *others = currencies.items()
        problems += [
            f"{file}:{at}: currency: expected {first[0]} (as on line {first[1]}): one file is "
            f"one currency, got {code}"
            for code, at in others
        ]
    if problems:
        more = len(problems) - SHOWN
        shown = problems[:SHOWN] + ([f"... and {more} more"] if more > 0 else [])
        raise SpendFileError("invalid spend file:\n  " + "\n  ".join(shown))
    result.currency = next(iter(currencies), None)
    return result
