"""``webhook.post``: a signed JSON post to an HTTP endpoint, from the outbox.

External (it runs after the dispatch transaction commits, outside the write lock). What it
comes to, and what the engine does then:

* a 2xx: done; a ``webhook.sent`` event records it (and counts for cross-channel caps when
  its ``category`` is capped);
* a timeout, a refused connection, 408, 425, 429 or a 5xx: the action raises, and the engine
  retries it with exponential backoff through the outbox, dead-lettering it after its
  ``max_attempts`` (``clm dead-letters``); every retry carries the same ``Idempotency-Key``
  and body, so the receiver can drop a duplicate;
* any other 4xx (400, 401, 403, 404, 410, 422 ...), a redirect not followed, or a target the
  network rules refuse: failed at once, never retried (trying again cannot change it), with
  a ``webhook.failed`` event saying why;
* a body template that does not render: failed, nothing is sent.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clm_engine import ActionContext, Name, RetryLater, did_you_mean, utc_text

from . import network, rendering, signing
from .settings import (
    DEFAULT_SECRET_ENV,
    SETTINGS_ENV,
    WebhookSettings,
    check_headers,
    check_url,
    resolve_settings,
    secret_from,
)

USER_AGENT = "clm-webhook/0.1"
#: The largest body template a rule may hold, as JSON text.
MAX_BODY_TEMPLATE = 64 * 1024
#: Statuses worth retrying: the request timed out, too early, too many, or the server failed.
RETRIED = frozenset({408, 425, 429})


class PostParams(BaseModel):
    """``{"action": "webhook.post", "with": {"endpoint": "crm", "body": {"title": "Call
    {{ first_name }}"}}}``: an ``endpoint`` named in the webhook settings (its URL and its
    secret live there), or a ``url`` (signed with ``$CLM_WEBHOOK_SECRET``)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Name | None = None
    url: str | None = None
    #: A JSON value whose strings (keys too) are templates.
    body: dict[str, Any] | list[Any]
    #: Extra non-secret headers (the plugin's own cannot be replaced).
    headers: dict[str, str] = Field(default_factory=dict)
    #: What kind of message this is, for cross-channel policies (``marketing`` is capped where
    #: a policy says so; the default, ``operational``, is a task or a notification).
    category: Name = "operational"
    #: Values for personal fields the contact lacks: ``{"first_name": "there"}``.
    fallbacks: dict[Name, Annotated[str, Field(max_length=1000)]] = Field(default_factory=dict)
    #: Template data from whoever queued the post (``{{ data.score }}``).
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value, secrets_allowed=False)

    @model_validator(mode="after")
    def _one_target(self) -> PostParams:
        if (self.endpoint is None) == (self.url is None):
            raise ValueError("give either 'endpoint' (named in the webhook settings) or 'url'")
        size = len(json.dumps(self.body, ensure_ascii=False))
        if size > MAX_BODY_TEMPLATE:
            raise ValueError(f"the body template is {size:,} characters; at most 65,536")
        return self

    @classmethod
    def check_references(cls, params: PostParams, documents: dict[str, Any]) -> list[str]:
        found = rendering.problems(params.body, params.fallbacks)
        if params.endpoint is not None and _settings_file_set():
            try:
                known = resolve_settings().endpoints
            except ValueError as error:
                return [*found, str(error)]
            if params.endpoint not in known:
                hint = did_you_mean(params.endpoint, list(known))
                found.append(f"no webhook endpoint {params.endpoint!r} in the settings{hint}")
        return found


def _settings_file_set() -> bool:
    """Endpoints are checked at validation only where settings say what they are."""
    return bool(os.environ.get(SETTINGS_ENV))


def target_of(
    params: PostParams, settings: WebhookSettings
) -> tuple[str, str, dict[str, str], float]:
    """The URL, the secret's variable, the extra headers and the timeout of a post."""
    if params.endpoint is not None:
        endpoint = settings.endpoints.get(params.endpoint)
        if endpoint is None:
            hint = did_you_mean(params.endpoint, list(settings.endpoints))
            raise network.TargetRefused(
                f"no webhook endpoint {params.endpoint!r} in the settings{hint}"
            )
        headers = {**endpoint.resolved_headers(), **params.headers}
        return endpoint.url, endpoint.secret_env, headers, endpoint.timeout or settings.timeout
    if not settings.allow_rule_urls:
        raise network.TargetRefused(
            "the webhook settings allow only named endpoints (allow_rule_urls is false)"
        )
    assert params.url is not None
    return params.url, DEFAULT_SECRET_ENV, dict(params.headers), settings.timeout


def post(ctx: ActionContext, params: PostParams, *, simulate: bool = False) -> dict[str, Any]:
    """Render the body, sign it and post it (see the module docstring for the outcomes)."""
    settings = resolve_settings()
    log: dict[str, Any] = {"key": ctx.key, "endpoint": params.endpoint, "category": params.category}
    try:
        url, secret_env, extra, timeout = target_of(params, settings)
        log["host"] = urlsplit(url).hostname
        secret = b"" if simulate else secret_from(secret_env)  # a simulation signs nothing
        values = rendering.context(
            ctx.contact, fallbacks=params.fallbacks, data=params.data, event=ctx.event
        )
        body = rendering.render_body(
            params.body, values, params.fallbacks, settings.template_limits
        )
    except (ValueError, rendering.RenderError) as error:  # TargetRefused is a ValueError
        ctx.emit("webhook.failed", {**log, "reason": str(error)})
        return {"failed": str(error)}
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    timestamp = int(ctx.now.timestamp())
    headers = {
        **extra,
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": idempotency_key(ctx.key),
        "X-CLM-Timestamp": str(timestamp),
        "X-CLM-Signature": signing.signature(secret, timestamp, raw),
        "X-CLM-Attempt": str(ctx.attempt),
    }
    if simulate:
        ctx.emit("webhook.sent", {**log, "simulated": True, "sent_at": utc_text(ctx.now)})
        return {"simulated": log["host"], "bytes": len(raw)}
    veto = ctx.veto_now()  # last, before reaching outside: a withdrawal since the claim counts
    if veto is not None:
        return {"vetoed": veto}
    try:
        response = network.post(url, body=raw, headers=headers, timeout=timeout, settings=settings)
    except network.TargetRefused as error:
        ctx.emit("webhook.failed", {**log, "reason": str(error)})
        return {"failed": str(error)}
    # network.TransientFailure propagates: the engine retries with backoff.
    status, host = response.status, log["host"]
    said = f": {response.body[:200]}" if response.body.strip() else ""
    if 200 <= status < 300:
        ctx.emit("webhook.sent", {**log, "status": status, "sent_at": utc_text(ctx.now)})
        return {"posted": status, "host": host, "bytes": len(raw)}
    if status in RETRIED or status >= 500:
        wait = f" (Retry-After: {response.retry_after})" if response.retry_after else ""
        message = f"HTTP {status} from {host}{wait}{said}"
        if response.retry_after:  # the endpoint said when: not before then
            raise RetryLater.from_header(message, response.retry_after, ctx.now)
        raise network.TransientFailure(message)
    reason = f"HTTP {status} from {host}, not retried{said}"
    ctx.emit("webhook.failed", {**log, "status": status, "reason": reason})
    return {"failed": reason}


def simulate_post(ctx: ActionContext, params: PostParams) -> dict[str, Any]:
    """``webhook.post`` in a simulation or backtest: rendered and signed, sent nowhere (and
    recorded as sent, so cross-channel caps count it as they would live)."""
    return post(ctx, params, simulate=True)


def idempotency_key(key: str) -> str:
    """The outbox key as a header value: printable ASCII (anything else percent-encoded)."""
    return quote(key, safe="/:@-._~!$&'()*+,;=")
