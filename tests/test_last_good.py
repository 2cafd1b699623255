"""A restart with an invalid rulesets folder runs on the last good set, and says so loudly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clm_engine import Engine, RulesetError
from tests.helpers import event

RULES = {
    "ruleset": "welcome",
    "version": 1,
    "rules": [
        {
            "id": "tag-new",
            "when": {"event": "signup"},
            "then": [{"action": "tag.add", "with": {"tag": "new"}}],
        }
    ],
}


def folder_with(tmp_path: Path, rules: dict, *, template: bool = True) -> Path:
    folder = tmp_path / "rules"
    (folder / "nested").mkdir(parents=True, exist_ok=True)
    (folder / "welcome.json").write_text(json.dumps(rules))
    if template:  # a file in a subfolder comes back in its place
        (folder / "nested" / "more.json").write_text(
            json.dumps({**rules, "ruleset": "more", "rules": []})
        )
    return folder


def test_the_engine_falls_back_to_the_last_set_it_loaded_whole(tmp_path):
    folder = folder_with(tmp_path, RULES)
    with Engine(tmp_path / "clm.db", rulesets=[folder]):
        pass
    (folder / "welcome.json").write_text('{"ruleset": "welcome", "version": 2, "rules": [')
    with Engine(tmp_path / "clm.db") as engine:
        with pytest.raises(RulesetError):
            engine.load_rulesets([folder])
        last = engine.load_last_good([folder])
        assert last["summary"] == [["more", 1], ["welcome", 1]]
        assert {(r.ruleset.ruleset) for r in engine.rulebook.rulesets} == {"welcome", "more"}
        assert engine.ruleset_paths == [os.fspath(folder)]  # still the folder watched
        engine.ingest(event("c1", "signup", "2026-11-01"))
        assert engine.contact("c1").tags == ["new"]  # the rules run
        ok, message = engine.reload_rulesets()  # still broken: keeps the last good
        assert not ok and "kept the last valid rulesets" in message
        folder_with(tmp_path, {**RULES, "version": 2})  # fixed
        ok, _ = engine.reload_rulesets()
        assert ok and {r.ruleset.version for r in engine.rulebook.rulesets} == {2}


def test_no_good_set_yet_is_a_clear_error(tmp_path):
    with Engine(tmp_path / "clm.db") as engine, pytest.raises(RulesetError, match="ever loaded"):
        engine.load_last_good([tmp_path])


def clm(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clm_engine", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CLM_LOAD_PLUGINS": ""},
        timeout=120,
        **kwargs,
    )


@pytest.mark.slow
def test_clm_run_restarted_on_a_broken_folder_keeps_running_and_says_so(tmp_path):
    db = str(tmp_path / "clm.db")
    folder = folder_with(tmp_path, RULES)
    assert clm("validate", str(folder)).returncode == 0
    assert clm("migrate", "--db", db).returncode == 0
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps(event("c1", "signup", "2026-11-01")) + "\n")
    assert clm("ingest", str(events), "--db", db, "--rulesets", str(folder)).returncode == 0
    (folder / "welcome.json").write_text('{"ruleset": "welcome", "version": 2, "rules": [')
    run = subprocess.Popen(
        [sys.executable, "-m", "clm_engine", "run", "--db", db, "--rulesets", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CLM_LOAD_PLUGINS": ""},
    )
    try:
        deadline = time.monotonic() + 60
        said = {}
        while time.monotonic() < deadline and "rulesets" not in said:
            assert run.poll() is None, run.stderr.read()  # it must not exit
            time.sleep(0.2)
            out = clm("status", "--db", db, "--json").stdout
            said = json.loads(out) if out.strip() else {}
        value = said["rulesets"]["value"]
        assert value["valid"] is False and "welcome.json" in value["problems"]
        assert sorted(value["running"]) == [["more", 1], ["welcome", 1]]
        text = clm("status", "--db", db).stdout
        assert "INVALID" in text and "welcome v1" in text
        history = clm("rulesets", "history", "--db", db).stdout
        assert "welcome v1" in history
        [loaded] = json.loads(clm("rulesets", "history", "--db", db, "--json").stdout)
        assert loaded["summary"] == [["more", 1], ["welcome", 1]]
        assert sorted(Path(f).name for f in loaded["files"]) == ["more.json", "welcome.json"]
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
    assert "THE RULESETS ARE INVALID" in run.stderr.read()
