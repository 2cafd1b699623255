"""The email plugin's own hooks: other plugins add ways to deliver email.

A plugin of the plugin. The email plugin adds these hooks to each engine's plugin manager
(the engine's ``register_hookspecs`` hook), so every engine has its own transports. A
transport plugin is an ordinary clm-engine plugin: it marks its function with
``clm_engine.hookimpl(optionalhook=True)`` (optional: an engine without the email plugin
ignores it) and declares an entry point in the ``clm_engine`` group::

    [project.entry-points.clm_engine]
    ses = "clm_email_ses"
"""

from __future__ import annotations

from collections.abc import Callable

from clm_engine import hookspec


@hookspec
def register_email_transports(register: Callable[..., None]) -> None:
    """Contribute email transports: ways to deliver a built message.

    Call ``register(name, factory)``; ``factory(settings)`` receives the
    :class:`clm_email.settings.EmailSettings` in force and returns an object with
    ``send(message, *, sender, recipients) -> str`` (where the message went, for the log) and
    ``close()``. ``message`` is a :class:`clm_email.message.OutgoingMessage`: ``as_bytes()`` is
    the wire format, ``message["Message-ID"]`` a header, ``to_email_message()`` a standard
    ``EmailMessage``. ``send`` raises :class:`clm_email.transports.TemporaryDeliveryError` for
    a failure worth retrying (the engine retries with backoff) and
    :class:`clm_email.transports.PermanentDeliveryError` for one that never will succeed (the
    address is suppressed). Settings choose a transport by name (``CLM_EMAIL_TRANSPORT=ses``).
    Two transports with one name are a ``PluginError``.
    """
