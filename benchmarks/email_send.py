"""How fast does the email plugin render and send personalised messages?

Run: ``.venv/bin/python benchmarks/email_send.py [--messages 10000] [--repeat 1]``

10,000 seeded contacts (first name, company, plan, last product; some fields missing, so the
templates' fallbacks are used) and the example onboarding welcome template (subject, text
and HTML parts) from ``rulesets/templates/``. Two ways, each through two
transports:

1. **pipeline**: the plugin's own steps in a loop (template context, sandboxed render, MIME
   message with Message-ID and List-Unsubscribe, transport ``send``): what one message costs.
2. **engine**: ``Engine.ingest`` of one ``signup`` event per contact with a rule whose action is
   ``email.send``, then ``Engine.dispatch()`` timed on its own: policies (consent, caps, quiet
   hours), the outbox claim and the record of each ``email.sent`` event in the plugin's log.

Transports: ``file`` (an ``.eml`` per message into a temporary folder) and ``smtp`` (a real
aiosmtpd server on 127.0.0.1, in its own process, that accepts and counts everything; one
connection reused). The
script checks that every message arrived (files written, messages counted by the server) and
prints messages per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "rulesets" / "templates"

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret"]
COMPANIES = ["Northwind", "Contoso", "Initech", "Globex", "Umbrella", "Hooli", "Vandelay"]
PLANS = ["free", "starter", "pro"]
PRODUCTS = ["Smart Kettle", "Air Purifier", "Robot Vacuum", "Coffee Grinder"]


def contacts(count: int, seed: int = 7):
    from clm_engine import Contact

    rng = random.Random(seed)
    for n in range(count):
        attributes = {"plan": rng.choice(PLANS)}
        if rng.random() < 0.9:
            attributes["first_name"] = rng.choice(FIRST)
        if rng.random() < 0.7:
            attributes["company"] = f"{rng.choice(COMPANIES)} {n % 97}"
        metrics = {"last_product": rng.choice(PRODUCTS)} if rng.random() < 0.5 else {}
        yield Contact(
            id=f"c{n:06d}",
            email=f"person{n}@example.com",
            attributes=attributes,
            metrics=metrics,
            consent={"email": True},
            timezone="UTC",
        )


def load_template(name: str = "onboarding-welcome"):
    from clm_email.templates import EmailTemplate

    return EmailTemplate.model_validate(json.loads((TEMPLATES / f"{name}.json").read_text()))


SERVER = """
import asyncio, sys
from aiosmtpd.controller import Controller

class Counter:
    def __init__(self, path):
        self.log = open(path, "a", buffering=1)

    async def handle_DATA(self, server, session, envelope):
        self.log.write("1\\n")
        return "250 OK"

controller = Controller(Counter(sys.argv[2]), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
controller.stop()
"""


class Server:
    """aiosmtpd in its own process (as a real server would be: not sharing our GIL), writing
    a line per message it accepts, so the benchmark can check that every one arrived."""

    def __init__(self) -> None:
        import subprocess

        self.port = free_port()
        self.log = Path(tempfile.mkdtemp(prefix="clm-smtp-")) / "accepted.log"
        self.log.touch()
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(self.port), str(self.log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "ready"

    @property
    def count(self) -> int:
        return len(self.log.read_text().splitlines())

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        shutil.rmtree(self.log.parent, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pipeline(messages: int, transport_name: str, folder: Path, port: int | None) -> float:
    """Messages per second through render -> build -> send, without the engine."""
    from clm_email import templates
    from clm_email.message import build_message, message_id
    from clm_email.settings import EmailSettings
    from clm_email.transports import FileTransport, SmtpTransport

    template = load_template()
    people = list(contacts(messages))
    settings = EmailSettings(
        transport=transport_name,
        outbox_dir=str(folder),
        smtp={"host": "127.0.0.1", "port": port or 25, "security": "none"},
    )
    transport = FileTransport(folder) if transport_name == "file" else SmtpTransport(settings)
    now = datetime(2026, 11, 2, 10, tzinfo=UTC)
    secret = b"bench"
    started = time.perf_counter()
    for contact in people:
        link = templates.unsubscribe_link(settings.unsubscribe_url, contact.id, secret)
        rendered = templates.render(
            template, templates.context_for(contact, template, unsubscribe_url=link)
        )
        message = build_message(
            rendered,
            to=contact.email,
            sender=settings.from_address,
            message_id=message_id(f"bench/{contact.id}", settings.domain),
            date=now,
            unsubscribe_url=link,
        )
        transport.send(message, sender="noreply@example.com", recipients=[contact.email])
    elapsed = time.perf_counter() - started
    transport.close()
    return messages / elapsed


def engine_run(messages: int, transport_name: str, folder: Path, port: int | None) -> float:
    """Messages per second of ``Engine.dispatch()`` sending one ``email.send`` per contact."""
    import clm_email
    from clm_email.transports import close_transports

    from clm_engine import Engine, VirtualClock

    os.environ["CLM_EMAIL_TRANSPORT"] = transport_name
    os.environ["CLM_EMAIL_OUTBOX"] = str(folder)
    os.environ["CLM_SMTP_HOST"] = "127.0.0.1"
    os.environ["CLM_SMTP_PORT"] = str(port or 25)
    os.environ["CLM_SMTP_SECURITY"] = "none"
    work = Path(tempfile.mkdtemp(prefix="clm-email-bench-"))
    try:
        rules = work / "rules"
        rules.mkdir()
        shutil.copy(TEMPLATES / "onboarding-welcome.json", rules / "welcome.json")
        (rules / "send.json").write_text(
            json.dumps(
                {
                    "ruleset": "bench",
                    "version": 1,
                    "rules": [
                        {
                            "id": "welcome",
                            "when": {"event": "signup"},
                            "then": [
                                {"action": "email.send", "with": {"template": "onboarding-welcome"}}
                            ],
                        }
                    ],
                }
            )
        )
        clock = VirtualClock(datetime(2026, 11, 2, 10, tzinfo=UTC))
        events = []
        for n, contact in enumerate(contacts(messages)):
            properties = {"email": contact.email, "consent": {"email": True}}
            properties.update(contact.attributes)
            at = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=n)
            events.append(
                {
                    "contact_id": contact.id,
                    "type": "signup",
                    "occurred_at": at.isoformat(),
                    "properties": properties,
                }
            )
        with Engine(work / "bench.db", clock=clock, plugins={"email": clm_email}) as engine:
            engine.load_rulesets([rules])
            for start in range(0, len(events), 5000):
                engine.ingest_many(events[start : start + 5000])
            started = time.perf_counter()
            report = engine.dispatch(batch=500)
            elapsed = time.perf_counter() - started
            sent = engine.store.db.execute(
                "SELECT count(*) FROM email_messages WHERE status = 'sent'"
            ).fetchone()[0]
        close_transports()
        if sent != messages:
            sys.exit(f"engine run sent {sent} of {messages}: {report.as_dict()}")
        return messages / elapsed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-engine", action="store_true", help="only the pipeline rows")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "plugins" / "email"))
    print(
        f"{args.messages:,} personalised messages (text + HTML), Python "
        f"{platform.python_version()} on {platform.machine()}, best of {args.repeat}"
    )
    server = Server()
    try:
        modes = [("pipeline", pipeline)]
        if not args.skip_engine:
            modes.append(("engine", engine_run))
        for mode, run in modes:
            for transport in ("file", "smtp"):
                best = 0.0
                for _ in range(args.repeat):
                    folder = Path(tempfile.mkdtemp(prefix="clm-email-out-"))
                    before = server.count
                    try:
                        rate = run(args.messages, transport, folder, server.port)
                        if transport == "file":
                            written = sum(1 for _ in folder.glob("*.eml"))
                            if written != args.messages:
                                sys.exit(f"{mode}/file wrote {written} of {args.messages}")
                        elif server.count - before != args.messages:
                            sys.exit(f"{mode}/smtp: server got {server.count - before}")
                    finally:
                        shutil.rmtree(folder, ignore_errors=True)
                    best = max(best, rate)
                print(f"  {mode:<9} {transport:<5} {best:>9,.0f} messages/s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
