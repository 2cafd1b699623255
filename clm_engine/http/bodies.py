"""Reading request bodies within limits, and turning them into JSON values with a reason when
they are not: a bad body is a 4xx naming what is wrong, never a 500."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


class BodyError(Exception):
    """A body the service will not take: its HTTP status and the reason, for the sender."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass ``limit`` bytes (by its
    ``Content-Length`` before reading, else while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BodyError(400, "Content-Length is not a number") from None
        if size > limit:
            raise BodyError(413, too_large(limit))
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyError(413, too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> str:
    return (
        f"the body is larger than {limit:,} bytes, the limit of this endpoint: "
        "send fewer events per request"
    )


def decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(400, f"the body is not valid UTF-8 (byte {error.start})") from None


def parse_json(text: str, where: str = "the body") -> Any:
    """One JSON value; ``BodyError(400)`` with the reason (and place) when it is not one."""
    if not text.strip():
        raise BodyError(400, f"{where} is empty: expected JSON")
    try:
        return json.loads(text)
    except RecursionError:
        raise BodyError(400, f"{where} is nested too deeply to be an event") from None
    except json.JSONDecodeError as error:
        raise BodyError(
            400,
            f"{where} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})",
        ) from None
    except ValueError as error:  # an integer of more than 4,300 digits
        raise BodyError(400, f"{where} is not valid JSON: {error}") from None


def is_ndjson(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in NDJSON_TYPES


def ndjson_items(text: str) -> list[Any]:
    """One item per non-blank line; a line that is not JSON becomes a :class:`BodyError` in its
    place (rejected at its position, while the other lines go on)."""
    items: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(parse_json(line, where=f"line {number}"))
        except BodyError as error:
            items.append(error)
    return items
