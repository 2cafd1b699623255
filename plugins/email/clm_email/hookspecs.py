"""The email plugin's own hooks: other plugins add ways to deliver email.

A plugin of the plugin. These hooks live in the email plugin's own plugin manager
(``clm_email.transports.pm``, project name ``clm_email``), not in clm-engine's: the engine's
set of hooks stays the engine's, whatever plugins are installed. A transport plugin marks its
functions with :data:`hookimpl` and declares an entry point in the group ``clm_email``::

    [project.entry-points.clm_email]
    ses = "clm_email_ses"
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("clm_email")
hookimpl = pluggy.HookimplMarker("clm_email")


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
