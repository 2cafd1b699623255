"""The ASGI application of ``clm serve``: :func:`create_app` builds it, for uvicorn or for a
host that mounts it in its own ASGI server (``docs/http.md``)."""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..clock import Clock, SystemClock
from ..engine import Engine, parse_event
from ..errors import ClmError, EventError
from ..models import Contact, Event
from ..registry import Registry
from . import auth
from .bodies import BodyError, decode, is_ndjson, ndjson_items, parse_json, read_body
from .metrics import Metrics
from .surveys import survey_routes
from .writer import Outcome, Unavailable, Writer

access_log = logging.getLogger("clm.http.access")
log = logging.getLogger("clm.http")

#: The runtime status key a reload leaves for the other workers, and how often they look.
RELOAD_KEY = "serve.rulesets_reloaded"
RELOAD_CHECK_SECONDS = 2.0

#: Defaults of the limits (``create_app`` arguments, ``clm serve`` options).
MAX_BODY_BYTES = 1_048_576
MAX_BATCH = 1000
SIGNATURE_WINDOW = 300.0


class ApiError(Exception):
    """An answer other than 2xx, with the reason for the sender (none for a 401)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


# -- response shapes (the OpenAPI document shows them) -----------------------------------------


class EventResult(BaseModel):
    position: int = Field(description="0-based position of the item in the request")
    id: str | None = Field(None, description="the event id (the idempotency key), if known")
    status: str = Field(description="ingested, duplicate, rejected or failed")
    reason: str | None = Field(None, description="why it was rejected or failed")


class IngestResponse(BaseModel):
    ingested: int
    duplicates: int
    rejected: int
    failed: int
    results: list[EventResult]


class SegmentResponse(IngestResponse):
    success: bool = Field(description="Segment's field: true when the request was understood")


class ErrorResponse(BaseModel):
    error: str


class StageChange(BaseModel):
    from_stage: str | None
    to_stage: str
    at: str
    cause: str
    event_id: str | None = None


class OutboxItem(BaseModel):
    seq: int
    key: str
    ruleset: str
    rule: str
    action: str
    params: dict[str, Any]
    status: str
    due_at: str
    attempts: int
    note: str | None = None
    result: Any = None
    entity: str | None = None
    created_at: str = ""


class ReloadResponse(BaseModel):
    loaded: bool
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 503)
}


@dataclass
class Service:
    """What the routes share: the engines, the writer, the settings."""

    db: str
    rulesets: list[str]
    registry: Registry
    clock: Clock
    max_body_bytes: int
    max_batch: int
    webhook_secrets: list[bytes]
    signature_window: float
    pump_interval: float | None
    metrics: Metrics = field(default_factory=Metrics)
    writer: Writer | None = None
    reader: Engine | None = None
    started_at: float = field(default_factory=time.time)
    #: The last reload this worker follows (``RELOAD_KEY``'s value), and when it last looked.
    reload_seen: Any = None
    reload_checked: float = 0.0

    def open(self) -> None:
        """Open the engines (in the worker process, after any fork) and start the writer."""
        writing = Engine(self.db, registry=self.registry, clock=self.clock)
        try:
            # Migrated just above, so this only declares the plugins' tables (a read: the
            # survey page checks links with the store's key, survey_keys).
            reading = Engine(self.db, registry=self.registry, clock=self.clock)
        except BaseException:
            writing.close()
            raise
        try:
            if self.rulesets:
                prepared = writing.prepare_rulesets(self.rulesets)
                writing.use_rulesets(prepared)
                reading.use_rulesets(prepared)
        except BaseException:
            writing.close()
            reading.close()
            raise
        self.reader = reading
        self.reload_seen = reading.store.read().status().get(RELOAD_KEY, (None, ""))[0]
        self.writer = Writer(
            writing,
            pump_interval=self.pump_interval,
            on_result=self.metrics.ingested,
            on_tick=self.metrics.ticked,
        )
        self.writer.start()

    def close(self) -> None:
        self.metrics.worker_stopped()
        if self.writer is not None:
            self.writer.stop()
            self.writer.engine.close()
            self.writer = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    async def follow_reloads(self) -> None:
        """Load the rulesets again when another worker did (``/v1/admin/reload`` reaches the
        worker that answered it; it leaves a mark in the store that every other worker reads
        at most once every ``RELOAD_CHECK_SECONDS``, before the request it is serving)."""
        if not self.rulesets or self.reader is None or self.writer is None:
            return
        now = time.monotonic()
        if now - self.reload_checked < RELOAD_CHECK_SECONDS:
            return
        self.reload_checked = now
        reader = self.reader
        status = await run_in_threadpool(lambda: reader.store.read().status())
        mark = status.get(RELOAD_KEY, (None, ""))[0]
        if mark == self.reload_seen:
            return
        self.reload_seen = mark
        try:
            prepared = await run_in_threadpool(reader.prepare_rulesets, self.rulesets)
        except ClmError as error:  # invalid now: keep the last valid ones, as reload does
            log.warning("another worker reloaded the rulesets; here they are invalid: %s", error)
            return
        await asyncio.wrap_future(self.the_writer().call(lambda e: e.use_rulesets(prepared)))
        await run_in_threadpool(reader.use_rulesets, prepared)

    def engine(self) -> Engine:
        if self.reader is None:
            raise ApiError(503, "the service is starting or stopping")
        return self.reader

    def the_writer(self) -> Writer:
        if self.writer is None or not self.writer.alive:
            raise ApiError(503, "the service is starting or stopping")
        return self.writer

    # -- credentials -----------------------------------------------------------------------

    def check_key(self, token: str | None, needed: str) -> str:
        """The key id of a token allowed ``needed``; 401 (no detail) or 403."""
        if not token:
            raise ApiError(401, "unauthorized")
        found = auth.key_scope(self.engine().store, token)
        if found is None:
            raise ApiError(401, "unauthorized")
        key_id, scope = found
        if not auth.allows(scope, needed):
            raise ApiError(403, f"this key's scope is {scope!r}; this endpoint needs {needed!r}")
        return key_id

    def check_ingest(self, request: Request, body: bytes, body_key: str | None = None) -> str:
        """An ingest request's credentials: an API key (Bearer or Basic), a signature, or
        (Segment) a write key in the body."""
        token = auth.token_from_headers(request.headers.get("authorization"))
        if token is None and auth.SIGNATURE_HEADER in request.headers:
            if auth.signature_valid(
                self.webhook_secrets,
                request.headers.get(auth.TIMESTAMP_HEADER),
                request.headers.get(auth.SIGNATURE_HEADER),
                body,
                now=time.time(),
                window=self.signature_window,
            ):
                return "signed"
            raise ApiError(401, "unauthorized")
        return self.check_key(token or body_key, "ingest")

    # -- ingestion -------------------------------------------------------------------------

    async def ingest(self, items: list[Any]) -> IngestResponse:
        """Parse each item (a mapping, or a ``BodyError`` / ``ValueError`` in its place),
        ingest the events in one commit with whatever else is arriving, and say what became of
        each."""
        if len(items) > self.max_batch:
            raise ApiError(
                413,
                f"{len(items):,} events in one request; the limit is {self.max_batch:,}: "
                "split the batch",
            )
        if len(items) > 50:
            parsed = await run_in_threadpool(_parse_all, items)
        else:
            parsed = _parse_all(items)
        events = [p for p in parsed if isinstance(p, Event)]
        outcomes: list[Outcome] = []
        if events:
            writer = self.the_writer()
            self.metrics.queue.set(writer.pending + 1)
            try:
                outcomes = await asyncio.wrap_future(writer.submit(events))
            except Unavailable:
                raise ApiError(
                    503,
                    "the database is busy; nothing of this request was stored: retry later",
                    {"Retry-After": "5"},
                ) from None
        results: list[EventResult] = []
        done = iter(outcomes)
        for position, item in enumerate(parsed):
            if isinstance(item, Event):
                outcome = next(done)
                results.append(
                    EventResult(
                        position=position, id=item.id, status=outcome.status, reason=outcome.reason
                    )
                )
            else:
                results.append(
                    EventResult(position=position, id=item[0], status="rejected", reason=item[1])
                )
        rejected = sum(r.status == "rejected" for r in results)
        self.metrics.events.labels("rejected").inc(rejected)
        return IngestResponse(
            ingested=sum(r.status == "ingested" for r in results),
            duplicates=sum(r.status == "duplicate" for r in results),
            rejected=rejected,
            failed=sum(r.status == "failed" for r in results),
            results=results,
        )


def _parse_all(items: Sequence[Any]) -> list[Event | tuple[str | None, str]]:
    parsed: list[Event | tuple[str | None, str]] = []
    for item in items:
        if isinstance(item, BodyError):
            parsed.append((None, item.message))
            continue
        if isinstance(item, ValueError):
            parsed.append((None, str(item)))
            continue
        if not isinstance(item, dict):
            parsed.append((None, f"invalid event: expected a JSON object, got {_kind(item)}"))
            continue
        try:
            parsed.append(parse_event(item))
        except EventError as error:
            given = item.get("id")
            parsed.append((given if isinstance(given, str) else None, str(error)))
    return parsed


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


# -- the app -----------------------------------------------------------------------------------


def create_app(
    db: str | os.PathLike[str],
    rulesets: Sequence[str | os.PathLike[str]] = (),
    registry: Registry | None = None,
    *,
    clock: Clock | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_batch: int = MAX_BATCH,
    webhook_secrets: Sequence[str | bytes] = (),
    signature_window: float = SIGNATURE_WINDOW,
    pump_interval: float | None = None,
) -> FastAPI:
    """The ``clm serve`` application over the database ``db`` and ``rulesets``.

    Its engines open when the app starts (its ASGI lifespan), in the process that serves it:
    one writes (a single writer thread, :mod:`clm_engine.http.writer`), one reads. Pass a
    ``registry`` to share plugins with the host's engines. ``webhook_secrets`` enable signed
    webhooks (``X-Clm-Signature``). ``pump_interval`` (seconds) makes this process run due
    work (``Engine.tick``) when idle; by default run ``clm run`` beside it.
    """
    service = Service(
        db=os.fspath(db),
        rulesets=[os.fspath(p) for p in rulesets],
        registry=registry if registry is not None else Registry(),
        clock=clock or SystemClock(),
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        webhook_secrets=[s.encode() if isinstance(s, str) else s for s in webhook_secrets if s],
        signature_window=signature_window,
        pump_interval=pump_interval,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.open)
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="clm-engine",
        version="1",
        summary="Customer lifecycle automation: events in, contact state and decisions out.",
        lifespan=lifespan,
        responses=ERRORS,
        # The interactive pages load their scripts from a CDN: off. /openapi.json stays, open
        # like the health checks: it describes the API and holds no data.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return JSONResponse({"error": error.message}, error.status, headers=error.headers)

    @app.exception_handler(BodyError)
    async def body_error(request: Request, error: BodyError) -> Response:
        return JSONResponse({"error": error.message}, error.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors()
        )
        return JSONResponse({"error": problems or "invalid request"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        headers = dict(error.headers or {})
        if error.status_code == 405:  # every method of the path, not only one route's
            allowed = {
                method
                for route in app.routes
                if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
                for method in route.methods or ()
            }
            headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse({"error": str(error.detail)}, error.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse({"error": "internal error"}, 500)

    app.add_middleware(EncodedContactIds)
    app.add_middleware(FollowReloads, service=service)
    app.add_middleware(AccessLog, metrics=service.metrics)
    _health_routes(app, service)
    _ingest_routes(app, service)
    _segment_routes(app, service)
    _read_routes(app, service)
    _admin_routes(app, service)
    _unsubscribe_routes(app, service)
    survey_routes(app, service)
    return app


def create_app_from_env() -> FastAPI:
    """:func:`create_app` configured by ``clm serve`` through the environment: what each
    worker process of ``clm serve --workers N`` builds (uvicorn's ``factory=True``)."""
    config = json.loads(os.environ["CLM_SERVE_CONFIG"])
    return create_app(
        config["db"],
        config["rulesets"],
        max_body_bytes=config["max_body_bytes"],
        max_batch=config["max_batch"],
        webhook_secrets=webhook_secrets_from_env(),
        pump_interval=config.get("pump_interval"),
    )


def webhook_secrets_from_env() -> list[str]:
    """``$CLM_WEBHOOK_SECRETS``: comma-separated secrets for signed webhooks (rotation)."""
    return [s.strip() for s in os.environ.get("CLM_WEBHOOK_SECRETS", "").split(",") if s.strip()]


# -- routes ------------------------------------------------------------------------------------

EVENT_BODY = {
    "requestBody": {
        "required": True,
        "description": "One event (an object), a JSON array of events, or NDJSON (one event "
        "per line, Content-Type application/x-ndjson), each in the engine's event shape: "
        "components.schemas.Event, docs/events.md. Each item is checked on its own: an item "
        "that is not an event is rejected at its position with the reason, and the others go "
        "on, so the body's schema takes any item.",
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {}}]}
            },
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


def _health_routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz", tags=["health"], responses={200: {"model": dict[str, str]}})
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. No key needed."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        """Readiness: the engines are open, the writer runs and the database answers."""
        try:
            service.the_writer()
            await run_in_threadpool(service.engine().store.read().status)
        except Exception:
            return JSONResponse({"status": "not ready"}, 503)
        return JSONResponse({"status": "ready"})


def _ingest_routes(app: FastAPI, service: Service) -> None:
    @app.post(
        "/v1/events",
        tags=["ingest"],
        response_model=IngestResponse,
        openapi_extra=EVENT_BODY,
    )
    async def post_events(request: Request) -> Response:
        """Ingest one event or a batch. Each event's id is its idempotency key: resend freely.
        Answers 200 with each event's outcome: ingested, duplicate, rejected (with the reason)
        or failed (a reducer refused it)."""
        if not _has_credentials(request):
            raise ApiError(401, "unauthorized")
        if request.headers.get("authorization"):
            service.check_ingest(request, b"")
        body = await read_body(request, service.max_body_bytes)
        if not request.headers.get("authorization"):
            service.check_ingest(request, body)
        text = decode(body)
        if is_ndjson(request.headers.get("content-type")):
            items = ndjson_items(text)
        else:
            value = parse_json(text)
            if not isinstance(value, dict | list):
                raise ApiError(
                    400,
                    f"the body is {_kind(value)}: send an event (an object), an array of events, "
                    "or NDJSON",
                )
            items = [value] if isinstance(value, dict) else value
        answer = await service.ingest(items)
        return JSONResponse(answer.model_dump())


def _has_credentials(request: Request) -> bool:
    return "authorization" in request.headers or auth.SIGNATURE_HEADER in request.headers


SEGMENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")


def _segment_routes(app: FastAPI, service: Service) -> None:
    async def segment(request: Request, kind: str | None) -> Response:
        in_headers = _has_credentials(request)
        if request.headers.get("authorization"):
            service.check_ingest(request, b"")
        body = await read_body(request, service.max_body_bytes)
        if in_headers:
            if not request.headers.get("authorization"):
                service.check_ingest(request, body)  # a signature
            value = parse_json(decode(body))
        else:  # Segment's write key in the body; nothing about the body before it is checked
            try:
                value = parse_json(decode(body))
            except BodyError:
                raise ApiError(401, "unauthorized") from None
            key = value.get("writeKey") if isinstance(value, dict) else None
            service.check_key(key if isinstance(key, str) else None, "ingest")
        if not isinstance(value, dict):
            raise ApiError(400, "the body must be a JSON object")
        received_at = service.clock.now().astimezone(UTC)
        if kind is None:
            batch = value.get("batch")
            if not isinstance(batch, list):
                raise ApiError(400, "a batch needs a 'batch' array of messages")
            shared = value.get("context")
            messages = [_with_context(m, shared) if isinstance(m, dict) else m for m in batch]
        else:
            messages = [{**value, "type": value.get("type", kind)}]
            if messages[0]["type"] != kind:
                raise ApiError(400, f"a message of type {messages[0]['type']!r} sent to /v1/{kind}")
        if len(messages) > service.max_batch:
            raise ApiError(
                413, f"{len(messages):,} messages in one batch; the limit is {service.max_batch:,}"
            )
        # Each message becomes zero or more events; outcomes are per message.
        items: list[Any] = []
        owners: list[int] = []
        refused: dict[int, str] = {}
        for position, message in enumerate(messages):
            if not isinstance(message, dict):
                refused[position] = f"a message must be a JSON object, got {_kind(message)}"
                continue
            try:
                mapped = service.registry.map_segment_message(message, received_at)
            except ValueError as error:
                refused[position] = str(error)
                continue
            for event in mapped:
                items.append(event)
                owners.append(position)
        answer = await service.ingest(items)
        results = []
        by_message: dict[int, list[EventResult]] = {}
        for owner, result in zip(owners, answer.results, strict=True):
            by_message.setdefault(owner, []).append(result)
        for position in range(len(messages)):
            if position in refused:
                results.append(
                    EventResult(position=position, status="rejected", reason=refused[position])
                )
                continue
            mine = by_message.get(position, [])
            worst = next((r for r in mine if r.status in ("rejected", "failed")), None)
            if worst is None:
                worst = next((r for r in mine if r.status == "ingested"), None)
            chosen = worst or (mine[0] if mine else None)
            results.append(
                EventResult(
                    position=position,
                    id=chosen.id if chosen else None,
                    status=chosen.status if chosen else "ingested",
                    reason=chosen.reason if chosen else None,
                )
            )
        service.metrics.events.labels("rejected").inc(len(refused))
        response = SegmentResponse(
            success=True,
            ingested=sum(r.status == "ingested" for r in results),
            duplicates=sum(r.status == "duplicate" for r in results),
            rejected=sum(r.status == "rejected" for r in results),
            failed=sum(r.status == "failed" for r in results),
            results=results,
        )
        return JSONResponse(response.model_dump())

    def segment_body(schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "requestBody": {
                "required": True,
                "description": "A message of Segment's HTTP tracking spec (docs/http.md).",
                "content": {"application/json": {"schema": schema}},
            }
        }

    def single(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await segment(request, kind)

        endpoint.__name__ = f"segment_{kind}"
        endpoint.__doc__ = (
            f"Segment's `{kind}` (write key as Basic auth user name, or `writeKey` in the "
            "body). Mapping in docs/http.md; `alias` is refused with its reason. Like "
            "Segment, answers 200 to every message it understood, with its outcome."
        )
        return endpoint

    for kind in SEGMENT_TYPES:
        app.post(
            f"/v1/{kind}",
            tags=["segment"],
            response_model=SegmentResponse,
            openapi_extra=segment_body(
                {"type": "object", "properties": {"type": {"type": "string", "enum": [kind]}}}
            ),
        )(single(kind))

    batch_schema = {
        "type": "object",
        "required": ["batch"],
        "properties": {"batch": {"type": "array"}},
    }

    @app.post(
        "/v1/batch",
        tags=["segment"],
        response_model=SegmentResponse,
        openapi_extra=segment_body(batch_schema),
    )
    async def segment_batch(request: Request) -> Response:
        """Segment's batch: `{"batch": [messages], "context": {...}}`; outcomes per message."""
        return await segment(request, None)


def _with_context(message: dict[str, Any], shared: Any) -> dict[str, Any]:
    if isinstance(shared, dict) and "context" not in message:
        return {**message, "context": shared}
    return message


def _read_routes(app: FastAPI, service: Service) -> None:
    def reader(request: Request) -> Engine:
        service.check_key(auth.token_from_headers(request.headers.get("authorization")), "read")
        return service.engine()

    def contact_or_404(engine: Engine, contact_id: str) -> Contact:
        contact = engine.contact(contact_id)
        if contact is None:
            raise ApiError(404, f"no contact {contact_id!r}")
        return contact

    limit_query = Query(20, ge=1, le=1000)

    @app.get(
        "/v1/contacts/{contact_id:path}/stages", tags=["read"], response_model=list[StageChange]
    )
    def stages(contact_id: str, request: Request) -> list[StageChange]:
        """A contact's stage history, oldest first."""
        contact_id = as_sent(request, contact_id)
        engine = reader(request)
        contact_or_404(engine, contact_id)
        return [
            StageChange(
                from_stage=t.from_stage,
                to_stage=t.to_stage,
                at=t.at,
                cause=t.cause,
                event_id=t.event_id,
            )
            for t in engine.store.stage_history(contact_id)
        ]

    @app.get("/v1/contacts/{contact_id:path}/events", tags=["read"], response_model=list[Event])
    def events(contact_id: str, request: Request, limit: int = limit_query) -> Response:
        """A contact's most recent events, newest first."""
        contact_id = as_sent(request, contact_id)
        engine = reader(request)
        contact_or_404(engine, contact_id)
        found = engine.store.recent_events(contact_id, limit=limit)
        return Response(
            "[" + ",".join(e.model_dump_json() for e in found) + "]", media_type="application/json"
        )

    @app.get("/v1/contacts/{contact_id:path}/explain", tags=["read"], response_model=dict[str, Any])
    def explain(
        contact_id: str,
        request: Request,
        rule: str | None = None,
        ruleset: str | None = None,
        limit: int = limit_query,
    ) -> Response:
        """Why each rule did or did not fire for a contact (as `clm explain --json`)."""
        from ..explain import explain as explain_contact

        contact_id = as_sent(request, contact_id)
        engine = reader(request)
        contact_or_404(engine, contact_id)
        try:
            found = explain_contact(engine, contact_id, rule=rule, ruleset=ruleset, limit=limit)
        except ClmError as error:
            raise ApiError(404, str(error)) from None
        return Response(json.dumps(found, default=str), media_type="application/json")

    @app.get(
        "/v1/contacts/{contact_id:path}/outbox", tags=["read"], response_model=list[OutboxItem]
    )
    def outbox(contact_id: str, request: Request, rule: str | None = None) -> list[OutboxItem]:
        """A contact's actions: pending, done, failed, vetoed ..."""
        contact_id = as_sent(request, contact_id)
        engine = reader(request)
        contact_or_404(engine, contact_id)
        return [
            OutboxItem(
                seq=r.seq,
                key=r.key,
                ruleset=r.ruleset,
                rule=r.rule,
                action=r.action,
                params=r.params,
                status=r.status,
                due_at=r.due_at,
                attempts=r.attempts,
                note=r.note,
                result=r.result,
                entity=r.entity,
                created_at=r.created_at,
            )
            for r in engine.store.actions_for(contact_id, rule=rule)
        ]

    @app.get("/v1/contacts/{contact_id:path}", tags=["read"], response_model=Contact)
    def contact(contact_id: str, request: Request) -> Response:
        """A contact as the engine knows it now: stage, scores, metrics, attributes, consent.

        An id with a slash may be sent as is (``/v1/contacts/org/42``) or percent-encoded
        (``org%2F42``); encode it when it ends like a route (``x%2Fevents``)."""
        contact_id = as_sent(request, contact_id)
        engine = reader(request)
        return Response(
            contact_or_404(engine, contact_id).model_dump_json(), media_type="application/json"
        )

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics(request: Request) -> Response:
        """Prometheus metrics of the service: every worker's with ``--workers N`` (a key with the
        read scope, as a Bearer token)."""
        reader(request)
        body, media_type = service.metrics.exposition()
        return Response(body, media_type=media_type)


def _admin_routes(app: FastAPI, service: Service) -> None:
    def admin(request: Request) -> None:
        service.check_key(auth.token_from_headers(request.headers.get("authorization")), "admin")

    @app.post("/v1/admin/reload", tags=["admin"], response_model=ReloadResponse)
    async def reload(request: Request) -> ReloadResponse:
        """Load the ruleset folder again: this worker at once, every other worker (``clm serve
        --workers N``, or other servers on the same database) before its next request, within
        a few seconds. An invalid folder changes nothing: the last valid rulesets keep running
        and the problems are returned."""
        admin(request)
        writer = service.the_writer()
        reading = service.engine()
        try:
            prepared = await run_in_threadpool(writer.engine.prepare_rulesets, service.rulesets)
        except ClmError as error:
            return ReloadResponse(
                loaded=False,
                message=f"kept the last valid rulesets; the new ones are invalid:\n{error}",
            )
        mark = {"pid": os.getpid(), "at": time.time()}

        def use(engine: Engine) -> list[str]:
            found = engine.use_rulesets(prepared)
            engine.record_status(RELOAD_KEY, mark)  # tell the other workers (follow_reloads)
            return found

        warnings = await asyncio.wrap_future(writer.call(use))
        service.reload_seen = mark
        await run_in_threadpool(reading.use_rulesets, prepared)
        names = ", ".join(
            f"{r.ruleset.ruleset} v{r.ruleset.version}" for r in prepared.validated.rulesets
        )
        return ReloadResponse(loaded=True, message="\n".join([f"loaded {names}", *warnings]))

    @app.get("/v1/admin/health", tags=["admin"], response_model=dict[str, Any])
    def health(request: Request) -> dict[str, Any]:
        """This worker and the database: rulesets running, writer, queue, recent failures."""
        admin(request)
        writer = service.the_writer()
        engine = service.engine()
        return {
            "status": "ok",
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - service.started_at, 1),
            "rulesets": [
                {"name": r.ruleset.ruleset, "version": r.ruleset.version}
                for r in engine.rulebook.rulesets
            ],
            "writer": {"alive": writer.alive, "pending": writer.pending, "batches": writer.batches},
            "failures": len(engine.store.failures(limit=100)),
            "status_reports": {k: v for k, (v, _at) in engine.store.read().status().items()},
        }


UNSUBSCRIBED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""


def _unsubscribe_routes(app: FastAPI, service: Service) -> None:
    async def unsubscribe(contact: str, token: str) -> bool:
        if not (0 < len(contact) <= 200 and 0 < len(token) <= 200):
            return False
        if not service.registry.check_unsubscribe_token(contact, token):
            return False
        day = service.clock.now().astimezone(UTC).strftime("%Y-%m-%d")
        digest = hashlib.sha256(f"{contact}\0{token}\0{day}".encode()).hexdigest()[:24]
        event = {
            "id": f"unsubscribe-{digest}",  # one per link and day: a retried click is a no-op
            "contact_id": contact,
            "type": "unsubscribed",
            "occurred_at": service.clock.now().astimezone(UTC).isoformat(),
            "properties": {"channel": "email", "source": "list-unsubscribe"},
        }
        answer = await service.ingest([event])
        if answer.failed or answer.rejected:
            raise ApiError(422, answer.results[0].reason or "the unsubscribe was not recorded")
        return True

    html_page = {"content": {"text/html": {"schema": {"type": "string"}}}}

    @app.post(
        "/v1/unsubscribe",
        tags=["email"],
        response_model=dict[str, str],
        responses={403: {"model": ErrorResponse, "description": "not a valid link"}},
    )
    async def one_click(request: Request, contact: str = "", token: str = "") -> Response:
        """RFC 8058 one-click unsubscribe: the mailbox provider POSTs
        `List-Unsubscribe=One-Click` to the link of the `List-Unsubscribe` header. The signed
        token is the credential; a valid one records an `unsubscribed` event (email). A link
        that is not valid is a 403."""
        await read_body(request, 4096)
        if not await unsubscribe(contact, token):
            raise ApiError(403, "this unsubscribe link is not valid")
        return JSONResponse({"status": "unsubscribed"})

    @app.get(
        "/v1/unsubscribe",
        tags=["email"],
        response_class=HTMLResponse,
        responses={200: html_page, 403: {**html_page, "description": "not a valid link"}},
    )
    async def page(contact: str = "", token: str = "") -> Response:
        """The page a person opens from the email's unsubscribe link (HTML; 403 for a link
        that is not valid)."""
        if not await unsubscribe(contact, token):
            return HTMLResponse(
                UNSUBSCRIBED_PAGE.format(
                    title="This link is not valid",
                    text="We could not unsubscribe you with this link. Please use the link "
                    "of a recent email, or contact us.",
                ),
                403,
            )
        return HTMLResponse(
            UNSUBSCRIBED_PAGE.format(
                title="You are unsubscribed",
                text=f"{html.escape(contact)} will receive no more marketing email from us.",
            )
        )


#: Where ``EncodedContactIds`` leaves the id a client percent-encoded, and what stands for it
#: in the path the routes see (no slash in it, so it never reads as a route's suffix).
ENCODED_ID = "clm.contact_id"
_ENCODED_PLACEHOLDER = "~id~"
_CONTACTS = b"/v1/contacts/"


def as_sent(request: Request, contact_id: str) -> str:
    """The contact id as the client sent it: the percent-encoded one if it was encoded."""
    found = request.scope.get(ENCODED_ID)
    return found if isinstance(found, str) else contact_id


class EncodedContactIds:
    """Pure ASGI middleware: a contact id sent with an encoded slash (``x%2Fevents``) is one
    id, whatever it ends with. The server decodes the path before routing, so ``x%2Fevents``
    would read as contact ``x``'s events; the raw path still says which slash was encoded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if isinstance(raw, bytes) and raw.startswith(_CONTACTS):
            first, _, rest = raw[len(_CONTACTS) :].partition(b"/")
            if b"%2f" in first.lower():
                sent = unquote(first.decode("ascii", "replace"))  # bad UTF-8: an id no one has
                path = "/v1/contacts/" + _ENCODED_PLACEHOLDER
                if rest:
                    path += "/" + unquote(rest.decode("ascii", "replace"))
                scope = {**scope, "path": path, ENCODED_ID: sent}
        await self.app(scope, receive, send)


class FollowReloads:
    """Pure ASGI middleware: before a request, catch up with a reload another worker did
    (``Service.follow_reloads``; a failure to is logged, never the request's)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self.service.follow_reloads()
            except Exception:  # the database is down, say: the request says so itself
                log.exception("could not follow another worker's reload")
        await self.app(scope, receive, send)


class AccessLog:
    """Pure ASGI middleware: one structured (JSON) access-log line per request, and the
    request-latency histogram by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(
                    json.dumps(
                        {
                            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                            "method": scope["method"],
                            "path": scope["path"],
                            "route": template,
                            "status": status,
                            "ms": round(elapsed * 1000, 2),
                            "client": client[0] if client else None,
                            "pid": os.getpid(),
                        }
                    )
                )
