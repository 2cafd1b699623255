"""Email settings: which transport, where from, the policy's caps and quiet hours.

Three layers, later ones win, so the demo needs no set-up and production needs no file edits
for secrets:

1. defaults: the file transport into ``./outbox``, no caps, no quiet hours;
2. a JSON settings file, if ``$CLM_EMAIL_SETTINGS`` names one: what ops teams tune (sender,
   caps, quiet hours, exempt categories), validated with the same model;
3. environment variables (``CLM_EMAIL_*``, ``CLM_SMTP_*``): deployment concerns, and the only
   place credentials come from (a file never holds a password).

Why not a document beside the rulesets: the dispatch policy hook, which applies caps and quiet
hours, is not given the loaded documents, and the policy and the action must agree on one set
of settings. A file named by the environment is read the same way by every part of the plugin
(the policy, the action, ``clm email preview``) in every process.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from clm_engine import Name, describe_validation_error
from clm_engine.channels import FrequencyCap, QuietHours  # the same shapes across channels

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


class TemplateLimits(BaseModel):
    """How much one message's templates may cost to render; a template over a limit is
    refused, naming the template and the limit, when it is validated and when it is sent.

    Counted per message (subject, text and HTML together) and inside the rendering itself,
    so a template cannot exhaust time or memory before a check runs.
    """

    model_config = ConfigDict(extra="forbid")

    #: Wall-clock seconds to render one message.
    max_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    #: Characters a message's templates may write, and the size of any string or list built
    #: while rendering (``'x' * n``, ``center(n)``, ``join`` ...). Text written inside a macro
    #: or a ``{% set %}`` block counts again when it is written out.
    max_output: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    #: Loop iterations of a message, all loops together (nested ones multiply); also the most
    #: numbers ``range()`` gives.
    max_loop_iterations: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000


class EmailSettings(BaseModel):
    """Everything the email plugin can be told; see the module docstring for the layers."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
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
    template_limits: TemplateLimits = Field(default_factory=TemplateLimits)

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

    @cached_property
    def domain(self) -> str:
        """The Message-ID domain (computed once: settings are resolved once and reused)."""
        return self.message_id_domain or self.envelope_from.rsplit("@", 1)[1]

    @cached_property
    def envelope_from(self) -> str:
        """The bare address of ``from_address``, for the SMTP envelope."""
        from email.utils import parseaddr

        return parseaddr(self.from_address)[1]


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


#: Names the JSON settings file.
SETTINGS_ENV = "CLM_EMAIL_SETTINGS"
_cache: dict[tuple[str | tuple[int, int] | None, ...], EmailSettings] = {}


def resolve_settings(environ: Mapping[str, str] | None = None) -> EmailSettings:
    """The settings in force: defaults, then the ``$CLM_EMAIL_SETTINGS`` file, then env.

    Cached until the file or the environment changes (the policy asks for every message).
    Raises ``ValueError`` naming the file or the variable when something is unusable.
    """
    environ = os.environ if environ is None else environ
    path = environ.get(SETTINGS_ENV) or ""
    try:
        info = os.stat(path) if path else None
        stamp = (info.st_mtime_ns, info.st_size) if info else None
    except OSError:
        raise ValueError(f"${SETTINGS_ENV} names {path!r}, which cannot be read") from None
    key = (path, stamp, *(environ.get(name) for name in ENVIRONMENT))
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _resolve(path, environ)
    return found


def _resolve(path: str, environ: Mapping[str, str]) -> EmailSettings:
    data: dict[str, Any] = {}
    if path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"email settings file {path}: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"email settings file {path}: expected a JSON object")
        try:
            EmailSettings.model_validate(data)
        except ValidationError as error:
            reason = describe_validation_error(error)
            raise ValueError(f"email settings file {path} is not valid: {reason}") from None
    for variable, (keys, convert) in ENVIRONMENT.items():
        raw = environ.get(variable)
        if raw in (None, ""):
            continue
        try:
            value = convert(raw)
        except ValueError:
            raise ValueError(f"${variable} is not valid: {raw!r}") from None
        target = data
        for step in keys[:-1]:
            target = target.setdefault(step, {})
        target[keys[-1]] = value
    try:
        return EmailSettings.model_validate(data)
    except ValidationError as error:
        reason = describe_validation_error(error)
        raise ValueError(f"email settings are not valid: {reason}") from None


def unsubscribe_secret(environ: Mapping[str, str] | None = None) -> bytes:
    environ = os.environ if environ is None else environ
    return (environ.get(SECRET_ENV) or DEFAULT_SECRET).encode()
