"""Email settings: which transport, where from, the policy's caps and quiet hours.

Three layers, later ones win, so the demo needs no set-up and production needs no file edits
for secrets:

1. defaults: the file transport into ``./outbox``, no caps, no quiet hours;
2. an ``email_settings`` document beside the rulesets (``{"email_settings": "default", ...}``),
   validated like a ruleset: what ops teams tune (caps, quiet hours, exempt categories);
3. environment variables (``CLM_EMAIL_*``, ``CLM_SMTP_*``): deployment concerns, and the only
   place credentials come from (a document never holds a password).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clm_engine.models import DurationSpec, Name, duration_to_timedelta

#: The document kind (and key) of email settings.
KIND = "email_settings"

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def parse_clock(text: str) -> time:
    """``"21:30"`` as a ``time``; ``ValueError`` with a message for an ops person otherwise."""
    if not isinstance(text, str) or not _CLOCK.match(text):
        raise ValueError(f"{text!r} is not a time of day as HH:MM (like '08:00' or '21:30')")
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


ClockTime = Annotated[str, Field(pattern=_CLOCK.pattern, description="A time of day, HH:MM.")]


def check_address(value: str) -> str:
    """An address, bare or with a display name (``Acme <hello@acme.example>``)."""
    from email.utils import parseaddr

    _, address = parseaddr(value)
    if not _ADDRESS.match(address or ""):
        raise ValueError(f"{value!r} is not an email address")
    return value


class QuietHours(BaseModel):
    """No non-exempt email between ``start`` and ``end``, in each contact's own timezone."""

    model_config = ConfigDict(extra="forbid")

    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours need different 'start' and 'end' times")
        return self


class FrequencyCap(BaseModel):
    """At most ``max`` non-exempt emails per contact in any window of ``per``."""

    model_config = ConfigDict(extra="forbid")

    max: Annotated[int, Field(ge=1)]
    per: DurationSpec

    @property
    def window(self) -> timedelta:
        return duration_to_timedelta(self.per)


class SmtpSettings(BaseModel):
    """Where the SMTP transport connects. Credentials come from the environment only."""

    model_config = ConfigDict(extra="forbid")

    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    #: ``starttls`` upgrades a plain connection (port 587); ``tls`` is TLS from the first byte
    #: (port 465); ``none`` is for a relay on localhost or a test server only.
    security: Literal["starttls", "tls", "none"] = "starttls"
    timeout: Annotated[float, Field(gt=0)] = 30.0
    #: A PEM file of certificate authorities to trust (a private CA); the system's otherwise.
    ca_file: str | None = None
    #: Names of the environment variables holding the login (unset: no login).
    username_env: str = "CLM_SMTP_USER"
    password_env: str = "CLM_SMTP_PASSWORD"


class EmailSettings(BaseModel):
    """Everything the email plugin can be told; see the module docstring for the layers."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    email_settings: Name = "default"
    description: str = ""
    #: A transport name: ``file``, ``smtp``, or one a plugin registers.
    transport: Name = "file"
    from_address: str = "clm-engine <noreply@example.com>"
    reply_to: str | None = None
    #: Where the file transport writes ``.eml`` files.
    outbox_dir: str = "outbox"
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    #: The unsubscribe page; each message links to it with the contact's id and a token.
    unsubscribe_url: str = "https://example.com/unsubscribe"
    #: Also offered in ``List-Unsubscribe`` when set (``unsubscribe@example.com``).
    unsubscribe_mailto: str | None = None
    #: The right-hand side of Message-IDs; the from-address's domain when not set.
    message_id_domain: str | None = None
    #: Categories that need no marketing consent and are not capped or held by quiet hours
    #: (password resets, receipts). A suppressed hard-bounced address is never sent anything.
    exempt_categories: list[Name] = Field(default_factory=lambda: ["transactional"])
    frequency_caps: list[FrequencyCap] = Field(default_factory=list)
    quiet_hours: QuietHours | None = None

    @field_validator("from_address", "reply_to", "unsubscribe_mailto")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)

    @field_validator("unsubscribe_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @property
    def domain(self) -> str:
        from email.utils import parseaddr

        return self.message_id_domain or parseaddr(self.from_address)[1].rsplit("@", 1)[1]


#: Environment variable -> (setting path, converter). The environment wins over documents.
ENVIRONMENT: dict[str, tuple[tuple[str, ...], Any]] = {
    "CLM_EMAIL_TRANSPORT": (("transport",), str),
    "CLM_EMAIL_OUTBOX": (("outbox_dir",), str),
    "CLM_EMAIL_FROM": (("from_address",), str),
    "CLM_EMAIL_UNSUBSCRIBE_URL": (("unsubscribe_url",), str),
    "CLM_SMTP_HOST": (("smtp", "host"), str),
    "CLM_SMTP_PORT": (("smtp", "port"), int),
    "CLM_SMTP_SECURITY": (("smtp", "security"), str),
    "CLM_SMTP_CA_FILE": (("smtp", "ca_file"), str),
}

#: Signs unsubscribe links; set it in production (a default secret makes links forgeable).
SECRET_ENV = "CLM_EMAIL_UNSUBSCRIBE_SECRET"
DEFAULT_SECRET = "clm-engine-unsubscribe-demo-secret"


def resolve_settings(
    documents: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> EmailSettings:
    """The settings in force: defaults, then the ``default`` settings document, then env.

    ``documents`` is the engine's loaded documents by kind (``ctx.documents``). Raises
    ``ValueError`` naming the variable when an environment value is unusable.
    """
    environ = os.environ if environ is None else environ
    found = (documents or {}).get(KIND, {})
    base = found.get("default") or (next(iter(found.values())) if len(found) == 1 else None)
    data: dict[str, Any] = base.model_dump(by_alias=True) if base is not None else {}
    for variable, (path, convert) in ENVIRONMENT.items():
        raw = environ.get(variable)
        if raw in (None, ""):
            continue
        try:
            value = convert(raw)
        except ValueError:
            raise ValueError(f"${variable} is not valid: {raw!r}") from None
        target = data
        for step in path[:-1]:
            target = target.setdefault(step, {})
        target[path[-1]] = value
    try:
        return EmailSettings.model_validate(data)
    except ValueError as error:
        raise ValueError(f"email settings are not valid: {error}") from None


def unsubscribe_secret(environ: Mapping[str, str] | None = None) -> bytes:
    environ = os.environ if environ is None else environ
    return (environ.get(SECRET_ENV) or DEFAULT_SECRET).encode()
