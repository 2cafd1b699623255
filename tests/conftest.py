from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clm_engine import Engine, VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 11, 2, 12, 0, tzinfo=UTC))


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "clm.db"


@pytest.fixture
def engine(db_path, clock):
    with Engine(db_path, clock=clock) as engine:
        yield engine
