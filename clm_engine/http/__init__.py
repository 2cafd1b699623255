"""``clm serve``: the HTTP service over the engine (``docs/http.md``).

``create_app(db, rulesets, registry=None, ...)`` builds the ASGI application, for uvicorn or
for mounting in a host's own ASGI server. Importing this package needs the ``fastapi`` and
``prometheus-client`` dependencies; the rest of clm-engine never imports it.
"""

from typing import Any

from .app import create_app, create_app_from_env


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the app (``clm serve --openapi``; ``docs/openapi.json``)."""
    from ..registry import Registry

    # Building the app opens nothing (its engines open when it starts), and the document does
    # not depend on the plugins: a registry of the built-ins alone is enough.
    document: dict[str, Any] = create_app("unused.db", registry=Registry(installed=False)).openapi()
    return document


__all__ = ["create_app", "create_app_from_env", "openapi_document"]
