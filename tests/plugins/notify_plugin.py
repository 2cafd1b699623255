"""An external action that records what it "sends": for tests of what goes out, and when."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from clm_engine import hookimpl

SENT: list[dict[str, Any]] = []


class NotifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def notify(ctx, params: NotifyParams) -> dict[str, Any]:
    SENT.append({"key": ctx.key, "contact": ctx.contact.id})
    return {"sent": True}


@hookimpl
def register_actions(register):
    register("test.notify", notify, NotifyParams, external=True, description="Send a note.")


def installed() -> dict[str, Any]:
    """This plugin for an engine's ``plugins=``, with nothing sent yet."""
    import tests.plugins.notify_plugin as plugin

    SENT.clear()
    return {"notify": plugin}
