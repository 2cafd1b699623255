"""`make demo`: the main job on the embedded default, start to finish, through the CLI.

1. a realistic history: a few thousand contacts' events over six months, with a few late and
   duplicated events (as CRMs send them) and five malformed lines planted on purpose;
2. `clm ingest` into a fresh SQLite file under .demo/;
3. `clm report` and `clm contacts show` for what the engine now knows.

Each later part of clm-engine (rules, time, email, referral, warranty) adds its step here, so
the demo always shows the whole product as it stands.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DB = DEMO / "clm.db"
EVENTS = DEMO / "events.jsonl"
CLM = str(Path(sys.executable).parent / "clm")


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def clm(*args: str, ok_codes: tuple[int, ...] = (0,), capture: bool = False) -> str:
    shown = " ".join(["clm", *args]).replace(str(ROOT) + "/", "")
    print(f"$ {shown}", flush=True)
    result = subprocess.run([CLM, *args], text=True, capture_output=capture, cwd=ROOT)
    if result.returncode not in ok_codes:
        if capture:
            sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"demo: `{shown}` failed with exit code {result.returncode}")
    return result.stdout if capture else ""


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()

    step("A realistic history: 3,000 contacts over six months (plus 5 bad lines, on purpose)")
    clm(
        "sample-events",
        "--contacts",
        "3000",
        "--months",
        "6",
        "--seed",
        "7",
        "--bad-lines",
        "5",
        "-o",
        str(EVENTS),
    )

    step("Ingest it (exit code 1 is expected: the planted bad lines are rejected)")
    started = time.perf_counter()
    clm("ingest", str(EVENTS), "--db", str(DB), ok_codes=(0, 1))
    print(f"({time.perf_counter() - started:.1f} s including start-up)")

    step("Ingest it again: every event is a duplicate, nothing changes")
    clm("ingest", str(EVENTS), "--db", str(DB), ok_codes=(0, 1))

    step("What the engine now knows")
    clm("report", "--db", str(DB), "--examples", "4")

    top = json.loads(
        clm(
            "contacts",
            "list",
            "--db",
            str(DB),
            "--sort",
            "spent",
            "--limit",
            "1",
            "--json",
            capture=True,
        )
    )["contacts"][0]["id"]
    step(f"One contact up close: {top}, the biggest spender")
    clm("contacts", "show", top, "--db", str(DB), "--events", "8")

    print(
        f"\nThe database is {DB.relative_to(ROOT)}; try `.venv/bin/clm contacts list "
        f"--db {DB.relative_to(ROOT)} --sort recent`."
    )


if __name__ == "__main__":
    main()
