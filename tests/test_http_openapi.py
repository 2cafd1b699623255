"""The OpenAPI document: the committed copy matches the app, and a schemathesis run over the
whole spec (with keys, so that it reaches past authentication) finds no 500 and no answer that
contradicts the spec."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from clm_engine.http import create_app, openapi_document
from clm_engine.registry import Registry
from tests.http_helpers import make_key

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_openapi_document_matches_the_app():
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == openapi_document(), (
        "docs/openapi.json is out of date: clm serve --openapi > docs/openapi.json"
    )


# One app for the whole fuzz run: its lifespan (engines, writer) is held open by a TestClient
# while schemathesis sends its cases through its own ASGI client.
_FOLDER = Path(tempfile.mkdtemp(prefix="clm-fuzz-"))
APP = create_app(_FOLDER / "clm.db", registry=Registry(installed=False), max_body_bytes=65536)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def keys():
    with TestClient(APP):
        admin = make_key(_FOLDER / "clm.db", "admin")
        yield {"Authorization": f"Bearer {admin}"}


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_fuzzing_the_spec_finds_no_500_and_no_answer_against_the_spec(case, keys):
    case.call_and_validate(headers=keys)
