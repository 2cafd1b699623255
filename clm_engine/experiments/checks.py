"""What validation checks in a rule's ``experiment`` beyond its shape: arm names, weights, the
control, the method's needs, and each arm's ``with`` against each action's parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..models import Experiment, Rule
from ..rulesets.problems import Issue, did_you_mean

ParamsCheck = Callable[[Any, str, dict[str, Any], str], list[Issue]]


def check_experiment(
    rule: Rule, base: str, actions: Mapping[str, Any], action_params: ParamsCheck
) -> list[Issue]:
    """Issues of ``rule.experiment`` (none without one); ``base`` is the rule's pointer."""
    spec = rule.experiment
    if spec is None:
        return []
    at = f"{base}/experiment"
    issues: list[Issue] = []
    seen: set[str] = set()
    for index, arm in enumerate(spec.arms):
        if arm.name in seen:
            issues.append(Issue(f"{at}/arms/{index}/name", f"arm {arm.name!r} is named twice"))
        seen.add(arm.name)
        if arm.holdout and arm.with_:
            issues.append(
                Issue(
                    f"{at}/arms/{index}/with",
                    "a holdout arm gets no action, so its 'with' would never be used",
                    hint="remove 'with', or make the arm not a holdout",
                    at_key=True,
                )
            )
        elif arm.with_:
            for position, call in enumerate(rule.then):
                spec_of = actions.get(call.action)
                if spec_of is None:
                    continue  # reported at the action itself
                merged = {**call.with_, **arm.with_}
                for issue in action_params(spec_of, call.action, merged, f"{at}/arms/{index}/with"):
                    issues.append(
                        Issue(
                            issue.pointer,
                            f"{issue.message}, with this arm's parameters merged over "
                            f"{base}/then/{position}/with",
                            issue.hint,
                            issue.at_key,
                        )
                    )
    return issues + check_experiment_arms(spec, at)


def check_experiment_arms(spec: Experiment, at: str) -> list[Issue]:
    """What any experiment must satisfy, wherever it is declared (``at``: its pointer): one
    holdout at most, an arm that acts, weights above 0, a control that acts, the method's
    needs. Arm names used twice are reported by the caller, with the arms' own checks."""
    issues: list[Issue] = []
    seen = {arm.name for arm in spec.arms}
    holdouts = [arm for arm in spec.arms if arm.holdout]
    if len(holdouts) > 1:
        issues.append(Issue(f"{at}/arms", "at most one arm may be a holdout"))
    if len(holdouts) == len(spec.arms):
        issues.append(Issue(f"{at}/arms", "every arm is a holdout: at least one must act"))
    if sum(arm.weight for arm in spec.arms) <= 0:
        issues.append(Issue(f"{at}/arms", "the weights add up to 0: no arm gets any contact"))
    if spec.control is not None:
        named = next((arm for arm in spec.arms if arm.name == spec.control), None)
        if named is None:
            issues.append(
                Issue(
                    f"{at}/control",
                    f"no arm {spec.control!r}{did_you_mean(spec.control, sorted(seen))}",
                )
            )
        elif named.holdout:
            issues.append(
                Issue(
                    f"{at}/control",
                    f"the control {spec.control!r} is the holdout",
                    hint="the control is an arm that acts; the holdout is compared separately",
                )
            )
    if spec.method == "fixed" and spec.sample_size is None:
        issues.append(
            Issue(
                f"{at}/method",
                'method "fixed" needs "sample_size": its intervals hold only at a sample size '
                "planned in advance",
                hint='give "sample_size" (exposed contacts per arm), or use "sequential"',
            )
        )
    return issues
