"""Rules the code keeps that no linter checks for us.

``mypy --strict`` runs in ``make test``; where a line must silence it, the line says why, so
the next reader can tell a known gap in the types from a bug being hidden.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``# type: ignore[code]`` followed by a comment giving the reason.
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def checked_files() -> list[Path]:
    folders = [ROOT / "clm_engine", ROOT / "tests", ROOT / "benchmarks", ROOT / "scripts"]
    folders += sorted(ROOT.glob("plugins/*"))
    return sorted(p for folder in folders for p in folder.rglob("*.py") if ".venv" not in p.parts)


def unexplained_ignores(text: str) -> list[int]:
    """Lines whose ``type: ignore`` names no error code or gives no reason."""
    bad = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = IGNORE.search(line)
        if match is None:
            continue
        reason = match["rest"].strip().lstrip("#").strip()
        if not match["codes"] or not reason:
            bad.append(number)
    return bad


def test_every_type_ignore_names_its_code_and_reason() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in checked_files()
        if path != Path(__file__).resolve()  # its own examples below
        for number in unexplained_ignores(path.read_text())
    ]
    assert problems == [], "type: ignore without [code] and '# reason': " + ", ".join(problems)


def test_the_rule_tells_a_reason_from_none() -> None:
    assert unexplained_ignores("x = 1  # type: ignore") == [1]
    assert unexplained_ignores("x = 1  # type: ignore[misc]") == [1]
    assert unexplained_ignores("x = 1  # type: ignore[misc]  # pydantic sets it") == []
