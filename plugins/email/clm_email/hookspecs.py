"""The email plugin's own hook: other plugins add ways to deliver email.

A plugin of the plugin, as pytest's ``pytest_addhooks`` and datasette's plugins allow: these
specs join clm-engine's plugin manager when ``clm_email`` is imported, and a transport plugin
implements them with the engine's own marker (``from clm_engine import hookimpl``).
"""

from __future__ import annotations

from collections.abc import Callable

from clm_engine.hooks import hookspec


@hookspec
def register_email_transports(register: Callable[..., None]) -> None:
    """Contribute email transports: ways to deliver a built message.

    Call ``register(name, factory)``; ``factory(settings)`` receives the
    :class:`clm_email.settings.EmailSettings` in force and returns an object with
    ``send(message, *, sender, recipients) -> str`` (where the message went, for the log) and
    ``close()``. ``message`` is a :class:`clm_email.message.OutgoingMessage`: ``as_bytes()`` is
    the wire format, ``message["Message-ID"]`` a header, ``to_email_message()`` a standard
    ``EmailMessage``. ``send`` raises :class:`clm_email.transports.TemporaryDeliveryError` for a
    failure worth retrying (the engine retries with backoff) and
    :class:`clm_email.transports.PermanentDeliveryError` for one that never will succeed (the
    address is suppressed). Settings choose a transport by name (``"transport": "ses"``). Two
    transports with one name are a ``PluginError``.
    """
