"""``vlbench score``: score a prediction file in the official submission format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vlbench.errors import VLBenchError


def _scorable() -> dict[str, Any]:
    """Registered tasks that score submission files: name -> task class."""
    from vlbench.registry import TASKS

    return {e.name: e.obj for e in TASKS if e.obj.score_inputs}


def _fail(message: str, code: int) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _render(task: str, metrics: dict[str, Any]) -> None:
    table = Table(title=f"{task} (official scoring)", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if not isinstance(value, dict):
            suffix = " (lower is better)" if name == "distribution" else ""
            table.add_row(name + suffix, _fmt(value))
    for name, value in metrics.items():
        if isinstance(value, dict):
            table.add_section()
            for key, sub in value.items():
                table.add_row(f"{name} / {key}", _fmt(sub))
    Console().print(table)


def score(
    task: Annotated[str, typer.Option(
        "--task", help="Task whose official metric to use (vqa, gqa, nlvr2, ...).")],
    predictions: Annotated[Path, typer.Option(
        "--predictions",
        help="Predictions in the official submission format (VQA/GQA JSON, NLVR2 CSV).")],
    annotations: Annotated[Path | None, typer.Option(
        "--annotations", help="VQA annotations JSON or NLVR2 labels JSONL.")] = None,
    questions: Annotated[Path | None, typer.Option(
        "--questions",
        help="GQA questions JSON (required for gqa); VQA questions JSON (optional).")] = None,
    choices: Annotated[Path | None, typer.Option(
        "--choices", help="GQA choices JSON, for validity and plausibility.")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object instead of a table "
        "(VQA per-question scores are left out of both).")] = False,
) -> None:
    """Score a prediction file with the task's official evaluation algorithm."""
    task = task.lower()
    tasks = _scorable()
    if task not in tasks:
        _fail(f"unknown --task {task!r}; choose one of {', '.join(tasks)}", 2)
    accepted = tasks[task].score_inputs
    inputs = {"annotations": annotations, "questions": questions, "choices": choices}
    for name, (required, what) in accepted.items():
        if required and inputs.get(name) is None:
            _fail(f"--task {task} needs --{name} ({what})", 2)
    for name, value in inputs.items():
        if value is not None and name not in accepted:
            _fail(f"--{name} is not used by --task {task}; "
                  f"it takes {', '.join('--' + n for n in accepted)}", 2)
    try:
        metrics = tasks[task].score_files(predictions, **{n: inputs.get(n) for n in accepted})
    except VLBenchError as e:
        _fail(str(e), 1)
    if json_out:
        typer.echo(json.dumps(metrics))
    else:
        _render(task, metrics)
