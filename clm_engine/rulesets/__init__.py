"""Rulesets: the JSON files ops teams write, their schema, and their validation.

The engine calls :func:`load_rulesets` (valid rulesets, or one error listing every problem);
``clm validate`` calls :func:`validate_files` (the valid rulesets and every problem). Each
:class:`RulesetProblem` has the file, the JSON pointer, the line and column, and a message
that says what was found and what was expected. The format is documented in
``docs/rulesets.md``; the JSON Schema ships beside this module (:data:`SCHEMA_PATH`).
"""

from .loading import (
    DocumentContext,
    LoadedDocument,
    LoadedRuleset,
    Validated,
    load_all,
    load_rulesets,
    ruleset_files,
    stage_model,
    validate_all,
    validate_files,
)
from .problems import RulesetProblem, RulesetValidationError
from .schema import SCHEMA_PATH, load_schema

__all__ = [
    "SCHEMA_PATH",
    "DocumentContext",
    "LoadedDocument",
    "LoadedRuleset",
    "RulesetProblem",
    "RulesetValidationError",
    "Validated",
    "load_all",
    "load_rulesets",
    "load_schema",
    "ruleset_files",
    "stage_model",
    "validate_all",
    "validate_files",
]
