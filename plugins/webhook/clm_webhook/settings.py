"""Webhook settings: the endpoints rules post to, their signing secrets, the network rules.

Two layers, the later wins: a JSON file named by ``$CLM_WEBHOOK_SETTINGS`` (what ops teams
tune: endpoints, timeouts, which private networks may be reached), then the environment for
secrets. A signing secret is never written in a ruleset or in the settings file: the file
names the environment variable that holds it (``secret_env``), ``CLM_WEBHOOK_SECRET`` unless
an endpoint says otherwise.

The defaults are the safe ones: no redirects followed, no private, loopback, link-local or
otherwise non-global address reached (see ``clm_webhook.network``), 10 seconds per request.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlsplit

from clm_email.settings import TemplateLimits
from pydantic import BaseModel, ConfigDict, Field, field_validator

from clm_engine import Name, settings_from_file

SETTINGS_ENV = "CLM_WEBHOOK_SETTINGS"
#: The environment variable holding the signing secret of URLs given in rules, and of
#: endpoints that name no other.
DEFAULT_SECRET_ENV = "CLM_WEBHOOK_SECRET"
#: Headers the plugin sets itself: a rule or a setting cannot replace them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "idempotency-key",
        "user-agent",
        "x-clm-signature",
        "x-clm-timestamp",
        "x-clm-attempt",
        "x-clm-contact",
        "transfer-encoding",
        "connection",
    }
)


def check_url(value: str) -> str:
    """An absolute http(s) URL with a host and no credentials in it."""
    if not isinstance(value, str):
        raise ValueError("a webhook URL is a string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise ValueError("a webhook URL must not carry credentials; use a header from settings")
    if any(ord(c) < 33 or ord(c) == 127 for c in value):
        raise ValueError("a webhook URL must not contain spaces or control characters")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as error:
        raise ValueError(f"{value!r}: {error}") from None
    return value


#: Headers that carry credentials: from the environment only (``secret_headers``).
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"}
)


def check_headers(value: dict[str, str], *, secrets_allowed: bool = True) -> dict[str, str]:
    """Header names and values fit to send; credentials refused where they would be in clear."""
    for name, text in value.items():
        if not secrets_allowed and name.lower() in SECRET_HEADERS:
            raise ValueError(
                f"header {name!r} carries a credential: name an environment variable for it in "
                "the endpoint's secret_headers instead of writing it here"
            )
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"{name!r} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the plugin itself")
        if any(ord(c) < 32 or ord(c) == 127 for c in text) or not text.isascii():
            raise ValueError(f"header {name!r} must be printable ASCII on one line")
    return value


class Endpoint(BaseModel):
    """A named target: ``{"url": "https://crm.example.com/hooks/tasks", "secret_env":
    "CRM_WEBHOOK_SECRET"}``."""

    model_config = ConfigDict(extra="forbid")

    url: str
    #: The environment variable holding this endpoint's signing secret.
    secret_env: str = DEFAULT_SECRET_ENV
    #: Extra, non-secret headers sent with every post.
    headers: dict[str, str] = Field(default_factory=dict)
    #: Headers whose values are secrets (a CRM's API token): header name -> the environment
    #: variable that holds the value (``{"Authorization": "CRM_AUTHORIZATION"}``).
    secret_headers: dict[str, str] = Field(default_factory=dict)
    #: Seconds for the whole request; the settings' ``timeout`` when left out.
    timeout: Annotated[float, Field(gt=0, le=120)] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value, secrets_allowed=False)

    @field_validator("secret_headers")
    @classmethod
    def _secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    def resolved_headers(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """``headers`` and ``secret_headers`` with their values read from the environment."""
        environ = os.environ if environ is None else environ
        found = dict(self.headers)
        for name, variable in self.secret_headers.items():
            value = environ.get(variable)
            if not value:
                raise ValueError(f"header {name!r} of a webhook endpoint needs ${variable} set")
            found[name] = check_headers({name: value})[name]
        return found


class WebhookSettings(BaseModel):
    """Everything the webhook plugin can be told (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    description: str = ""
    endpoints: dict[Name, Endpoint] = Field(default_factory=dict)
    #: Whether a rule may give a ``url`` itself (else only named ``endpoints``).
    allow_rule_urls: bool = True
    #: Seconds for one request (connect, send, wait, read together).
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    #: Follow 3xx redirects (each hop checked like the first); refused by default.
    follow_redirects: bool = False
    max_redirects: Annotated[int, Field(ge=1, le=10)] = 3
    #: Reach any address, private ones included: only for a deployment inside its own network.
    allow_private_networks: bool = False
    #: Networks reachable although not global (``"10.20.0.0/16"``, ``"127.0.0.1/32"``).
    allowed_networks: list[str] = Field(default_factory=list)
    #: Bytes of a response body kept for the record (the rest is not read).
    max_response_bytes: Annotated[int, Field(ge=0, le=1_000_000)] = 2048
    #: How much rendering one body may cost (all its strings together): seconds, characters
    #: written, loop iterations (the email plugin's limits, same meaning).
    template_limits: TemplateLimits = Field(default_factory=TemplateLimits)

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not a network (like '10.0.0.0/8')") from None
        return value

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(text, strict=False) for text in self.allowed_networks]


def resolve_settings(environ: Mapping[str, str] | None = None) -> WebhookSettings:
    """The settings in force (cached until the file changes); ``ValueError`` naming the file
    and the field when they are unusable."""
    environ = os.environ if environ is None else environ
    path = environ.get(SETTINGS_ENV) or ""
    if not path:
        return WebhookSettings()
    return settings_from_file(SETTINGS_ENV, path, WebhookSettings, "webhook settings file")


def secret_from(variable: str, environ: Mapping[str, str] | None = None) -> bytes:
    """The signing secret in ``$variable``; ``ValueError`` saying what to set when missing."""
    environ = os.environ if environ is None else environ
    value = environ.get(variable) or ""
    if len(value) < 16:
        raise ValueError(
            f"no signing secret: set ${variable} to a random string of at least 16 characters"
        )
    return value.encode()
