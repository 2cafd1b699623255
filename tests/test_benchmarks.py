"""The benchmarks still run (tiny sizes): a benchmark that rotted is found here, not on the day
someone needs its figures. These check that they run and print, never how fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

#: What each prints when it ran to the end: its figures, and its own checks passing.
PRINTS = {
    "ingest.py": ["-> OK", "events/s", "database size:", "floor: validating", "the rulesets added"],
    "evaluate.py": [
        "clm-engine (prebuilt contexts)",
        "zen-engine",
        "decision with its trace vs compiled match alone",
    ],
    "simulate.py": ["simulated days/s", "fires:", "peak RSS by history length", "ratio 4x/1x"],
    "email_send.py": ["engine    file", "engine    smtp", "messages/s"],
    "idle_pump.py": ["idle pump", "ratio 1,000 / 100 contacts"],
    "tables.py": ["api insert", "table API overhead"],
    "serve.py": [
        "engine alone",
        "events/s",
        "p99",
        "postgresql workers=1",
        "every event stored -> OK",
    ],
    "report.py": ["plain SQL", "peak Python memory", "peak memory ratio 4x/1x"],
    "postgres_workers.py": [
        "ratio PostgreSQL/SQLite ingest",
        "ratio 2 workers/1",
        "time per 100k, ratio 4x/1x",
        "all counts checked -> OK",
    ],
}

SMALL = {
    "ingest.py": ["--events", "2000", "--repeat", "1"],
    "evaluate.py": ["--contacts", "200", "--rules", "5", "--repeat", "1"],
    "simulate.py": ["--contacts", "50", "--days", "3", "--step", "1d"],
    "email_send.py": ["--messages", "30"],
    "idle_pump.py": ["--contacts", "100", "--factor", "10", "--repeat", "5"],
    "tables.py": ["--rows", "300", "--repeat", "1"],
    "serve.py": ["--events", "200", "--clients", "4", "--workers", "1", "--postgres"],
    "report.py": ["--contacts", "200"],
    "postgres_workers.py": [
        *("--events", "1000", "--actions", "60", "--contacts", "600", "--factors", "1,2,4")
    ],
}


def test_every_benchmark_has_a_small_run():
    assert {p.name for p in BENCHMARKS.glob("*.py")} == set(SMALL) == set(PRINTS)


@pytest.mark.parametrize("script", sorted(SMALL))
def test_the_benchmark_runs_and_prints_its_figures(script, tmp_path):
    # The example rulesets (ingest, simulate) use the three plugins, as a user has them.
    env = {**os.environ, "CLM_LOAD_PLUGINS": "email,referral,warranty,sms,loyalty,webhook"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *SMALL[script]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for text in PRINTS[script]:
        assert text in done.stdout, done.stdout
