"""SMS settings: the provider, the sender, the policy's caps and quiet hours.

Like the email plugin's: defaults (the ``file`` provider, which writes each message as a JSON
line to ``./outbox/sms.jsonl``, so a demo needs no account), then a JSON file named by
``$CLM_SMS_SETTINGS`` (what ops teams tune), then the environment (``CLM_SMS_*``: deployment
concerns, and the only place credentials come from: the file names the variables).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from clm_email.settings import TemplateLimits
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clm_engine import Name, channels, describe_validation_error

from .numbers import NumberError, e164

SETTINGS_ENV = "CLM_SMS_SETTINGS"


class HttpProviderSettings(BaseModel):
    """The common shape of SMS APIs: a POST with to/from/body, basic auth, a message id back.

    ``format`` is ``form`` (``application/x-www-form-urlencoded``, as most APIs take) or
    ``json``; the field names are configurable for providers that spell them differently
    (``To``/``From``/``Body``); ``id_field`` is where the response's JSON holds the message id
    (a dotted path: ``messages.0.id``).
    """

    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1:8025/messages"
    format: Literal["form", "json"] = "form"
    to_field: str = "to"
    from_field: str = "from"
    body_field: str = "body"
    id_field: str = "id"
    #: Environment variables holding the basic-auth login (unset: no auth header).
    username_env: str = "CLM_SMS_USERNAME"
    password_env: str = "CLM_SMS_PASSWORD"
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


class SmsSettings(BaseModel):
    """Everything the SMS plugin can be told; see the module docstring for the layers."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    description: str = ""
    #: ``file``, ``http``, or a provider a plugin adds (hook ``register_sms_providers``).
    provider: Name = "file"
    #: The sender: an E.164 number, or an alphanumeric sender id (up to 11 letters/digits).
    sender: str = "CLMENGINE"
    #: Where the ``file`` provider appends its JSON lines.
    outbox_dir: str = "outbox"
    http: HttpProviderSettings = Field(default_factory=HttpProviderSettings)
    #: Where a contact's number is: ``contact.attributes[phone_attribute]``.
    phone_attribute: Name = "phone"
    #: The region a number without a ``+`` is read in (ISO 3166 ``GB``, ``FR``); else the
    #: contact's ``country`` attribute; else such a number is refused.
    default_region: str | None = None
    #: Parts a message may take at most (longer ones fail, naming the count).
    max_segments: Annotated[int, Field(ge=1, le=10)] = 3
    #: Categories that need no marketing consent and are not held (appointment reminders,
    #: one-time codes). A STOP reply stops every category.
    exempt_categories: list[Name] = Field(default_factory=lambda: ["transactional"])
    frequency_caps: list[channels.FrequencyCap] = Field(default_factory=list)
    quiet_hours: channels.QuietHours | None = None
    template_limits: TemplateLimits = Field(default_factory=TemplateLimits)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if value.isalnum() and 1 <= len(value) <= 11 and not value.isdigit():
            return value  # an alphanumeric sender id
        try:
            return e164(value, None)
        except NumberError as error:
            raise ValueError(f"sender: {error}") from None


ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "CLM_SMS_PROVIDER": ("provider",),
    "CLM_SMS_SENDER": ("sender",),
    "CLM_SMS_OUTBOX": ("outbox_dir",),
    "CLM_SMS_HTTP_URL": ("http", "url"),
}

_cache: dict[tuple[Any, ...], SmsSettings] = {}


def resolve_settings(environ: Mapping[str, str] | None = None) -> SmsSettings:
    """The settings in force (cached until the file or the environment changes)."""
    environ = os.environ if environ is None else environ
    path = environ.get(SETTINGS_ENV) or ""
    try:
        info = os.stat(path) if path else None
    except OSError:
        raise ValueError(f"${SETTINGS_ENV} names {path!r}, which cannot be read") from None
    stamp = (info.st_mtime_ns, info.st_size) if info else None
    key = (path, stamp, *(environ.get(name) for name in ENVIRONMENT))
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _resolve(path, environ)
    return found


def _resolve(path: str, environ: Mapping[str, str]) -> SmsSettings:
    data: dict[str, Any] = {}
    if path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"sms settings file {path}: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"sms settings file {path}: expected a JSON object")
    for variable, keys in ENVIRONMENT.items():
        raw = environ.get(variable)
        if raw:
            target = data
            for step in keys[:-1]:
                target = target.setdefault(step, {})
            target[keys[-1]] = raw
    try:
        return SmsSettings.model_validate(data)
    except ValidationError as error:
        where = f"sms settings file {path}" if path else "sms settings"
        raise ValueError(f"{where} are not valid: {describe_validation_error(error)}") from None
