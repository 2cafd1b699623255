"""Finding ruleset files, validating them all at once, and loading them for the engine.

Validation runs in steps, each only on what the step before accepted, and collects every
problem of every file before returning:

a. JSON syntax (and keys written twice);
b. the JSON Schema, every error, explained (``schema_errors``);
c. the pydantic models, for what the schema cannot say (``pydantic_errors``);
d. semantic checks against the registered plugins and the shared stage model (``semantics``),
   and across files: ruleset names are unique, and files that list stages agree.

Problems come back sorted by file, then line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..models import DEFAULT_STAGES, Ruleset
from .problems import Issue, RulesetProblem, RulesetValidationError, pointer, sort_key
from .pydantic_errors import pydantic_issues
from .schema_errors import schema_issues
from .semantics import Registries, check_ruleset, warnings_of
from .source import Locator, duplicate_keys, non_finite_numbers, parse, plain, too_deep

if TYPE_CHECKING:
    from ..conditions.checker import Conditions
    from ..registry import Registry


@dataclass(frozen=True)
class LoadedRuleset:
    """A valid ruleset and where it came from; ``content_hash`` is the sha256 of the file."""

    path: str
    ruleset: Ruleset
    content_hash: str
    source: str


@dataclass(frozen=True)
class LoadedDocument:
    """A valid plugin document (a sequence, a catalogue): its kind, name and model."""

    path: str
    kind: str
    name: str
    model: Any
    content_hash: str
    source: str = ""  # the file's text, as loaded


@dataclass
class Validated:
    """What validating the ruleset paths gave: valid rulesets and documents, and problems."""

    rulesets: list[LoadedRuleset]
    documents: list[LoadedDocument]
    problems: list[RulesetProblem]
    #: Valid, but probably not what was meant (``clm validate`` shows them; loading goes on).
    warnings: list[RulesetProblem] = field(default_factory=list)

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """The documents' models by kind and name: what facts and actions see."""
        found: dict[str, dict[str, Any]] = {}
        for document in self.documents:
            found.setdefault(document.kind, {})[document.name] = document.model
        return found


@dataclass
class _Document:
    path: str
    text: str = ""
    content_hash: str = ""
    data: Any = None
    ruleset: Ruleset | None = None
    kind: str | None = None  # a plugin document's kind, when it is one
    model: Any = None
    issues: list[Issue] = field(default_factory=list)
    problems: list[RulesetProblem] = field(default_factory=list)

    def problem(self, issue: Issue, locator: Locator) -> RulesetProblem:
        line, column = locator.position(issue.pointer, at_key=issue.at_key)
        return RulesetProblem(self.path, issue.pointer, line, column, issue.message, issue.hint)


# -- files -------------------------------------------------------------------------------------


def ruleset_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ruleset files in ``paths``: files as given, ``*.json`` under directories.

    Directories are searched recursively, in sorted order, skipping hidden entries and
    ``*.schema.json`` (a copy of the schema beside the rulesets is not a ruleset). Raises
    :class:`RulesetValidationError` if a path does not exist.
    """
    files, problems = _collect(paths)
    if problems:
        raise RulesetValidationError(problems)
    return files


def _collect(paths: Iterable[str | Path]) -> tuple[list[Path], list[RulesetProblem]]:
    files: list[Path] = []
    problems: list[RulesetProblem] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*.json")
                if p.is_file()
                and not p.name.endswith(".schema.json")
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.exists():
            found = [path]
        else:
            problems.append(RulesetProblem(str(given), "", None, None, "no such file or directory"))
            continue
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    return files, problems


# -- validation --------------------------------------------------------------------------------


def validate_files(
    paths: Iterable[str | Path],
    *,
    registry: Registry | None = None,
) -> tuple[list[LoadedRuleset], list[RulesetProblem]]:
    """Validate every ruleset file in ``paths``; the valid rulesets and every problem.



    rulesets. Never raises for a bad file: a missing path or an unreadable file is a problem.
    Plugin documents are validated too (:func:`validate_all` returns them).
    """
    result = validate_all(paths, registry=registry)
    return result.rulesets, result.problems


def validate_all(
    paths: Iterable[str | Path],
    *,
    registry: Registry | None = None,
) -> Validated:
    """Validate every ruleset and plugin document in ``paths``, collecting every problem."""
    from ..registry import Registry

    registry = Registry() if registry is None else registry
    kinds = registry.document_kinds
    files, problems = _collect(paths)
    documents = [_read(file, kinds) for file in files]
    parsed = [d for d in documents if d.ruleset is not None]
    plugin_docs = [d for d in documents if d.model is not None]
    registries = Registries(registry.actions, registry.operators, registry.facts)
    _check_names(parsed, plugin_docs)
    by_kind: dict[str, dict[str, Any]] = {}
    for document in plugin_docs:
        by_kind.setdefault(document.kind, {})[_name_of(document)] = document.model  # type: ignore[arg-type]  # plugin documents always have a kind
    stages = stage_model(d.ruleset for d in parsed if d.ruleset is not None)
    for document in parsed:
        assert document.ruleset is not None
        # A file whose stages disagree is checked against its own (the conflict is
        # reported once, at /stages, rather than as every stage name it uses).
        own = tuple(dict.fromkeys(document.ruleset.stages or ())) or stages
        document.issues += check_ruleset(document.ruleset, registries, own)
        document.issues += _references(document.ruleset, registries, by_kind)
    from ..conditions.checker import Conditions  # conditions import this package's problems

    context = DocumentContext(
        registries.actions,
        registries.facts,
        registries.operators,
        stages,
        by_kind,
        Conditions(registries.operators, registries.facts, stages),
    )
    for document in plugin_docs:
        check = kinds[document.kind].check  # type: ignore[index]  # plugin documents always have a kind
        if check is not None:
            document.issues += _plugin_check(check, document, context)
    loaded, loaded_docs = [], []
    warnings: list[RulesetProblem] = []
    for document in plugin_docs:
        warn = kinds[document.kind].warn  # type: ignore[index]  # plugin documents always have a kind
        if warn is not None and not document.issues:
            found_warnings = _plugin_check(warn, document, context)
            if found_warnings:
                locator = Locator(document.text)
                warnings += [document.problem(issue, locator) for issue in found_warnings]
    for document in parsed:
        assert document.ruleset is not None
        found_warnings = warnings_of(document.ruleset)
        if not document.issues:
            found_warnings += _references(document.ruleset, registries, by_kind, "warn")
        if found_warnings:
            locator = Locator(document.text)
            warnings += [document.problem(issue, locator) for issue in found_warnings]
    for document in documents:
        if document.issues:
            locator = Locator(document.text)
            found = {document.problem(issue, locator) for issue in document.issues}
            problems += found
        problems += document.problems
        if document.issues or document.problems:
            continue
        if document.ruleset is not None:
            loaded.append(
                LoadedRuleset(document.path, document.ruleset, document.content_hash, document.text)
            )
        elif document.model is not None:
            loaded_docs.append(
                LoadedDocument(
                    document.path,
                    document.kind,  # type: ignore[arg-type]  # plugin documents always have a kind
                    _name_of(document),
                    document.model,
                    document.content_hash,
                    document.text,
                )
            )
    return Validated(
        loaded, loaded_docs, sorted(problems, key=sort_key), sorted(warnings, key=sort_key)
    )


@dataclass(frozen=True)
class DocumentContext:
    """What a document kind's ``check`` may cross-check against."""

    actions: Mapping[str, Any]
    facts: Mapping[str, Any]
    operators: Mapping[str, Any]
    stages: tuple[str, ...]
    documents: Mapping[str, Mapping[str, Any]]
    #: ``conditions.problems(condition)``: check a condition the document holds (a sequence's
    #: exit condition) as the rulesets' own are checked; (relative pointer, message) pairs.
    conditions: Conditions


def _name_of(document: _Document) -> str:
    return str(document.data[document.kind])


def _plugin_check(check: Any, document: _Document, context: DocumentContext) -> list[Issue]:
    try:
        found = list(check(document.model, context) or ())
    except Exception as error:  # a plugin's bug is a problem to show, not a crash
        return [Issue("", f"the {document.kind} check failed: {type(error).__name__}: {error}")]
    return [Issue(str(where), str(message)) for where, message in found]


def _references(
    ruleset: Ruleset,
    registries: Registries,
    documents: Mapping[str, Mapping[str, Any]],
    kind: str = "check",
) -> list[Issue]:
    """Ask each action's params model what its ``with`` names that no document defines
    (``check_references``: problems), or, with ``kind="warn"``, what is valid but will not
    work as meant (``warn_references``: warnings, such as template data never passed)."""
    issues = []
    for index, rule in enumerate(ruleset.rules):
        for position, call in enumerate(rule.then):
            spec = registries.actions.get(call.action)
            check = getattr(getattr(spec, "params", None), f"{kind}_references", None)
            if check is None:
                continue
            try:
                params = spec.params.model_validate(call.with_)  # type: ignore[union-attr]  # params exists: the check method was found on it
                messages = list(check(params, documents) or ())
            except ValidationError:
                continue  # reported by the semantic checks already
            except Exception as error:
                messages = [f"checking {call.action}'s references failed: {error}"]
            where = pointer("rules", index, "then", position, "with")
            issues += [Issue(where, str(message)) for message in messages]
    return issues


def load_rulesets(
    paths: Iterable[str | Path],
    *,
    registry: Registry | None = None,
) -> list[LoadedRuleset]:
    """Every ruleset in ``paths``, validated; raises listing every problem if there is one.

    The error is a :class:`RulesetValidationError` (a ``RulesetError``) whose message starts
    with the count; its ``problems`` attribute holds them.
    """
    return load_all(paths, registry=registry).rulesets


def load_all(
    paths: Iterable[str | Path],
    *,
    registry: Registry | None = None,
) -> Validated:
    """Every ruleset and plugin document in ``paths``; raises if anything is invalid."""
    result = validate_all(paths, registry=registry)
    if result.problems:
        raise RulesetValidationError(result.problems)
    return result


def stage_model(rulesets: Iterable[Ruleset]) -> tuple[str, ...]:
    """The stages every ruleset shares: the first ``stages`` listed, else the default."""
    for ruleset in rulesets:
        if ruleset.stages:
            return tuple(dict.fromkeys(ruleset.stages))
    return DEFAULT_STAGES


def _read(file: Path, kinds: Mapping[str, Any]) -> _Document:
    """Steps a to c for one file (a plugin document goes to its kind's model at step b)."""
    document = _Document(str(file))
    try:
        raw = file.read_bytes()
    except OSError as error:
        document.problems.append(
            RulesetProblem(document.path, "", None, None, f"cannot read: {error.strerror}")
        )
        return document
    document.content_hash = hashlib.sha256(raw).hexdigest()
    try:
        document.text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        document.problems.append(
            RulesetProblem(document.path, "", None, None, f"not UTF-8 text (byte {error.start})")
        )
        return document
    data, syntax = parse(document.text)
    if syntax is not None:
        document.problems.append(
            RulesetProblem(
                document.path, "", syntax.line, syntax.column, syntax.message, syntax.hint
            )
        )
        return document
    deep = too_deep(data)
    if deep is not None:
        document.issues.append(deep)
        return document
    document.issues += duplicate_keys(data) + non_finite_numbers(data)
    document.data = data = plain(data)
    kind = _kind_of(data, kinds)
    if kind is not None:
        document.kind = kind
        body = {k: v for k, v in data.items() if k != "$schema"}
        try:
            document.model = kinds[kind].model.model_validate(body)
        except ValidationError as error:
            document.issues += pydantic_issues(error, body)
        return document
    schema = schema_issues(data)
    if schema:
        document.issues += schema
        return document
    try:
        document.ruleset = Ruleset.model_validate(data)
    except ValidationError as error:
        document.issues += pydantic_issues(error, data)
    return document


def _kind_of(data: Any, kinds: Mapping[str, Any]) -> str | None:
    """The plugin document kind of a parsed file, or None for a ruleset (or nothing known)."""
    if not isinstance(data, dict) or "ruleset" in data:
        return None
    return next((key for key in data if key in kinds), None)


def _check_names(rulesets: Sequence[_Document], documents: Sequence[_Document]) -> None:
    """Names are unique: rulesets among rulesets, documents among their kind."""
    if rulesets:
        _check_across(rulesets)
    seen: dict[tuple[str, str], str] = {}
    for document in documents:
        name = _name_of(document)
        other = seen.setdefault((document.kind, name), document.path)  # type: ignore[arg-type]  # every document has a kind by now (parse sets it)
        if other != document.path:
            document.issues.append(
                Issue(
                    f"/{document.kind}",
                    f"{document.kind} {name!r} is also defined in {other}",
                    hint=f"{document.kind} names are unique across files: rename one",
                )
            )


def _check_across(documents: Sequence[_Document]) -> None:
    """Ruleset names are unique, and every file that lists stages lists the same ones."""
    names: dict[str, str] = {}
    experiments: dict[str, str] = {}
    first_stages: _Document | None = None
    for document in documents:
        ruleset = document.ruleset
        assert ruleset is not None
        other = names.setdefault(ruleset.ruleset, document.path)
        if other != document.path:
            document.issues.append(
                Issue(
                    "/ruleset",
                    f"ruleset {ruleset.ruleset!r} is also defined in {other}",
                    hint="ruleset names are unique across files: rename one",
                )
            )
        for index, rule in enumerate(ruleset.rules):
            if rule.experiment is not None:
                where = f"{document.path} /rules/{index}"
                other = experiments.setdefault(rule.experiment.name, where)
                if other != where:
                    document.issues.append(
                        Issue(
                            f"/rules/{index}/experiment/name",
                            f"experiment {rule.experiment.name!r} is also declared at {other}",
                            hint="experiment names are unique across rulesets: rename one",
                        )
                    )
        if not ruleset.stages:
            continue
        if first_stages is None:
            first_stages = document
            continue
        assert first_stages.ruleset is not None and first_stages.ruleset.stages
        if ruleset.stages != first_stages.ruleset.stages:
            document.issues.append(
                Issue(
                    "/stages",
                    f"these stages differ from those in {first_stages.path}: "
                    f"{', '.join(first_stages.ruleset.stages)}",
                    hint="every ruleset that lists stages must list the same ones in the same "
                    "order; or leave 'stages' out of all but one file",
                )
            )
