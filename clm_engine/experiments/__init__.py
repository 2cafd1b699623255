"""Experiments: A/B splits and holdouts on any rule, their conversion goals, and an honest
report of which arm (if any) won.

- ``assignment``: the stable hash that puts a contact in an arm;
- ``compiled``: an experiment ready to run (each arm's actions, validated);
- ``exposures``: the table of who was exposed to which arm, and when (first exposure);
- ``stats``: conversion rates, lifts, intervals and p-values (fixed-horizon and always-valid);
- ``report``: counts from the store, put through ``stats``, as text and JSON.

The method is written in ``docs/experiments.md``.
"""

from __future__ import annotations

#: The computed fact that reads a contact's arm, ``{"fact": "experiment.arm", "args":
#: {"experiment": "<name>"}}``; ``contact.experiments.<name>`` is the same fact.
ARM_FACT = "experiment.arm"
#: The document kind under which a rulebook keeps its compiled experiments (by name).
KIND = "experiment"
_ALIAS = "contact.experiments."


def alias_of(path: str) -> str | None:
    """The experiment named by ``contact.experiments.<name>``, or None for any other path."""
    if path.startswith(_ALIAS):
        name = path[len(_ALIAS) :]
        if name and "." not in name:
            return name
    return None
