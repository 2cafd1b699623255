"""``clm report --html`` opened in a real headless browser (Debian's chromium): no request
leaves the page, nothing is logged to the console, every chart is drawn; a screenshot is kept
(``tests/artifacts/report.png``, ignored by git)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clm_engine import Engine, VirtualClock
from clm_engine.analytics import refresh
from clm_engine.analytics.html import CHARTS
from clm_engine.registry import Registry
from clm_engine.synthetic import generate_events

from .plugins.notify_plugin import installed
from .test_analytics_goals import NUDGES
from .test_analytics_kpis import STAGES

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary, installed with apt (as root) the first time it is missing."""
    found = shutil.which("chromium")
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
        subprocess.run([*apt, "update"], check=True, capture_output=True)
        subprocess.run([*apt, "install", "-y", "chromium"], check=True, capture_output=True)
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is missing and could not be installed (apt-get, as root)")
    return found


def _browse(
    chromium: str, page: Path, profile: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _page_requests(net_log: Path) -> list[str]:
    """URLs the page asked for (besides its own file): requests with an initiator. The
    browser's own background requests (clock sync, account checks) have none ("not an
    origin") and are not the page's doing."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    jobs = [e.get("params", {}) for e in log["events"] if e["type"] == start]
    return [
        job["url"]
        for job in jobs
        if job.get("initiator") != "not an origin"
        and not job.get("url", "file:").startswith(("file:", "data:"))
    ]


def test_the_checks_see_a_request_and_a_console_error(chromium, tmp_path):
    """The checks below would notice: a page that fetches an image and logs an error."""
    page = tmp_path / "bad.html"
    page.write_text('<img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script>')
    net_log = tmp_path / "net.json"
    seen = _browse(
        chromium,
        page,
        tmp_path / "profile",
        "--dump-dom",
        "--enable-logging=stderr",
        "--v=0",
        f"--log-net-log={net_log}",
    )
    assert any("CONSOLE" in line and "boom" in line for line in seen.stderr.splitlines())
    assert _page_requests(net_log) == ["http://127.0.0.1:9/x.png"]


def test_html_report_in_a_browser(chromium, tmp_path, run):
    rules = tmp_path / "stages.json"
    rules.write_text(json.dumps(STAGES))
    nudges = tmp_path / "nudges.json"  # touchpoints with goals, for the journey map
    nudges.write_text(json.dumps(NUDGES))
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with Engine(
        tmp_path / "clm.db", clock=VirtualClock(now), rulesets=[rules, nudges], plugins=installed()
    ) as engine:
        engine.ingest_many(generate_events(400, months=6, seed=3))
        engine.ingest_many(
            [
                {
                    "contact_id": "marketing",
                    "type": "marketing.spend",
                    "occurred_at": "2026-05-01T00:00:00Z",
                    "properties": {"channel": "ads", "amount": 500},
                },
            ]
        )
        result = refresh(engine)
        assert result.problems == []
    page = tmp_path / "report.html"
    done = run(
        "report",
        "--db",
        str(tmp_path / "clm.db"),
        "--rulesets",
        str(rules),
        "--rulesets",
        str(nudges),
        "--html",
        str(page),
        registry=Registry(installed()),
    )
    assert done.exit_code == 0, done.output
    text = page.read_text()
    assert "<script" not in text and 'src="http' not in text
    assert "no data yet" not in text  # every chart had data to draw
    assert 'id="goals"' in text and "welcome-note" in text  # the goal attribution table

    # The DOM after load, the console, and every network event.
    net_log = tmp_path / "net.json"
    dom = _browse(
        chromium,
        page,
        tmp_path / "profile-1",
        "--dump-dom",
        "--enable-logging=stderr",
        "--v=0",
        f"--log-net-log={net_log}",
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert console == []
    assert _page_requests(net_log) == []
    for name in [*(name for name, _ in CHARTS), "journey"]:
        figure = re.search(rf'<figure class="chart" id="{name}">(.*?)</figure>', dom.stdout, re.S)
        assert figure is not None, name
        assert re.search(r"<svg[^>]*>", figure.group(1)), name
        assert re.search(
            r'<(path|rect)[^>]*class="[^"]*"', figure.group(1)
        ) or "<path" in figure.group(1)

    # A screenshot people can look at: the page is drawn (not blank).
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    taken = _browse(
        chromium, page, tmp_path / "profile-2", "--window-size=1200,3600", f"--screenshot={shot}"
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.stat().st_size > 20_000
