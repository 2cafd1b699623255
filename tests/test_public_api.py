"""The public API is what plugins use, and all they use.

The three plugins under ``plugins/`` are written as third parties would write theirs: if one
of them needs something the core does not export, the export (and its documentation) is
missing, not the plugin's shortcut.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The documented modules, with what each makes public (its ``__all__``).
PUBLIC_MODULES = (
    "clm_engine",
    "clm_engine.cli",
    "clm_engine.testing",
    "clm_engine.money",
    "clm_engine.consent",
    "clm_engine.channels",
)
PLUGIN_MODULES = sorted(ROOT.glob("plugins/*/clm_*/**/*.py"))


def public_names(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    if exported is None:  # a module of functions: its names without a leading underscore
        return {name for name in vars(module) if not name.startswith("_")}
    return set(exported)


def imports_of_the_core(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every name a file takes from ``clm_engine``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clm_engine"):
            found += [(node.lineno, node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, alias.name, "")
                for alias in node.names
                if alias.name.startswith("clm_engine")
            ]
    return found


def test_the_plugins_are_found():
    assert {p.parent.name for p in PLUGIN_MODULES} >= {"clm_email", "clm_referral", "clm_warranty"}


@pytest.mark.parametrize("path", PLUGIN_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_public_names(path):
    wrong = []
    for line, module, name in imports_of_the_core(path):
        if module not in PUBLIC_MODULES:
            wrong.append(f"line {line}: {module} is not a public module (use clm_engine)")
        elif name and name not in public_names(module):
            wrong.append(f"line {line}: {module}.{name} is not public")
    assert not wrong, "\n".join(wrong)


def test_every_public_name_is_documented():
    documented = (ROOT / "docs" / "plugin-hooks.md").read_text()
    missing = [
        name
        for name in public_names("clm_engine")
        if not name.startswith("__") and f"`{name}" not in documented
    ]
    assert not missing, f"not in docs/plugin-hooks.md: {missing}"
