"""A local SMS API on 127.0.0.1 in the common shape: POST /messages with to/from/body as a
form (or JSON), HTTP basic auth, a JSON answer with the message id."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class Gateway:
    username: str = "AC123"
    password: str = "tok3n"
    #: Statuses to answer before accepting (503, 429, 400 ...).
    failures: list[int] = field(default_factory=list)
    #: A ``Retry-After`` header sent with each failure, if any.
    retry_after: str | None = None
    received: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)

    def start(self) -> Gateway:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                expected = base64.b64encode(
                    f"{gateway.username}:{gateway.password}".encode()
                ).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    return self.answer(401, {"error": "bad credentials"})
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    fields = json.loads(raw)
                else:
                    fields = {k: v[0] for k, v in parse_qs(raw).items()}
                gateway.headers.append(dict(self.headers))
                if gateway.failures:
                    status = gateway.failures.pop(0)
                    extra = {"Retry-After": gateway.retry_after} if gateway.retry_after else {}
                    return self.answer(status, {"error": f"status {status}"}, extra)
                if not str(fields.get("to", "")).startswith("+"):
                    return self.answer(400, {"error": "'to' is not E.164"})
                gateway.received.append(fields)
                self.answer(201, {"id": f"SM{len(gateway.received):04d}", "status": "queued"})

            def answer(self, status: int, payload: dict, extra: dict | None = None) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/messages"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
