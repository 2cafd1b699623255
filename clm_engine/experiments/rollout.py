"""``clm simulate --rollout EXPERIMENT=ARM``: the rulesets twice, once with every contact in
the control and once with every contact in ARM, for ``clm simulate``'s comparison.

The copies differ from the originals only in that experiment's weights (the control, or ARM,
gets weight 1, every other arm 0), so the comparison shows exactly what rolling the arm out
changes against keeping the control: which rules fire, which actions go, for whom. A backtest
replays a fixed history, so it cannot show whether customers would have *converted*
differently; that is what the experiment itself measures.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ClmError


def parse_rollout(text: str) -> tuple[str, str]:
    name, sep, arm = text.partition("=")
    if not sep or not name or not arm:
        raise ClmError(
            f"--rollout {text!r}: write EXPERIMENT=ARM, like onboarding-subject=question"
        )
    return name, arm


def rollout_copies(
    paths: Sequence[str | Path], experiment: str, arm: str, into: Path
) -> tuple[Path, Path]:
    """Two copies of ``paths`` under ``into``: ``control/`` and ``<arm>/``."""
    sides = {"control": into / "control", arm: into / f"rollout-{arm}"}
    found: list[dict[str, Any]] = []
    for index, path in enumerate(map(Path, paths)):
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(path) if path.is_dir() else Path(file.name)
            target = Path(f"{index}-{path.name}") / relative if path.is_dir() else relative
            target = Path(f"{index}") / target
            for side, root in sides.items():
                (root / target).parent.mkdir(parents=True, exist_ok=True)
                document = _rewritten(file, experiment, side, arm, found)
                if document is None:
                    shutil.copyfile(file, root / target)
                else:
                    (root / target).write_text(json.dumps(document, indent=2), encoding="utf-8")
    if not found:
        raise ClmError(f"--rollout: no rule in these rulesets declares experiment {experiment!r}")
    spec = found[0]
    names = [a.get("name") for a in spec.get("arms", [])]
    if arm not in names:
        raise ClmError(f"--rollout: experiment {experiment!r} has no arm {arm!r}; arms: {names}")
    return sides["control"], sides[arm]


def _rewritten(
    file: Path, experiment: str, side: str, arm: str, found: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The ruleset of ``file`` with the experiment's weights set for ``side``, or None when
    the file is not a ruleset declaring it (copied as it is)."""
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # validation reports it, on the copy
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        return None
    changed = False
    for rule in document["rules"]:
        spec = rule.get("experiment") if isinstance(rule, dict) else None
        if not isinstance(spec, dict) or spec.get("name") != experiment:
            continue
        arms = [a for a in spec.get("arms", []) if isinstance(a, dict)]
        control = spec.get("control") or next(
            (a.get("name") for a in arms if not a.get("holdout")), None
        )
        wanted = control if side == "control" else arm
        for item in arms:
            item["weight"] = 1 if item.get("name") == wanted else 0
        if side == "control":
            found.append(spec)
        changed = True
    return document if changed else None
