"""`make demo`: the main job on the embedded default, start to finish, through the CLI.

1. a realistic history: a few thousand contacts' events over six months, with a few late and
   duplicated events (as CRMs send them) and five malformed lines planted on purpose;
2. `clm validate` the example rulesets in rulesets/ (lead scoring, lifecycle stages, churn risk);
3. `clm ingest --dispatch` into a fresh SQLite file under .demo/, with the rulesets running:
   each event is judged by the rules that listen to it on the contact as of that event, the
   internal actions that fire (stages, scores, tags, rewards, drips started) take effect at
   once, before the contact's next event, and what reaches outside (emails) or waits is
   dispatched after each batch; the batch size changes nothing of what is decided;
4. `clm dispatch` finds nothing left to do;
5. `clm report`, `clm contacts show` and `clm explain` for what the engine now knows, and why;
   the onboarding drip's subject-line experiment (with a holdout) and its honest report;
6. referrals: rewards granted, held for review (fraud rules) and clawed back, a review and a
   payout through `clm referral`;
7. a week-by-week backtest (`clm simulate`), the abandoned-cart reminder backtested (its
   ``unless`` judged when each reminder falls due), and warranties 18 months ahead on a virtual
   clock: reminders, extension / service-agreement / upgrade offers and their conversion;
8. SMS (clm-sms): service appointments confirmed and reminded the day before, backtested with
   cancellations, STOP replies and invalid numbers in the history.

Each later part of clm-engine (rules, time, email, referral, warranty) adds its step here, so
the demo always shows the whole product as it stands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clm_email.demo import summary as email_summary
from clm_referral.demo import add_to_history, demo_decisions
from clm_referral.demo import summary as referral_summary
from clm_sms.demo import add_to_file as add_appointments
from clm_sms.demo import summary as sms_summary
from clm_warranty.demo import add_to_file as add_warranty_events
from clm_warranty.demo import summary as warranty_summary

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DB = DEMO / "clm.db"
EVENTS = DEMO / "events.jsonl"
RULESETS = ROOT / "rulesets"
OUTBOX = DEMO / "outbox"  # the email plugin's file transport writes .eml files here
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


#: What the weekly backtest table shows, beside the total: rule ids, by column.
WEEKLY_COLUMNS = {
    "first orders": "lifecycle-stages/first-order",
    "advocates": ("lifecycle-stages/promoter", "lifecycle-stages/referrer"),
    "day-3 nudges": "engagement-timers/day-3-nudge",
    "lapsing (Mon 9:00)": "engagement-timers/monday-lapsing-check",
    "churn risk": "churn-risk/detractor",
    "tier ups": "loyalty-points/tier-upgrade-email",
}


def print_weeks(result: dict) -> None:
    """A compact week-by-week table of a simulation: fires in all, and a few telling rules."""
    rules = result["per_rule"]
    header = ["week", "all rules", *WEEKLY_COLUMNS]
    rows = []
    for week in result["weeks"]:
        cells = [week, sum(r["by_week"].get(week, 0) for r in rules.values())]
        for wanted in WEEKLY_COLUMNS.values():
            names = (wanted,) if isinstance(wanted, str) else wanted
            cells.append(sum(rules.get(n, {}).get("by_week", {}).get(week, 0) for n in names))
        rows.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for cells in [header, *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True)))
    totals = result["totals"]
    actions = ", ".join(f"{n:,} {k}" for k, n in sorted(totals["actions"].items()))
    print(
        f"{totals['fired']:,} decisions fired for {totals['contacts']:,} contacts; actions: "
        f"{actions}; {result['days']:.0f} simulated days in {result['duration_seconds']:.1f} s, "
        "nothing sent"
    )


def moments_summary(per_rule: dict) -> str:
    """One line per recurring-moment and survey rule: how often it fired in the backtest."""
    lines = {
        "moments/birthday-offer": "birthday offers at 09:00 local time",
        "moments/customer-anniversary": "customer-since anniversaries thanked",
        "surveys/csat-after-ticket": "CSAT surveys asked after a closed ticket",
        "surveys/nps-after-first-purchase": "NPS surveys asked 30 days after a first order",
        "surveys/send-survey-email": "survey links sent by email",
        "surveys/detractor-follow-up": "NPS detractors followed up (tag, CSM task, email)",
    }
    return "\n".join(
        f"{per_rule.get(rule, {}).get('fired', 0):>6,}  {text}" for rule, text in lines.items()
    )


def contact_with_birthday(events: Path) -> str | None:
    """A contact of the sample history with a birthday, to show `clm explain`'s next one."""
    with events.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                found = json.loads(line)
            except ValueError:
                continue  # the bad lines, on purpose
            if found.get("type") == "contact.updated" and "birthday" in found["properties"]:
                return str(found["contact_id"])
    return None


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    db = ["--db", str(DB)]
    rulesets = ["--rulesets", str(RULESETS)]
    # The email plugin: .eml files into .demo/outbox, and the example's marketing policy
    # (2 marketing emails per 7 days, quiet hours 21:00-08:00 in each contact's timezone).
    os.environ["CLM_EMAIL_OUTBOX"] = str(OUTBOX)
    os.environ["CLM_EMAIL_SETTINGS"] = str(ROOT / "plugins/email/examples/email-settings.json")

    step("A realistic history: 3,000 contacts over six months (plus 5 bad lines, on purpose)")
    sample = ["--contacts", "3000", "--months", "6", "--seed", "7", "--bad-lines", "5"]
    clm("sample-events", *sample, "-o", str(EVENTS))
    added = add_to_history(EVENTS, seed=7)  # onboarding, refunds and farming attempts
    print(f"(+ {added} referral events: onboarding, refunds and farming attempts)")

    step("Validate the example rulesets (what an ops team edits)")
    clm("validate", str(RULESETS))

    step("Ingest it with the rulesets running, dispatching as it goes (exit 1: the bad lines)")
    started = time.perf_counter()
    clm("ingest", str(EVENTS), *db, *rulesets, "--dispatch", ok_codes=(0, 1))
    print(f"({time.perf_counter() - started:.1f} s including start-up)")

    step("Ingest it again: every event is a duplicate; nothing changes, nothing fires twice")
    clm("ingest", str(EVENTS), *db, *rulesets, ok_codes=(0, 1))

    step("Dispatch what is still due (nothing: it ran as the events came)")
    clm("dispatch", *db, *rulesets)

    step("Analytics: predictive CLV and RFM segments, then the report as a page of charts")
    clm("analytics", "refresh", *db, *rulesets)
    report_page = DEMO / "report.html"
    clm("report", *db, *rulesets, "--examples", "4", "--html", str(report_page))
    print(f"the report as a page: {report_page} (open it in a browser; it works offline)")

    step("Referrals: rewards granted, held for review and reversed; a review and a payout")
    picks = demo_decisions(DB)
    note = ["--by", "ops", "--note"]
    clm("referral", "review", "--reject", picks["reject"], *note, "own mailbox", *db, *rulesets)
    clm("referral", "review", "--approve", picks["approve"], *note, "checked", *db, *rulesets)
    clm("referral", "redeem", picks["redeem"], "--reference", "DEMO-PAYOUT-1", *db)
    print(referral_summary(DB))

    step("Loyalty: points on every purchase, tiers and milestones (clm loyalty)")
    points = json.loads(clm("loyalty", "report", *db, *rulesets, "--json", capture=True))
    clm("loyalty", "report", *db, *rulesets)
    clm("loyalty", "balance", points["programmes"][0]["top_balances"][0]["contact"], *db, *rulesets)

    step("Email: drips sent through the file transport, deferrals and vetoes by reason")
    print(email_summary(str(DB), str(OUTBOX)))

    step("Experiment: the onboarding drip's subject-line test, with a 10% holdout")
    clm("experiments", "report", "onboarding-subject", *db, *rulesets)

    listing = ["contacts", "list", *db, "--sort", "spent", "--limit", "1", "--json"]
    found = json.loads(clm(*listing, "--stage", "advocacy", capture=True))["contacts"]
    contact = (found or json.loads(clm(*listing, capture=True))["contacts"])[0]["id"]
    step(f"One contact up close: {contact}")
    clm("contacts", "show", contact, *db, "--events", "8")

    step(f"Why is {contact} where it is? (clm explain, the lifecycle rules)")
    clm("explain", contact, *db, *rulesets, "--ruleset", "lifecycle-stages", "--limit", "1")

    step("Backtest: the same history on a virtual clock (clm simulate): what fired by week")
    window = ["--from", "2026-05-01", "--to", "2026-11-01"]
    raw = clm(
        "simulate",
        *rulesets,
        "--events",
        str(EVENTS),
        *window,
        "--json",
        capture=True,
        ok_codes=(0, 1),
    )
    backtest = json.loads(raw)
    print_weeks(backtest)
    for found in backtest.get("experiments", []):  # what each arm would have received
        arms = "; ".join(
            f"{a['arm']}: {a['exposed']:,} exposed, {a['actions_queued']:,} actions"
            for a in found["arms"]
        )
        print(f"experiment {found['experiment']} in the backtest: {arms}")

    step("Abandoned carts: the reminder's 'unless' is re-checked when it falls due (backtest)")
    carts = ["--rulesets", str(RULESETS / "abandoned-cart.json")]
    carts += ["--rulesets", str(RULESETS / "templates" / "cart-reminder.json")]
    raw = clm(
        "simulate",
        *carts,
        "--events",
        str(EVENTS),
        *window,
        "--json",
        capture=True,
        ok_codes=(0, 1),
    )
    reminder = json.loads(raw)["per_rule"].get("abandoned-cart/cart-reminder", {})
    outcomes = reminder.get("actions", {})
    sent = outcomes.get("simulated", 0) + outcomes.get("done", 0)
    print(
        f"{reminder.get('fired', 0):,} cart changes queued a reminder for 4 hours later; "
        f"{sent:,} reminders would go, {outcomes.get('skipped', 0):,} were skipped when due "
        f"(a purchase or a newer cart change came in the 4 hours), "
        f"{outcomes.get('vetoed', 0):,} vetoed (no email consent)"
    )

    step("Birthdays, anniversaries and surveys: recurring moments and NPS/CSAT (backtest)")
    moments = ["--rulesets", str(RULESETS / "moments.json")]
    moments += ["--rulesets", str(RULESETS / "surveys.json")]
    moments += ["--rulesets", str(RULESETS / "templates")]
    raw = clm(
        "simulate",
        *moments,
        "--events",
        str(EVENTS),
        *window,
        "--json",
        capture=True,
        ok_codes=(0, 1),
    )
    print(moments_summary(json.loads(raw)["per_rule"]))
    birthday = contact_with_birthday(EVENTS)
    if birthday:
        clm("explain", birthday, *db, *rulesets, "--rule", "birthday-offer", "--limit", "1")

    step("SMS: service appointments confirmed and reminded the day before (backtest, clm-sms)")
    texts = DEMO / "events-sms.jsonl"
    print(
        f"(+ {add_appointments(EVENTS, texts, seed=7)} appointment, cancellation and STOP events)"
    )
    appointments = ["--rulesets", str(RULESETS / "service-appointments.json")]
    raw = clm(
        "simulate",
        *appointments,
        "--events",
        str(texts),
        *window,
        "--json",
        capture=True,
        ok_codes=(0, 1),
    )
    print(sms_summary(json.loads(raw)))

    step("Warranties: 18 months on a virtual clock: reminders, offers, and what customers bought")
    # Warranty ends lie one to three years after purchase, so this runs ahead of the history:
    # extensions, service agreements and returns are added in the customers' future.
    future = DEMO / "events-warranty.jsonl"
    added = add_warranty_events(EVENTS, future, seed=7)
    print(f"(+ {added} warranty events: extensions, service agreements, returns, upgrades)")
    warranty = ["--rulesets", str(RULESETS / "warranty-offers.json")]
    warranty += ["--rulesets", str(RULESETS / "warranty-catalogue.json")]
    window = ["--from", "2026-05-01", "--to", "2027-11-01", "--step", "1d"]
    kept = ["--keep", str(DEMO / "warranty"), "--json"]
    simulate = ["simulate", *warranty, "--events", str(future), *window, *kept]
    clm(*simulate, capture=True, ok_codes=(0, 1))
    print(warranty_summary(str(DEMO / "warranty" / "simulation.db")))

    print(
        f"\nThe database is {DB.relative_to(ROOT)}; try `.venv/bin/clm explain {contact} "
        f"--db {DB.relative_to(ROOT)} --rulesets rulesets --rule first-order`."
    )


if __name__ == "__main__":
    main()
