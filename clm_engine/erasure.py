"""GDPR erasure: what a contact is known by, what replaces it, and the proof that it is gone.

An erasure deletes the rows that belong to the contact and rewrites the references other
contacts' rows hold to it (the friend a contact referred keeps a ``referred_by``, a ledger keeps
the referrer's side of a reward) to a **pseudonym**: ``erased-`` and 16 random hex digits,
drawn once per erasure. It is the same everywhere in one erasure, so every reference to the
contact still points at one (now nameless) party, histories still fold and ledgers still
balance; and it is random, so nothing derives it from the contact's id.

:class:`Erasure` is what the core hands each plugin's ``forget_contact`` hook: the contact's
identifiers (id, email addresses, full names), the pseudonym, :meth:`Erasure.rewrite` to
replace references in any JSON-like value or text, and the files to remove or rewrite once the
database work has committed (files cannot join a SQLite transaction; see
``docs/operations.md``, "Erasure").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Erasure", "ErasureReport", "keyed_hash", "new_pseudonym"]

#: The domain of an email address that replaces an erased one (RFC 2606: never delivered).
PSEUDONYM_DOMAIN = "erased.invalid"

#: Attributes and event properties that hold a person's name, and the pairs that make one.
NAME_KEYS = ("name", "full_name", "fullname", "display_name")
NAME_PARTS = (("first_name", "last_name"), ("given_name", "family_name"))

#: The events whose properties describe the person (the core's profile reducer's).
PROFILE_EVENTS = frozenset({"signup", "contact.created", "contact.updated"})

#: Where a mapping holds its own subject's name: another contact with the same name as the
#: erased one keeps it (a full name is not an identifier of one person, an id or address is).
OWN_NAME_KEYS = frozenset({*NAME_KEYS, *(key for pair in NAME_PARTS for key in pair)})

#: What may stand next to an identifier for it to count as one (``c1`` is not in ``c10``).
_WORD = r"[A-Za-z0-9_\-]"


def new_pseudonym() -> str:
    """A fresh pseudonym: random, so nothing about the contact can be derived from it."""
    return "erased-" + secrets.token_hex(8)


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of ``value`` normalised (trimmed, lower case), as ``hmac:<hex>``."""
    digest = hmac.new(key, value.strip().lower().encode(), hashlib.sha256).hexdigest()
    return f"hmac:{digest}"


def names_in(values: dict[str, Any]) -> set[str]:
    """The person's full names a mapping (attributes, event properties) holds."""
    found = set()
    for key in NAME_KEYS:
        value = values.get(key)
        if isinstance(value, str) and value.strip():
            found.add(value.strip())
    for first, last in NAME_PARTS:
        parts = [values.get(first), values.get(last)]
        if all(isinstance(part, str) and part.strip() for part in parts):
            found.add(" ".join(str(part).strip() for part in parts))
    return found


@dataclass
class ErasureReport:
    """What one erasure did: rows removed and pseudonymised by table, files removed and
    rewritten, and the record kept (its id is the pseudonym; no personal data)."""

    erasure_id: str
    erased_at: str
    requested_by: str
    removed: dict[str, int] = field(default_factory=dict)
    pseudonymised: dict[str, int] = field(default_factory=dict)
    files_removed: list[str] = field(default_factory=list)
    files_rewritten: list[str] = field(default_factory=list)
    file_errors: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """Whether anything was held about the contact (a second erasure finds nothing)."""
        return bool(
            self.removed or self.pseudonymised or self.files_removed or self.files_rewritten
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "erasure_id": self.erasure_id,
            "erased_at": self.erased_at,
            "requested_by": self.requested_by,
            "removed": self.removed,
            "pseudonymised": self.pseudonymised,
            "files_removed": self.files_removed,
            "files_rewritten": self.files_rewritten,
            "file_errors": self.file_errors,
        }


class Erasure:
    """One contact's erasure, as the core and the plugins carry it out.

    ``contact_id``, ``emails`` and ``names`` are what the contact is known by (``identifiers``).
    ``pseudonym`` replaces the id wherever another contact's data refers to the contact, and
    ``pseudonym_email`` an address. The id and the addresses are matched wherever they occur
    (as whole words: ``c1`` is not in ``c10``); a full name only as a whole value of structured
    data, and not where a mapping holds its own subject's name (``name``, ``first_name`` ...):
    a name is shared by many people, and another contact called the same keeps their name.
    """

    def __init__(
        self,
        contact_id: str,
        *,
        emails: Iterable[str] = (),
        names: Iterable[str] = (),
        pseudonym: str | None = None,
        key: bytes = b"",
    ) -> None:
        self.contact_id = contact_id
        self.pseudonym = pseudonym or new_pseudonym()
        self.pseudonym_email = f"{self.pseudonym}@{PSEUDONYM_DOMAIN}"
        self.emails = tuple(sorted({e.strip() for e in emails if e and e.strip()}))
        self.names = tuple(sorted({n.strip() for n in names if n and n.strip()}))
        self._key = key
        #: rows rewritten to the pseudonym, by table (plugins add theirs with ``pseudonymised``)
        self.rewritten: dict[str, int] = {}
        #: files to remove, and to replace with new text, once the database work has committed
        self.files_to_remove: list[Path] = []
        self.files_to_replace: dict[Path, str] = {}
        self._exact: dict[str, str] = {contact_id: self.pseudonym}
        self._folded: dict[str, str] = {e.lower(): self.pseudonym_email for e in self.emails}
        self._names: dict[str, str] = {n.lower(): self.pseudonym for n in self.names}
        self._compile()

    # -- what the contact is known by ----------------------------------------------------------

    @property
    def identifiers(self) -> tuple[str, ...]:
        """The id, the email addresses and the full names: none may be left anywhere."""
        return (self.contact_id, *self.emails, *self.names)

    def rename(self, old: str, new: str) -> None:
        """Rewrite ``old`` to ``new`` too wherever the core rewrites references: for a value
        derived from the contact's id that a plugin renamed (a reward id made from it)."""
        self._exact[old] = new
        self._compile()

    def _compile(self) -> None:
        exact = sorted(self._exact, key=len, reverse=True)
        folded = sorted(self._folded, key=len, reverse=True)
        alternatives = [re.escape(value) for value in exact]
        alternatives += [f"(?i:{re.escape(value)})" for value in folded]
        self._pattern = re.compile(f"(?<!{_WORD})(?:{'|'.join(alternatives)})(?!{_WORD})")

    def replacement(self, value: str, key: Any = None) -> str | None:
        """What replaces ``value`` (found under ``key`` of a mapping, if any) when it is one of
        the contact's identifiers as a whole, else ``None``."""
        found = self._exact.get(value)
        if found is None:
            found = self._folded.get(value.strip().lower())
        if found is None and key not in OWN_NAME_KEYS:
            found = self._names.get(value.strip().lower())
        return found

    def mentions(self, value: Any) -> bool:
        """Whether ``value`` (text, bytes, a stored JSON text or anything JSON-like) mentions
        the contact."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            parsed = _json(value)
            if parsed is None:
                return self._pattern.search(value) is not None
            value = parsed
        return self._mentioned(value, None)

    def _mentioned(self, value: Any, key: Any) -> bool:
        if isinstance(value, str):
            return self.replacement(value, key) is not None or bool(self._pattern.search(value))
        if isinstance(value, dict):
            return any(self._mentioned(k, None) or self._mentioned(v, k) for k, v in value.items())
        if isinstance(value, list):
            return any(self._mentioned(item, key) for item in value)
        return False

    # -- rewriting -----------------------------------------------------------------------------

    def rewrite(self, value: Any, key: Any = None) -> Any:
        """``value`` with every reference to the contact replaced: a string equal to an
        identifier becomes its replacement, one that mentions the id or an address has the
        mention replaced; dictionaries (keys too) and lists are rewritten throughout."""
        if isinstance(value, str):
            whole = self.replacement(value, key)
            if whole is not None:
                return whole
            return self._pattern.sub(self._substitute, value)
        if isinstance(value, dict):
            return {self.rewrite(k): self.rewrite(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.rewrite(item, key) for item in value]
        return value

    def rewrite_text(self, text: str) -> str:
        """A stored text rewritten: as JSON if it is JSON (so a value equal to the email
        becomes the pseudonymous address), otherwise mention by mention."""
        parsed = _json(text)
        if parsed is not None:
            return json.dumps(self.rewrite(parsed), ensure_ascii=False, separators=(",", ":"))
        return str(self.rewrite(text))

    def _substitute(self, match: re.Match[str]) -> str:
        return self.replacement(match.group(0)) or self.pseudonym

    def search_terms(self) -> list[tuple[str, bool]]:
        """``(term, folded)`` to find candidate rows in SQL with ``instr``: each identifier and
        renamed value, and its JSON-escaped form when that differs (``ensure_ascii``)."""
        terms: list[tuple[str, bool]] = []
        exact = [(v, False) for v in self._exact]
        for value, folded in exact + [(v, True) for v in (*self._folded, *self._names)]:
            for form in {value, json.dumps(value)[1:-1]}:
                terms.append((form.lower() if folded else form, folded))
        return terms

    # -- what plugins report and ask for -------------------------------------------------------

    def pseudonymised(self, table: str, count: int) -> None:
        """Report rows of ``table`` whose references to the contact were rewritten."""
        if count:
            self.rewritten[table] = self.rewritten.get(table, 0) + int(count)

    def keyed_hash(self, value: str) -> str:
        """A keyed hash of ``value``, kept instead of the value: what ``tables.erasure_hash``
        gives for it outside the erasure, to look it up."""
        return keyed_hash(self._key, value)

    def remove_file(self, path: str | os.PathLike[str]) -> None:
        """Remove ``path`` once the erasure has committed (a file cannot be rolled back)."""
        resolved = Path(path)
        if resolved not in self.files_to_remove:
            self.files_to_remove.append(resolved)

    def replace_file(self, path: str | os.PathLike[str], text: str) -> None:
        """Replace ``path``'s content with ``text`` once the erasure has committed."""
        self.files_to_replace[Path(path)] = text

    def scrub_lines(self, path: str | os.PathLike[str]) -> int:
        """Plan the rewrite of a JSON Lines file (a rejects file): a line about the contact
        (its ``contact_id``, or an unreadable line that mentions them) is dropped, a line of
        another contact's that mentions them is rewritten. Returns the lines changed."""
        resolved = Path(path)
        try:
            lines = resolved.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return 0
        kept: list[str] = []
        changed = 0
        for line in lines:
            if not self.mentions(line):
                kept.append(line)
                continue
            changed += 1
            if not self._about_contact(line):
                kept.append(self.rewrite_text(line))
        if changed:
            self.replace_file(resolved, "".join(line + "\n" for line in kept))
        return changed

    def _about_contact(self, line: str) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return True
        event = record.get("input", record) if isinstance(record, dict) else None
        if isinstance(event, str):
            try:
                event = json.loads(event)
            except ValueError:
                return True
        return not isinstance(event, dict) or event.get("contact_id") == self.contact_id

    def apply_files(self, report: ErasureReport) -> None:
        """Remove and rewrite the planned files (after the commit); errors are reported."""
        for path in self.files_to_remove:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as error:
                report.file_errors.append(f"{path}: {error}")
            else:
                report.files_removed.append(str(path))
        for path, text in self.files_to_replace.items():
            temporary = path.with_name(path.name + ".erasing")
            try:
                temporary.write_text(text, encoding="utf-8")
                os.replace(temporary, path)
            except OSError as error:
                report.file_errors.append(f"{path}: {error}")
            else:
                report.files_rewritten.append(str(path))


def _json(text: str) -> Any:
    """``text`` parsed if it is a JSON object or array, else ``None``."""
    if text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def files_under(directory: Path, suffix: str) -> Iterator[Path]:
    """The files named ``*suffix`` in ``directory`` (none if it does not exist)."""
    if directory.is_dir():
        yield from sorted(p for p in directory.iterdir() if p.name.endswith(suffix))
