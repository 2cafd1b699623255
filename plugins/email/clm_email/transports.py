"""Transports: how a built message leaves. ``file`` and ``smtp`` ship; plugins add more.

Failures come in two kinds, because they need opposite handling: a temporary one (a 4xx
reply, a refused or dropped connection) is raised so that the engine's dispatch retries the
action with backoff; a permanent one (a 5xx reply) will never succeed, so the address is
suppressed and the action is marked failed for good.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from clm_engine import PluginError

from .message import OutgoingMessage
from .settings import EmailSettings


class DeliveryError(Exception):
    """A message was not delivered."""


class TemporaryDeliveryError(DeliveryError):
    """Worth trying again later: the engine retries the action with backoff."""


class PermanentDeliveryError(DeliveryError):
    """Will never succeed (SMTP 5xx): the address is suppressed, the action fails for good."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Transport(Protocol):
    def send(self, message: OutgoingMessage, *, sender: str, recipients: list[str]) -> str:
        """Deliver ``message``; return where it went (a path, a server's reply) for the log."""
        ...

    def close(self) -> None: ...


TransportFactory = Callable[[EmailSettings], Transport]


class FileTransport:
    """Writes each message as an ``.eml`` file: the demo's default, and a dry run you can read.

    The file is named after the Message-ID, so a message sent again after a crash replaces
    its first copy instead of adding a second; it is written to a temporary name and renamed,
    so a reader never sees half a message.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._made = False

    def send(self, message: OutgoingMessage, *, sender: str, recipients: list[str]) -> str:
        if not self._made:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._made = True
        name = str(message["Message-ID"]).strip("<>").split("@", 1)[0]
        path = self.directory / f"{name}.eml"
        temporary = path.with_suffix(".eml.tmp")
        try:
            temporary.write_bytes(message.as_bytes())
            os.replace(temporary, path)
        except OSError as error:  # a full disk clears up; retry
            raise TemporaryDeliveryError(f"cannot write {path}: {error}") from error
        return str(path)

    def close(self) -> None:
        pass


class SmtpTransport:
    """Delivers through an SMTP server, keeping one connection open between messages.

    ``security``: ``starttls`` (upgrade after connecting, usually port 587), ``tls`` (TLS from
    the start, port 465) or ``none`` (a local relay or a test server). The login comes from
    the environment variables the settings name (``CLM_SMTP_USER`` / ``CLM_SMTP_PASSWORD``).
    """

    def __init__(self, settings: EmailSettings, *, context: ssl.SSLContext | None = None) -> None:
        self.smtp = settings.smtp
        self.username = os.environ.get(self.smtp.username_env) or None
        self.password = os.environ.get(self.smtp.password_env) or ""
        self.context = context or ssl.create_default_context(cafile=self.smtp.ca_file)
        self._connection: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def _connect(self) -> smtplib.SMTP:
        smtp = self.smtp
        if smtp.security == "tls":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout, context=self.context
            )
        else:
            connection = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        try:
            connection.ehlo()
            if smtp.security == "starttls":
                connection.starttls(context=self.context)
                connection.ehlo()
            if self.username:
                connection.login(self.username, self.password)
        except BaseException:
            connection.close()
            raise
        return connection

    def send(self, message: OutgoingMessage, *, sender: str, recipients: list[str]) -> str:
        with self._lock:
            for attempt in (1, 2):  # a connection the server closed while idle: reconnect once
                connection = self._connection or self._open()
                try:
                    refused = connection.sendmail(sender, recipients, message.as_bytes())
                    break
                except smtplib.SMTPServerDisconnected as error:
                    self._drop()
                    if attempt == 2:
                        raise TemporaryDeliveryError(f"SMTP server disconnected: {error}") from None
                except smtplib.SMTPRecipientsRefused as error:
                    self._reset()
                    code, reply = next(iter(error.recipients.values()))
                    raise _classify(code, reply, "recipient refused") from None
                except smtplib.SMTPSenderRefused as error:
                    # Our sender address is the problem, not the recipient's: never suppress.
                    self._reset()
                    text = _text(error.smtp_error)
                    raise TemporaryDeliveryError(
                        f"sender {sender} refused: {error.smtp_code} {text}"
                    ) from None
                except smtplib.SMTPResponseException as error:  # DATA refused
                    self._reset()
                    raise _classify(error.smtp_code, error.smtp_error, "refused") from None
                except (smtplib.SMTPException, OSError) as error:
                    self._drop()
                    raise TemporaryDeliveryError(f"SMTP error: {error}") from None
        if refused:  # several recipients, some refused: we send one at a time, so not reached
            code, reply = next(iter(refused.values()))
            raise _classify(code, reply, "recipient refused")
        return f"smtp://{self.smtp.host}:{self.smtp.port}"

    def _open(self) -> smtplib.SMTP:
        """Connect, secure and log in. Every failure here is about our set-up or the server,
        never the recipient: it is temporary (retried, then dead-lettered with the reason)."""
        where = f"{self.smtp.host}:{self.smtp.port}"
        try:
            self._connection = self._connect()
        except smtplib.SMTPAuthenticationError as error:
            raise TemporaryDeliveryError(
                f"{where} refused the login ({error.smtp_code} {_text(error.smtp_error)}): "
                f"check ${self.smtp.username_env} and ${self.smtp.password_env}"
            ) from None
        except (smtplib.SMTPException, OSError) as error:  # refused, unreachable, TLS failure
            raise TemporaryDeliveryError(f"cannot reach {where}: {error}") from None
        return self._connection

    def _reset(self) -> None:
        try:
            if self._connection is not None:
                self._connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    self._connection.quit()
            self._drop()


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _classify(code: int, reply: bytes | str, what: str) -> DeliveryError:
    text = _text(reply)
    message = f"{what}: {code} {text}".strip()
    if 500 <= code < 600:
        return PermanentDeliveryError(message, code)
    return TemporaryDeliveryError(message)


def file_transport(settings: EmailSettings) -> Transport:
    return FileTransport(settings.outbox_dir)


def smtp_transport(settings: EmailSettings) -> Transport:
    return SmtpTransport(settings)


# -- transports by name, from the engine's plugins ---------------------------------------------


def builtin_transports(register: Callable[..., None]) -> None:
    """``file`` and ``smtp``, registered through the hook like any other transport."""
    register("file", file_transport)
    register("smtp", smtp_transport)


def transport_factories(registry: Any) -> dict[str, TransportFactory]:
    """Every transport factory the engine's plugins register (``register_email_transports``,
    this plugin's own hook: ``file``, ``smtp`` and plugins'), by name."""
    found: dict[str, TransportFactory] = {}
    owners: dict[str, str] = {}
    for plugin, args, kwargs in registry.registrations("register_email_transports"):
        try:
            name, factory = _transport_of(*args, **kwargs)
        except TypeError:
            raise PluginError(
                f"plugin {plugin!r} registered an email transport badly: register(name, factory)"
            ) from None
        if not isinstance(name, str) or not name or not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered an email transport badly")
        if name in owners:
            raise PluginError(
                f"email transport {name!r} is registered by both plugin {owners[name]!r} "
                f"and plugin {plugin!r}"
            )
        owners[name] = plugin
        found[name] = factory
    return found


def _transport_of(name: Any, factory: Any) -> tuple[Any, Any]:
    return name, factory


#: Open transports by (registry, settings): an SMTP connection stays open between messages.
#: The objects behind each id are kept too, so an id is never reused while it is in the map.
_open: dict[tuple[int, int], Transport] = {}
_keep: list[Any] = []
_open_lock = threading.Lock()


def transport_for(settings: EmailSettings, registry: Any) -> Transport:
    """The transport the settings name among the engine's, opened once per engine and distinct
    settings and reused."""
    identity = (id(registry), id(settings))  # resolve_settings: one object per settings
    with _open_lock:
        transport = _open.get(identity)
        if transport is None:
            factories = transport_factories(registry)
            factory = factories.get(settings.transport)
            if factory is None:
                known = ", ".join(sorted(factories)) or "none"
                raise PluginError(f"no email transport {settings.transport!r}; registered: {known}")
            transport = _open[identity] = factory(settings)
            _keep.extend((registry, settings))
        return transport


def close_transports() -> None:
    """Close every open transport (SMTP connections); the next send opens them again."""
    with _open_lock:
        for transport in _open.values():
            transport.close()
        _open.clear()
        _keep.clear()
