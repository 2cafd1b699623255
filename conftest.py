"""Shared by the core's and the plugins' tests.

Tests must not pick up whatever plugins happen to be installed: external plugins load only
when a test registers them itself (see ``tests/plugins``) or runs a subprocess that asks.
"""

import os

import pytest

os.environ["CLM_LOAD_PLUGINS"] = ""


@pytest.fixture(autouse=True, scope="session")
def _email_outbox(tmp_path_factory):
    """Tests that dispatch the example drips write their .eml files here, never into the
    working directory (the email plugin's file transport defaults to ./outbox)."""
    os.environ["CLM_EMAIL_OUTBOX"] = str(tmp_path_factory.mktemp("outbox"))
