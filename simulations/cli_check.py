"""`safenet chaos check`: run the checkers on a history file alone.

    safenet chaos check --model register HISTORY.jsonl
    safenet chaos check --model eventstore HISTORY.jsonl --json

The file is JSON lines in the format docs/simulations.md describes ("History files"). Exit
0 only when the history is valid; 1 when it is not (or the check could not finish); 2 for a
file that cannot be read, with a one-line error.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .checker import DEFAULT_MAX_STEPS, Report, check_all
from .history import History

MODELS = ("register", "md_entry", "eventstore")


@click.command("check")
@click.argument("history_file", metavar="HISTORY.jsonl", type=click.Path(dir_okay=False))
@click.option("--model", type=click.Choice(MODELS), required=True,
              help="register: read/write/cas registers; md_entry: versioned MD entries; eventstore: streams and log.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as one JSON object.")
@click.option("--max-steps", type=int, default=DEFAULT_MAX_STEPS, show_default=True,
              help="Linearizability search budget per key (register models).")
def check_command(history_file: str, model: str, as_json: bool, max_steps: int) -> None:
    """Check HISTORY.jsonl against MODEL; print the verdict and every anomaly."""
    try:
        history = History.from_jsonl(history_file)
        report = _check(history, model, max_steps)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        click.echo(f"safenet: error: {history_file}: {_one_line(exc)}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(_as_json(report, model, len(history)), sort_keys=True))
    else:
        click.echo(f"{len(history)} ops, model {model}")
        click.echo(report.summary())
    sys.exit(0 if report.valid else 1)


def _check(history: History, model: str, max_steps: int) -> Report:
    if model == "eventstore":
        from .es_checker import check_eventstore

        return check_eventstore(history)
    return check_all(history, model=model, max_steps=max_steps)


def _as_json(report: Report, model: str, ops: int) -> dict[str, Any]:
    return {
        "model": model, "ops": ops, "status": report.status, "valid": report.valid,
        "checks": {name: {"status": c.status, "stats": c.stats, "reason": c.reason,
                          "anomalies": [{"kind": a.kind, "key": str(a.key), "message": a.message,
                                         "ops": [o.index for o in a.ops]} for a in c.anomalies]}
                   for name, c in report.checks.items()},
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text.splitlines()[0]
