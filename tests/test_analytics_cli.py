"""``clm analytics refresh``, ``clm analytics validate`` and the analytics of ``clm report``."""

from __future__ import annotations

import json

from clm_engine.analytics import DefinitionsError, load_definitions
from clm_engine.analytics.definitions import DEFAULT_PATH

from .helpers import store_in
from .test_analytics_clv import cdnow_events


def test_the_default_definitions_name_every_segment_and_cover_the_grid():
    definitions = load_definitions()
    assert set(definitions.names()) == {
        "new",
        "recent",
        "promising",
        "potential loyalist",
        "loyal",
        "champion",
        "at risk",
        "hibernating",
        "lost",
        "other",
    }
    for r in range(1, 6):
        for f in range(1, 6):
            assert any(
                s.recency[0] <= r <= s.recency[1] and s.frequency[0] <= f <= s.frequency[1]
                for s in definitions.segments
            ), (r, f)
    assert json.loads(DEFAULT_PATH.read_text())["window"] == "P365D"


def test_validate_shows_file_line_and_pointer(run, tmp_path):
    bad = tmp_path / "rfm.json"
    bad.write_text(
        '{\n  "window": "P1Q",\n  "segments": [\n'
        '    {"name": "x", "recency": [5, 2], "frequncy": [1, 1]}\n  ]\n}\n'
    )
    done = run("analytics", "validate", str(bad))
    assert done.exit_code == 1
    assert f"{bad}:2:13: /window:" in done.output
    assert f"{bad}:4:30: /segments/0/recency: a range is [lowest, highest]" in done.output
    assert "/segments/0/frequncy: unknown key 'frequncy'" in done.output
    try:
        load_definitions(bad)
    except DefinitionsError as error:
        assert [p.pointer for p in error.problems] == [
            "/window",
            "/segments/0/recency",
            "/segments/0/frequncy",
        ]
    good = run("analytics", "validate", str(DEFAULT_PATH))
    assert good.exit_code == 0 and "9 segment rule(s)" in good.output


def test_refresh_and_report_from_the_command_line(run, tmp_path, on_store):
    """The same commands on either store (``--db`` a file or a postgresql:// URL)."""
    db = str(store_in(tmp_path))
    events = tmp_path / "cdnow.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in cdnow_events()[:3000]) + "\n")
    assert run("ingest", "--db", db, str(events)).exit_code == 0
    done = run("analytics", "refresh", "--db", db, "--as-of", "1997-10-01", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["calibration_end"] == "1997-09-30"
    assert result["bgnbd"] and result["gamma_gamma"] and result["segment_changes"] > 0
    report = json.loads(run("report", "--db", db, "--json").output)
    analytics = report["analytics"]
    assert analytics["predictive"]["customers"] == result["customers"]
    assert sum(analytics["rfm"]["segments"].values()) == result["customers"]
    assert analytics["purchases"]["orders"] == 3000
    page = tmp_path / "report.html"
    people = run("report", "--db", db, "--html", str(page))
    assert "stage funnel" in people.output and "RFM segments" in people.output
    assert 'id="rfm"><svg' in page.read_text()


def test_scipy_and_altair_load_only_when_needed():
    """The facts are a built-in plugin: an engine and the CLI start without scipy and the
    charting libraries, which load for a fit, a prediction or an HTML report. (numpy does load:
    sqlite-utils imports it whenever it is installed, to store its types.)"""
    import subprocess
    import sys

    code = (
        "import sys, clm_engine.cli\n"
        "from clm_engine import Engine\n"
        "Engine(':memory:').close()\n"
        "print(sorted(m for m in ('scipy', 'altair', 'vl_convert') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
