"""docs/plugin-testing.md's walk-through, from an empty folder to passing tests, really passes.

The walk-through's section lists the files of the plugin's folder, and shows each in a code
block whose first line is a comment naming its path. This test writes those blocks into an
empty folder and runs pytest there in a fresh process, with this environment's Python (where
clm-engine is installed), as a plugin author would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "plugin-testing.md"
SECTION = "## From an empty folder to a passing test"
NUMBERS = {"One": 1, "Two": 2, "Three": 3, "Four": 4, "Five": 5, "Six": 6, "Seven": 7}


def walkthrough() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOC.name} lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1]
    return section.split("\n## ", 1)[0]


def code_blocks(section: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


def files_of(section: str) -> dict[str, str]:
    """The blocks that are files: the first line is ``# <relative path>``."""
    files = {}
    for block in code_blocks(section):
        first = block.splitlines()[0]
        found = re.fullmatch(r"# ([\w./-]+\.(?:py|toml))", first)
        if found:
            assert found[1] not in files, f"two blocks claim to be {found[1]}"
            files[found[1]] = block
    return files


def listed(section: str) -> list[str]:
    """The folder's listing: the block that starts with the folder's name."""
    [tree] = [b for b in code_blocks(section) if b.splitlines()[0].endswith("/")]
    return [line.strip() for line in tree.splitlines()[1:] if line.strip()]


def test_the_walkthrough_shows_every_file_it_lists():
    section = walkthrough()
    assert sorted(files_of(section)) == sorted(listed(section))


@pytest.mark.slow
def test_the_walkthrough_passes_in_an_empty_folder(tmp_path):
    section = walkthrough()
    folder = tmp_path / "my-plugin"
    for path, content in files_of(section).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content, encoding="utf-8")
    tests = sum(
        len(re.findall(r"^def test_", content, flags=re.MULTILINE))
        for path, content in files_of(section).items()
        if Path(path).name.startswith("test_")
    )
    promised = re.search(r"\b(\w+) tests pass\.", section)
    assert promised and NUMBERS.get(promised[1]) == tests, (
        f"the walk-through promises {promised[0] if promised else 'nothing'}; it has {tests}"
    )

    # As the author's shell would be: none of this test run's settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CLM_LOAD_PLUGINS", "PYTEST_ADDOPTS", "PYTHONPATH"}
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"{tests} passed" in output, output
