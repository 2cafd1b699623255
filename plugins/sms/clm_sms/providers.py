"""Providers: how a rendered SMS leaves. A small protocol, two built-ins, and entry points.

A provider is any object with ``send(message) -> str`` returning the provider's message id.
It raises :class:`PermanentSmsError` for a refusal that trying again cannot change (an
invalid or unreachable number, a 4xx): the action fails at once. Anything else it raises,
:class:`TemporarySmsError` included, makes the engine retry with backoff.

Built in: ``file`` (JSON lines in ``<outbox_dir>/sms.jsonl``; the default, for demos) and
``http``, the common shape of SMS APIs (see :class:`HttpProvider`). Another plugin adds one
through this plugin's hook ``register_sms_providers(register)`` (added to each engine's plugin
manager, ``register_hookspecs``): ``register(name, factory)``, ``factory(settings) ->
provider``; settings pick it by name (``"provider": "name"``). Each engine has its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from clm_engine import PluginError, RetryLater, did_you_mean, hookspec

from .settings import HttpProviderSettings, SmsSettings


class Specs:
    """The plugin's own hook, added to each engine's (``register_hookspecs``)."""

    @hookspec
    def register_sms_providers(self, register: Callable[..., None]) -> None:
        """Contribute SMS providers: ``register(name, factory)``, ``factory(settings)``
        returning an object with ``send(message) -> message id`` (raise
        :class:`PermanentSmsError` for a refusal; anything else is retried). A name
        registered twice is a ``PluginError``."""


@dataclass(frozen=True)
class OutgoingSms:
    """One message to send: E.164 ``to``, the sender, the text, and the outbox key (which
    providers that deduplicate can take as their idempotency key)."""

    to: str
    sender: str
    body: str
    key: str
    segments: int
    encoding: str


class PermanentSmsError(Exception):
    """The provider refused the message for good: not retried."""


class TemporarySmsError(Exception):
    """The provider could not take the message now: retried with backoff."""


class Provider(Protocol):
    def send(self, message: OutgoingSms) -> str: ...


class FileProvider:
    """Appends each message as a JSON line to ``<outbox_dir>/sms.jsonl``; the id is derived
    from the outbox key, so a retried message keeps its id."""

    def __init__(self, settings: SmsSettings) -> None:
        self.path = Path(settings.outbox_dir) / "sms.jsonl"

    def send(self, message: OutgoingSms) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        message_id = "file-" + hashlib.sha256(message.key.encode()).hexdigest()[:20]
        line = {
            "id": message_id,
            "to": message.to,
            "from": message.sender,
            "body": message.body,
            "segments": message.segments,
            "encoding": message.encoding,
            "key": message.key,
        }
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return message_id


class HttpProvider:
    """The common shape of SMS APIs: ``POST`` the message as a form (or JSON) with ``to``,
    ``from`` and ``body`` fields, HTTP basic auth, and a JSON answer holding the message id.

    2xx with an id: sent. 429, 5xx, a timeout or a refused connection: temporary (retried;
    not before the time a ``Retry-After`` header gives, ``clm_engine.RetryLater``).
    Any other 4xx: permanent (the provider's message is kept in the failure). The outbox
    key goes in an ``Idempotency-Key`` header, for providers that deduplicate retries.
    """

    def __init__(self, settings: HttpProviderSettings, environ: Any = None) -> None:
        environ = os.environ if environ is None else environ
        self.settings = settings
        user = environ.get(settings.username_env) or ""
        password = environ.get(settings.password_env) or ""
        self.auth: tuple[str, str] | None = (user, password) if user else None

    def send(self, message: OutgoingSms) -> str:
        s = self.settings
        fields = {s.to_field: message.to, s.from_field: message.sender, s.body_field: message.body}
        headers = {"Idempotency-Key": message.key.encode("ascii", "replace").decode()}
        body: dict[str, Any] = (
            {"json": fields} if s.format == "json" else {"data": fields}  # form-encoded
        )
        try:
            with httpx.Client(timeout=s.timeout, trust_env=False, follow_redirects=False) as c:
                if self.auth is not None:
                    response = c.post(s.url, headers=headers, auth=self.auth, **body)
                else:
                    response = c.post(s.url, headers=headers, **body)
        except httpx.TimeoutException:
            raise TemporarySmsError(f"the provider did not answer within {s.timeout:g} s") from None
        except httpx.TransportError as error:
            raise TemporarySmsError(f"cannot reach the provider: {error}") from None
        said = response.text[:300].strip()
        status = response.status_code
        if status == 429 or status >= 500:
            answered = f"provider answered HTTP {status}: {said}"
            retry_after = response.headers.get("retry-after")
            if retry_after:  # the provider said when: not before then
                raise RetryLater.from_header(
                    f"{answered} (Retry-After: {retry_after})", retry_after, datetime.now(UTC)
                )
            raise TemporarySmsError(answered)
        if not 200 <= status < 300:
            raise PermanentSmsError(f"provider refused the message: HTTP {status}: {said}")
        try:
            found: Any = response.json()
            for step in s.id_field.split("."):
                found = found[int(step)] if isinstance(found, list) else found[step]
        except (ValueError, KeyError, IndexError, TypeError):
            # Accepted, but we cannot tell its id: it went; do not send it again.
            return f"unknown (HTTP {status}, no {s.id_field!r} in the answer)"
        return str(found)


def builtin_providers(register: Callable[..., None]) -> None:
    """``file`` and ``http``, registered through the hook like any other provider."""
    register("file", FileProvider)
    register("http", lambda settings: HttpProvider(settings.http))


def provider_factories(registry: Any) -> dict[str, Callable[[SmsSettings], Provider]]:
    """Every provider the engine's plugins register (``register_sms_providers``), by name."""
    found: dict[str, Callable[[SmsSettings], Provider]] = {}
    owners: dict[str, str] = {}
    for plugin, args, kwargs in registry.registrations("register_sms_providers"):
        given = (*args, *kwargs.values())
        name, factory = given if len(given) == 2 else (None, None)
        if not isinstance(name, str) or not name or not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered an SMS provider badly")
        if name in owners:
            raise PluginError(
                f"SMS provider {name!r} is registered by both plugin {owners[name]!r} "
                f"and plugin {plugin!r}"
            )
        owners[name] = plugin
        found[name] = factory
    return found


def provider_for(settings: SmsSettings, registry: Any) -> Provider:
    """The provider the settings name among the engine's; ``PluginError`` naming the known
    ones otherwise."""
    factories = provider_factories(registry)
    factory = factories.get(settings.provider)
    if factory is None:
        hint = did_you_mean(settings.provider, list(factories))
        raise PluginError(f"no SMS provider {settings.provider!r}{hint}")
    return factory(settings)
