"""Write clm_engine/rulesets/ruleset.schema.json from the pydantic models.

    python scripts/generate_schema.py          # write the file
    python scripts/generate_schema.py --check  # exit 1 if the shipped file is out of date

Run it after changing the ruleset models in clm_engine/models.py; tests/test_rulesets.py fails
until the shipped file matches what the models generate.
"""

from __future__ import annotations

import sys

from clm_engine.rulesets.schema import SCHEMA_PATH, schema_text


def main(argv: list[str]) -> int:
    text = schema_text()
    current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else None
    if "--check" in argv:
        if current != text:
            print(f"{SCHEMA_PATH} is out of date: run python scripts/generate_schema.py")
            return 1
        print(f"{SCHEMA_PATH} is up to date")
        return 0
    if current == text:
        print(f"{SCHEMA_PATH} is up to date")
    else:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
