"""The RFM segment definitions: a JSON document ops teams may edit, validated like a ruleset
(every problem at once, each with its file, JSON pointer, line and column).

The shipped default is ``rfm_segments.json`` beside this module; ``docs/metrics.md`` documents
the format.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..conditions.values import parse_duration
from ..rulesets.problems import Issue, RulesetProblem, RulesetValidationError
from ..rulesets.pydantic_errors import pydantic_issues
from ..rulesets.source import Locator, duplicate_keys, parse, plain

M = TypeVar("M", bound=BaseModel)

DEFAULT_PATH = Path(__file__).with_name("rfm_segments.json")

Score = Annotated[int, Field(ge=1, le=5)]


class Segment(BaseModel):
    """One segment: the ranges (inclusive) of the three scores it takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    recency: tuple[Score, Score] = (1, 5)
    frequency: tuple[Score, Score] = (1, 5)
    monetary: tuple[Score, Score] = (1, 5)
    description: str = ""

    @field_validator("recency", "frequency", "monetary")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] > value[1]:
            raise ValueError(f"a range is [lowest, highest]; got [{value[0]}, {value[1]}]")
        return value


class Definitions(BaseModel):
    """The whole document."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    description: str = ""
    window: str = "P365D"
    segments: list[Segment] = Field(min_length=1)
    otherwise: str = Field(default="other", min_length=1)

    @field_validator("window")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("the window must be longer than zero")
        return value

    @property
    def window_length(self) -> timedelta:
        return parse_duration(self.window)

    def rows(self) -> list[tuple[str, int, int, int, int, int, int]]:
        """The segments as the store takes them: (name, r_min, r_max, f_min, f_max, m_min,
        m_max), in order."""
        return [(s.name, *s.recency, *s.frequency, *s.monetary) for s in self.segments]

    def names(self) -> list[str]:
        return list(dict.fromkeys([*(s.name for s in self.segments), self.otherwise]))


class DefinitionsError(RulesetValidationError):
    """RFM definitions that failed validation; ``problems`` holds every problem."""

    def __init__(self, problems: list[RulesetProblem]) -> None:
        super().__init__(problems)
        self.args = (str(self).replace("invalid rulesets", "invalid RFM definitions", 1),)


def load_definitions(path: str | Path | None = None) -> Definitions:
    """The definitions in ``path`` (the shipped default without one); a
    :class:`DefinitionsError` listing every problem if they are not valid."""
    return load_document(Path(path) if path is not None else DEFAULT_PATH, Definitions)


def load_document(file: Path, model_type: type[M]) -> M:
    """A JSON document beside the rulesets (RFM definitions, a health score), validated
    against ``model_type``; a :class:`DefinitionsError` listing every problem with its file,
    pointer and line, as rulesets report theirs."""
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DefinitionsError(
            [RulesetProblem(str(file), "", None, None, f"cannot read: {error}")]
        ) from None
    data, syntax = parse(text)
    if syntax is not None:
        raise DefinitionsError(
            [RulesetProblem(str(file), "", syntax.line, syntax.column, syntax.message)]
        )
    issues: list[Issue] = duplicate_keys(data)
    data = plain(data)
    model: M | None = None
    try:
        model = model_type.model_validate(data)
    except ValidationError as error:
        issues += pydantic_issues(error, data)
    if issues or model is None:
        locator = Locator(text)
        problems = []
        for issue in issues:
            line, column = locator.position(issue.pointer, at_key=issue.at_key)
            problems.append(
                RulesetProblem(str(file), issue.pointer, line, column, issue.message, issue.hint)
            )
        raise DefinitionsError(problems)
    return model


def describe(definitions: Definitions) -> list[dict[str, Any]]:
    """The segments as JSON-able rows (for reports)."""
    return [segment.model_dump() for segment in definitions.segments]
