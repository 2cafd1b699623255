"""``clm validate``: check ruleset files the way the engine will load them.

Output reads like a compiler's, one problem a line (``file:line:col: /pointer: message``,
a hint indented under it), so editors and CI logs can jump to the spot; then a summary.
Exit code 1 on any problem, so it can gate a deploy.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from ..rulesets import validate_all
from ..rulesets.problems import plural, summary
from . import cli
from .common import print_json, registry_of


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def validate(paths: tuple[Path, ...], as_json: bool) -> None:
    """Validate ruleset files (or every *.json under directories) against the schema, the
    models and the registered plugins; print every problem with its line and column.

    Warnings (valid, but probably not what was meant) are printed too; they do not fail."""
    result = validate_all(paths, registry=registry_of())
    loaded, problems, documents = result.rulesets, result.problems, result.documents
    files = len({r.path for r in loaded} | {d.path for d in documents} | {p.file for p in problems})
    if as_json:
        print_json(
            {
                "ok": not problems and files > 0,
                "problems": [p.to_dict() for p in problems],
                "warnings": [w.to_dict() for w in result.warnings],
                "rulesets": [
                    {
                        "path": r.path,
                        "ruleset": r.ruleset.ruleset,
                        "version": r.ruleset.version,
                        "rules": len(r.ruleset.rules),
                        "content_hash": r.content_hash,
                    }
                    for r in loaded
                ],
                "documents": [
                    {"path": d.path, "kind": d.kind, "name": d.name, "content_hash": d.content_hash}
                    for d in documents
                ],
            }
        )
    else:
        for problem in problems:
            click.echo(problem.render())
        for warning in result.warnings:  # valid, so the exit code stays 0 for them
            click.echo(warning.render().replace(": ", ": warning: ", 1))
        if problems:
            click.echo(summary(problems))
        elif files == 0:
            click.echo("no ruleset files (*.json) found in " + ", ".join(map(str, paths)))
        else:
            rules = sum(len(r.ruleset.rules) for r in loaded)
            kinds = Counter(d.kind for d in documents)
            extra = "".join(f", {plural(n, kind)}" for kind, n in sorted(kinds.items()))
            click.echo(f"ok: {plural(len(loaded), 'ruleset')}, {plural(rules, 'rule')}{extra}")
    if problems or files == 0:
        click.get_current_context().exit(1)
