"""``clm serve``: the HTTP service; ``clm keys``: its API keys (``docs/http.md``)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..errors import ClmError
from . import cli
from .common import console, db_option, json_option, open_engine, print_json, rulesets_option


@cli.command()
@db_option
@rulesets_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes (each opens its own engines; SQLite writes are queued between them).",
)
@click.option(
    "--max-body-bytes",
    default=1_048_576,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Largest request body; a larger one is answered 413.",
)
@click.option(
    "--max-batch",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most events (or Segment messages) in one request; more is answered 413.",
)
@click.option(
    "--pump-interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Also run due work (actions, anchors, schedules) every N seconds when idle, in each "
    "worker. By default run `clm run` beside the server.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option("--openapi", is_flag=True, help="Print the OpenAPI document and exit.")
def serve(
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    host: str,
    port: int,
    workers: int,
    max_body_bytes: int,
    max_batch: int,
    pump_interval: float | None,
    log_level: str,
    openapi: bool,
) -> None:
    """Serve the HTTP API: events in (/v1/events, Segment's /v1/track ...), contacts out.

    Every endpoint but /healthz and /readyz needs a key (`clm keys create`). Listens on
    127.0.0.1 unless --host says otherwise; put a TLS-terminating proxy in front of it.
    Signed webhooks use the secrets in $CLM_WEBHOOK_SECRETS (comma-separated).
    """
    if openapi:
        from ..http import openapi_document

        print_json(openapi_document())
        return
    import uvicorn

    # Created and migrated once here, so that N workers do not race to create the file.
    with open_engine(db_path, must_exist=False, rulesets=ruleset_paths):
        pass
    os.environ["CLM_SERVE_CONFIG"] = json.dumps(
        {
            "db": str(db_path),
            "rulesets": [str(p) for p in ruleset_paths],
            "max_body_bytes": max_body_bytes,
            "max_batch": max_batch,
            "pump_interval": pump_interval,
        }
    )
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its counts here; /metrics adds them up (http/metrics.py).
        metrics_dir = tempfile.mkdtemp(prefix="clm-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _run_uvicorn(uvicorn, host, port, workers, log_level)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_uvicorn(uvicorn: Any, host: str, port: int, workers: int, log_level: str) -> None:
    uvicorn.run(
        "clm_engine.http:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # clm.http.access writes one JSON line per request instead
        log_level=log_level,
        log_config=log_config(log_level),
        timeout_graceful_shutdown=30,
    )


def log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's own logging, plus one plain handler on stderr for every other logger (the
    ``clm.http.access`` JSON lines, the writer's errors), at ``log_level``.

    Given to uvicorn rather than set here: uvicorn applies it in every worker process, and a
    worker is a fresh process (spawned), which logging set up in this one never reaches; with
    ``--workers 2`` the access lines were silently dropped."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["plain"] = {"format": "%(message)s"}
    config["handlers"]["plain"] = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["plain"], "level": log_level.upper()}
    return config


@cli.group()
def keys() -> None:
    """API keys of `clm serve`: create, list, revoke. Only a hash of each key is stored."""


@keys.command("create")
@db_option
@click.option(
    "--scope",
    required=True,
    type=click.Choice(["ingest", "read", "admin"]),
    help="ingest: send events; read: contacts, explain, outbox, metrics; admin: everything.",
)
@click.option("--name", default="", help="What the key is for (shown by `clm keys list`).")
@json_option
def keys_create(db_path: Path, scope: str, name: str, as_json: bool) -> None:
    """Create a key and print it, once: it cannot be shown again."""
    from ..http.auth import hash_token, new_token

    key_id, token = new_token()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with open_engine(db_path, must_exist=False) as engine:
        engine.store.create_api_key(
            key_id, name=name, scope=scope, token_hash=hash_token(token), created_at=now
        )
    if as_json:
        print_json({"id": key_id, "scope": scope, "name": name, "key": token})
        return
    console.print(f"created key {key_id} ({scope}); keep it now, it is not shown again:")
    click.echo(token)


@keys.command("list")
@db_option
@json_option
def keys_list(db_path: Path, as_json: bool) -> None:
    """Every key, revoked ones too (never the keys themselves)."""
    with open_engine(db_path) as engine:
        found = engine.store.api_keys()
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("no keys: create one with clm keys create --scope ingest")
        return
    table = Table("id", "scope", "name", "created", "revoked")
    for key in found:
        table.add_row(
            key["id"], key["scope"], key["name"], key["created_at"], key["revoked_at"] or ""
        )
    console.print(table)


@keys.command("revoke")
@db_option
@click.argument("key_id")
def keys_revoke(db_path: Path, key_id: str) -> None:
    """Revoke a key by its id (the part after clm_): refused from the next request on."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with open_engine(db_path) as engine:
        if not engine.store.revoke_api_key(key_id, at=now):
            raise ClmError(f"no active key {key_id!r} (clm keys list shows them)")
    console.print(f"revoked key {key_id}")
