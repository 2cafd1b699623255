"""Building the MIME message: parts, a stable Message-ID, and the unsubscribe headers."""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from .templates import Rendered


def message_id(key: str, domain: str) -> str:
    """The Message-ID of the message sent for outbox key ``key``: the same on every attempt.

    Delivery is at least once (a crash between the send and its record sends again); a stable
    Message-ID lets the receiving side (and the file transport) recognise the repeat.
    """
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def build_message(
    rendered: Rendered,
    *,
    to: str,
    sender: str,
    message_id: str,
    date: datetime,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None = None,
    reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A ``multipart/alternative`` message (text, then HTML when there is one).

    ``List-Unsubscribe`` carries the link (and a mailto when configured) and
    ``List-Unsubscribe-Post`` asks for one-click unsubscription (RFC 8058), which large mailbox
    providers require of bulk senders.
    """
    message = EmailMessage(policy=SMTP)
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(date)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = rendered.subject
    if reply_to:
        message["Reply-To"] = reply_to
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
    message["List-Unsubscribe"] = ", ".join(targets)
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(rendered.text, subtype="plain", charset="utf-8")
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return message
