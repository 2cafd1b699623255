"""An external action that records what it "sends": for tests of what goes out, and when."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict

from clm_engine import hookimpl
from clm_engine.testing import registered

SENT: list[dict[str, Any]] = []


class NotifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def notify(ctx, params: NotifyParams) -> dict[str, Any]:
    SENT.append({"key": ctx.key, "contact": ctx.contact.id})
    return {"sent": True}


@hookimpl
def register_actions(register):
    register("test.notify", notify, NotifyParams, external=True, description="Send a note.")


@contextmanager
def installed() -> Iterator[None]:
    SENT.clear()
    import tests.plugins.notify_plugin as plugin

    with registered(plugin, "notify"):
        yield
