"""A real SMTP server on 127.0.0.1 (aiosmtpd) for the email plugin's tests.

The server records what it received and can be told to answer a temporary (4xx) or a
permanent (5xx) refusal, so tests check retries and suppression against real SMTP replies.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from clm_email.transports import close_transports

from clm_engine import Engine, VirtualClock


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    #: time.monotonic() at MAIL FROM (the send began) and at the end of DATA (it arrived).
    mail_at: float = 0.0
    data_at: float = 0.0


@dataclass
class Recorder:
    """The server's handler: keeps what it accepted; answers queued replies first."""

    messages: list[Received] = field(default_factory=list)
    #: Replies to give to the next DATA commands instead of accepting ("451 ...", "550 ...").
    data_replies: list[str] = field(default_factory=list)
    #: Replies to RCPT TO for given addresses, every time.
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        session.mail_at = time.monotonic()
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_replies:
            return self.data_replies.pop(0)
        message = message_from_bytes(envelope.content, policy=default)
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message,
                getattr(session, "mail_at", 0.0),
                time.monotonic(),
            )
        )
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: Recorder
    ca_file: str | None = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made with openssl for this test session."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _start(handler: Recorder, **options) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), **options)
    controller.start()
    return controller


@pytest.fixture
def smtp_server():
    """A plain SMTP server (no TLS): ``security: none`` in the settings."""
    handler = Recorder()
    controller = _start(handler)
    try:
        yield SmtpServer("127.0.0.1", controller.port, handler)
    finally:
        controller.stop()


def _authenticator(handler: Recorder):
    def authenticate(server, session, envelope, mechanism, auth_data):
        user, password = auth_data.login.decode(), auth_data.password.decode()
        handler.logins.append((user, password))
        ok = (user, password) == ("mailer", "s3cret")
        return AuthResult(success=ok, handled=False)  # the server answers 235 or 535

    return authenticate


@pytest.fixture
def starttls_server(certificate):
    """An SMTP server that requires STARTTLS, then a login (mailer / s3cret)."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Recorder()
    controller = _start(
        handler,
        tls_context=context,
        require_starttls=True,
        authenticator=_authenticator(handler),
        auth_required=True,
    )
    try:
        yield SmtpServer("127.0.0.1", controller.port, handler, str(cert))
    finally:
        controller.stop()


@pytest.fixture
def tls_server(certificate):
    """An SMTP server speaking TLS from the first byte (port-465 style)."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Recorder()
    controller = _start(handler, ssl_context=context)
    try:
        yield SmtpServer("127.0.0.1", controller.port, handler, str(cert))
    finally:
        controller.stop()


# -- an engine with the email plugin, the example templates and sequences -----------------------

#: The example drips, templates and the ruleset that starts and stops them, with the others.
EXAMPLES = Path(__file__).resolve().parents[3] / "rulesets"
DRIPS = EXAMPLES / "email-drips.json"
START = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


@dataclass
class Mail:
    """A workspace: rulesets folder, outbox folder, clock and a way to (re)open the engine."""

    root: Path
    clock: VirtualClock
    engine: Engine | None = None

    @property
    def rules(self) -> Path:
        return self.root / "rules"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    def write(self, name: str, document: dict) -> Path:
        path = self.rules / name
        path.write_text(json.dumps(document, indent=2))
        return path

    def ruleset(self, *rules: dict, name: str = "mail") -> Path:
        return self.write(f"{name}.json", {"ruleset": name, "version": 1, "rules": list(rules)})

    def settings(self, monkeypatch, **values) -> None:
        path = self.root / "email-settings.json"
        path.write_text(json.dumps(values))
        monkeypatch.setenv("CLM_EMAIL_SETTINGS", str(path))

    def open(self, plugins: dict | None = None) -> Engine:
        """The engine, with the installed email plugin and ``plugins`` (a transport's)."""
        self.engine = Engine(self.root / "clm.db", clock=self.clock, plugins=plugins or {})
        self.engine.load_rulesets([self.rules])
        return self.engine

    def files(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml")) if self.outbox.is_dir() else []

    def log(self) -> list[dict]:
        return list(self.engine.store.db.query("SELECT * FROM email_messages ORDER BY id"))

    def sends(self) -> list:
        return [r for r in self.engine.store.actions_for("c1") if r.action == "email.send"]


@pytest.fixture
def mail(tmp_path, monkeypatch):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", "email")
    monkeypatch.setenv("CLM_EMAIL_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("CLM_EMAIL_UNSUBSCRIBE_SECRET", "test-secret")
    for name in ("CLM_EMAIL_SETTINGS", "CLM_EMAIL_TRANSPORT", "CLM_SMTP_HOST", "CLM_SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    workspace = Mail(tmp_path, VirtualClock(START))
    workspace.rules.mkdir()
    for kind in ("templates", "sequences"):
        for path in (EXAMPLES / kind).glob("*.json"):
            shutil.copy(path, workspace.rules / path.name)
    try:
        yield workspace
    finally:
        if workspace.engine is not None:
            workspace.engine.close()
        close_transports()


def use_smtp(monkeypatch, server) -> None:
    monkeypatch.setenv("CLM_EMAIL_TRANSPORT", "smtp")
    monkeypatch.setenv("CLM_SMTP_HOST", server.host)
    monkeypatch.setenv("CLM_SMTP_PORT", str(server.port))
    monkeypatch.setenv("CLM_SMTP_SECURITY", "none")


def signup(contact_id: str = "c1", at: str = "2026-11-02T12:00:00Z", **properties) -> dict:
    props = {
        "email": f"{contact_id}@example.com",
        "first_name": "Ada",
        "company": "Engines Ltd",
        "plan": "starter",
        "consent": {"email": True},
        "timezone": "Europe/London",
        **properties,
    }
    return {"contact_id": contact_id, "type": "signup", "occurred_at": at, "properties": props}


def send_rule(template: str = "onboarding-welcome", event: str = "signup", **with_) -> dict:
    return {
        "id": f"send-{template}",
        "when": {"event": event},
        "then": [{"action": "email.send", "with": {"template": template, **with_}}],
    }
