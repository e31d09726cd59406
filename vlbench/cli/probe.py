"""``vlbench probe``: linear probes of frozen region and pooled states (:mod:`vlbench.results.probe`)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vlbench.errors import VLBenchError
from vlbench.results.probe import (
    DEFAULT_FOLDS,
    DEFAULT_IMAGES,
    DEFAULT_TOP_CATEGORIES,
    ProbeReport,
    run_probe,
    write_report,
)

ERROR_EXIT = 2  # what `vlbench` exits with on a user error


def probe(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Run directories or checkpoints (any format `vlbench.load_model` reads).")] = None,
    random: Annotated[list[str] | None, typer.Option(
        "--random", help="Also probe a freshly initialised MODEL (registered name), sized like "
        "the first run: the no-pre-training row (repeatable).")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="Data directory (feature TSVs, GQA scene graphs if any); default: the "
        "first run's data, else the embedded synthetic benchmark.")] = None,
    images: Annotated[int, typer.Option("--images", help="Images to probe.")] = DEFAULT_IMAGES,
    folds: Annotated[int, typer.Option("--folds", help="Cross-validation folds over images.")
                     ] = DEFAULT_FOLDS,
    top_categories: Annotated[int, typer.Option(
        "--top-categories", help="Image properties: presence of this many most frequent "
        "categories.")] = DEFAULT_TOP_CATEGORIES,
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="Column names: one per run, then one per --random, in order.")] = None,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed of the folds, the image sample and the random initialisation.")] = 0,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write STEM.md, STEM.csv, STEM.json and STEM.png.")] = None,
) -> None:
    """Linear probes (logistic regression, k-fold over images) on the frozen states of runs."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        report = run_probe(paths or [], random_models=random or [], data_dir=data, images=images,
                           folds=folds, seed=seed, labels=label or [],
                           top_categories=top_categories,
                           say=lambda msg: err.print(escape(msg)))
        report.command = command_line(paths or [], random or [], data, images, folds,
                                      top_categories, label or [], seed, out)
        written = write_report(report, out, say=lambda m: err.print(f"note: {escape(m)}")
                               ) if out else []
    except VLBenchError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(ERROR_EXIT) from None
    show(report)
    for path in written:
        err.print(f"wrote {escape(str(path))}")


def show(report: ProbeReport) -> None:
    """The table on the terminal (rows: properties; columns: majority, then each backbone)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)  # piped: room for the columns
    level = int(round(100 * report.confidence))
    table = Table(title=f"Probe accuracy (%), mean [{level}% t interval] over {report.folds} folds "
                        f"of {report.data['images']} images")
    for name in ("Property", "Level", "Classes", "Majority", *report.labels):
        table.add_column(escape(name), justify="left" if name in ("Property", "Level") else "right")
    for p in report.properties:
        cells = [p.majority, *(p.scores.get(lab) for lab in report.labels)]
        table.add_row(escape(p.title), p.level, str(p.classes),
                      *(_cell(c.interval.mean, c.interval.ci_low, c.interval.ci_high)
                        if c else "-" for c in cells))
    console.print(table)
    for note in report.notes:
        Console(stderr=True, highlight=False).print(f"note: {escape(note)}")


def _cell(mean: float, low: float | None, high: float | None) -> str:
    return f"{mean:.1f}" if low is None or high is None else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def command_line(paths: list[Path], random: list[str], data: str | None, images: int, folds: int,
                 top_categories: int, labels: list[str], seed: int, out: Path | None) -> str:
    """The command that regenerates the report (written above its table)."""
    args = ["vlbench", "probe", *(str(p) for p in paths)]
    args += [a for m in random for a in ("--random", m)]
    args += ["--data", data] if data else []
    args += ["--images", str(images)] if images != DEFAULT_IMAGES else []
    args += ["--folds", str(folds)] if folds != DEFAULT_FOLDS else []
    args += ["--top-categories", str(top_categories)] if top_categories != DEFAULT_TOP_CATEGORIES else []
    args += [a for lab in labels for a in ("--label", lab)]
    args += ["--seed", str(seed)] if seed else []
    args += ["--out", str(out)] if out else []
    return shlex.join(args)
