"""``vlbench leaderboard``, ``vlbench compare`` and ``vlbench plot``: thin wrappers over
:mod:`vlbench.results` (parse, call one library function, render)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vlbench.errors import ConfigError, DataError, VLBenchError
from vlbench.results.compare import Comparison, compare_paths
from vlbench.results.leaderboard import Leaderboard, build_leaderboard
from vlbench.results.records import Problem, Run, find_runs, write_text_atomic
from vlbench.results.render import FORMATS, SUFFIXES, fmt, fmt_p, print_rich, render

DEFAULT_ROOT = Path("runs")
PLOT_KINDS = ("curves", "grid", "sweep", "compute")


def _stdout() -> Console:
    console = Console(highlight=False)
    # Piped output gets room for wide tables instead of rich's 80-column default.
    return console if console.is_terminal else Console(highlight=False, width=200)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


ERROR_EXIT = 2  # the code `vlbench` exits with on a user error, as main() does


def _fail(err: VLBenchError) -> NoReturn:
    _stderr().print(f"[red]error:[/red] {escape(str(err))}")
    raise typer.Exit(ERROR_EXIT)


def _report(problems: list[Problem], notes: list[str]) -> None:
    console = _stderr()
    for p in problems:
        console.print(f"[yellow]warning:[/yellow] skipped {escape(str(p))}")
    for n in notes:
        console.print(f"[dim]note: {escape(n)}[/dim]")


def _split_list(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated values alike: --group-by model,variant."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def _load(paths: list[Path] | None, rescore: bool) -> tuple[list[Run], list[Problem]]:
    roots = paths or [DEFAULT_ROOT]
    if not paths and not DEFAULT_ROOT.exists():
        raise DataError("no run directories given and ./runs does not exist; pass run "
                        "directories or results roots")
    runs, problems = find_runs(roots)
    if rescore:
        from vlbench.results.rescore import rescore_runs

        runs, more, changes = rescore_runs(runs)
        problems += more
        console = _stderr()
        for line in changes:
            console.print(escape(line))
        if not changes:
            console.print("rescored: no metric changed")
    return runs, problems


def _board(paths: list[Path] | None, *, rescore: bool = False, group_by: list[str] | None = None,
           **options: Any) -> Leaderboard:
    """Find (and optionally rescore) runs, then :func:`build_leaderboard` with ``options``."""
    runs, problems = _load(paths, rescore)
    board = build_leaderboard(runs, group_by=_split_list(group_by) or None, problems=problems,
                              **options)
    if not board.sections:
        where = ", ".join(str(p) for p in paths or [DEFAULT_ROOT])
        _report(board.problems, board.notes)
        raise DataError(f"no finished run matches the selection in {where}; check the paths, "
                        "--task, --split and --filter")
    return board


PathsArg = Annotated[list[Path] | None, typer.Argument(
    help="Run directories or results roots, searched recursively (default: ./runs).")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Only this task (vqa, gqa, nlvr2).")]
SplitOpt = Annotated[str | None, typer.Option(
    "--split", help="Split to report (default: the split each run reports; 'all': every split).")]
MetricOpt = Annotated[str | None, typer.Option(
    "--metric", help="Metric to sort and plot by (default: the task's primary metric).")]
GroupOpt = Annotated[list[str] | None, typer.Option(
    "--group-by", help="Keys that define a row (repeat or comma-separate; default: model, "
    "variant, objectives). Task and data fingerprint are always added; a table's sections are "
    "its benchmarks (the questions' fingerprint), so runs on other visual inputs are ranked "
    "together: add 'inputs' (regions, grid features or pixels) to name them. Dotted paths "
    "into run.json work, e.g. config.train.lr.")]
FilterOpt = Annotated[list[str] | None, typer.Option(
    "--filter", help="Keep runs with key=value (or key!=value); repeatable.")]
ReferenceOpt = Annotated[list[str] | None, typer.Option(
    "--reference", help="key=value naming the reference row of a grid: every other row gets "
    "a difference and a Holm-corrected test against it; repeatable.")]
AlphaOpt = Annotated[float, typer.Option("--alpha", help="Family-wise error rate for Holm.")]
ResamplesOpt = Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")]


def leaderboard(
    paths: PathsArg = None,
    task: TaskOpt = None,
    split: SplitOpt = None,
    metric: MetricOpt = None,
    group_by: GroupOpt = None,
    filter_: FilterOpt = None,
    format_: Annotated[str | None, typer.Option(
        "--format", help=f"One of {', '.join(FORMATS)} (default: a table on the terminal, or "
        "the format --out's suffix names).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    breakdowns: Annotated[bool, typer.Option(
        "--breakdowns", help="Add per-type breakdowns (answer type, structural type, ...).")
    ] = False,
    rescore: Annotated[bool, typer.Option(
        "--rescore", help="Recompute every metric from the stored predictions with the current "
        "scorer and update the run records first.")] = False,
    reference: ReferenceOpt = None,
    alpha: AlphaOpt = 0.05,
    baselines: Annotated[bool, typer.Option(
        "--baselines", help="Add the stored baselines (answer prior) as rows.")] = False,
    include_unfinished: Annotated[bool, typer.Option(
        "--include-unfinished", help="Also show runs that are still running or interrupted.")
    ] = False,
    resamples: ResamplesOpt = 2000,
    seed: SeedOpt = 0,
) -> None:
    """Group runs into a leaderboard: mean ± std over seeds, 95% intervals, sorted."""
    try:
        if format_ is None and out is not None:
            format_ = SUFFIXES.get(out.suffix.lower())
            if format_ is None:
                raise ConfigError(f"--out {out}: cannot tell the format from the suffix; "
                                  f"pass --format ({', '.join(FORMATS)})")
        if format_ is not None and format_ not in FORMATS:
            raise ConfigError(f"--format {format_}: unknown; use one of {', '.join(FORMATS)}")
        board = _board(
            paths, rescore=rescore, group_by=group_by, task=task, split=split, metric=metric,
            filters=filter_ or [], breakdowns=breakdowns, reference=reference or [], alpha=alpha,
            baselines=baselines, include_unfinished=include_unfinished, n_resamples=resamples,
            seed=seed,
        )
        _report(board.problems, board.notes)
        if format_ is None:
            print_rich(board, _stdout())
            return
        text = render(board, format_)
        if out is None:
            typer.echo(text, nl=False)
        else:
            write_text_atomic(out, text)
            _stderr().print(f"wrote {escape(str(out))}")
    except VLBenchError as err:
        _fail(err)


def compare(
    a: Annotated[Path, typer.Argument(help="Run directory (or one group's folder of seeds).")],
    b: Annotated[Path, typer.Argument(help="Run directory (or group folder) to compare with A.")],
    split: Annotated[str | None, typer.Option(
        "--split", help="Split to compare on (default: the split both report).")] = None,
    metric: MetricOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON (all flipped questions).")
                     ] = False,
    flips: Annotated[int, typer.Option(
        "--flips", help="How many flipped questions to list in the table view.")] = 20,
    confidence: Annotated[float, typer.Option("--confidence", help="Interval level.")] = 0.95,
    resamples: ResamplesOpt = 10_000,
    seed: SeedOpt = 0,
) -> None:
    """Compare B against A question by question: differences, paired bootstrap intervals,
    paired p-values (exact McNemar on right/wrong scores, a sign-flip permutation test on
    soft scores such as VQA's), per-category differences and the questions that flipped."""
    try:
        result = compare_paths(a, b, split=split, metric=metric, confidence=confidence,
                               n_resamples=resamples, seed=seed)
    except VLBenchError as err:
        _fail(err)
    _report([], result.notes)
    if json_:
        typer.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        print_comparison(result, _stdout(), flips)


def print_comparison(c: Comparison, console: Console, max_flips: int) -> None:
    """Rich tables for a comparison."""
    level = round(c.confidence * 100)
    synthetic = " (synthetic data)" if c.synthetic else ""
    console.print(f"[bold]B vs A on {c.task.upper()} {c.split}{synthetic}[/bold], "
                  f"{c.n_questions} questions")
    for side in (c.a, c.b):
        ids = ", ".join(r.run_id for r in side.runs)
        console.print(f"  {side.label}: {escape(side.first.variant)} "
                      f"({len(side.runs)} seed(s): {escape(ids)})")
    table = Table(title="Metrics (Δ = B − A)", title_justify="left")
    for h in ("Metric", "A", "B", "Δ", f"{level}% CI", "p", "test"):
        table.add_column(h, justify="left" if h in ("Metric", "test") else "right")
    for d in c.metrics:
        ci = "-" if d.ci_low is None else f"[{d.ci_low:+.2f}, {d.ci_high:+.2f}]"
        delta = "-" if d.delta is None else f"{d.delta:+.2f}"
        table.add_row(d.name, fmt(d.a), fmt(d.b), delta, ci, fmt_p(d.p_value), d.test or "-")
    console.print(table)
    if c.categories:
        table = Table(title="Per category", title_justify="left")
        for h in ("Type", "Category", "n", "A", "B", "Δ", f"{level}% CI", "p (Holm)"):
            table.add_column(h, justify="left" if h in ("Type", "Category") else "right")
        for d in c.categories:
            table.add_row(d.kind or "", escape(d.name), str(d.n), fmt(d.a), fmt(d.b),
                          f"{d.delta:+.2f}", f"[{d.ci_low:+.2f}, {d.ci_high:+.2f}]",
                          fmt_p(d.p_holm))
        console.print(table)
    t = c.table
    console.print(f"right in both {t['both_right']}, A only {t['a_only']}, B only "
                  f"{t['b_only']}, neither {t['both_wrong']}")
    if c.flips and max_flips > 0:
        table = Table(title=f"Flipped questions ({len(c.flips)})", title_justify="left")
        for h in ("Id", "Change", "Question", "Gold", "A", "B"):
            table.add_column(h, overflow="fold")
        for f in c.flips[:max_flips]:
            gold = f.answer if isinstance(f.answer, str) else ", ".join(dict.fromkeys(f.answer))
            table.add_row(escape(f.id), f.change, escape(f.question), escape(gold),
                          escape(f.a_prediction), escape(f.b_prediction))
        console.print(table)
        if len(c.flips) > max_flips:
            console.print(f"... and {len(c.flips) - max_flips} more (--flips N, or --json)")


def plot(
    kind: Annotated[str, typer.Argument(
        help="curves: loss and metric vs step of runs; grid: bar chart of a leaderboard with "
        "error bars; sweep: metric vs the numeric setting runs are grouped by (--group-by "
        "config.model.x_layers); compute: metric vs parameters or training time with the "
        "Pareto front.")],
    paths: PathsArg = None,
    out: Annotated[Path, typer.Option("--out", help="Output file, .png or .svg.")] = Path(
        "plot.png"),
    task: TaskOpt = None,
    split: SplitOpt = None,
    metric: MetricOpt = None,
    x: Annotated[str, typer.Option("--x", help="compute: x axis, params or time.")] = "params",
    group_by: GroupOpt = None,
    filter_: FilterOpt = None,
    reference: ReferenceOpt = None,
    alpha: AlphaOpt = 0.05,
    resamples: ResamplesOpt = 2000,
    seed: SeedOpt = 0,
) -> None:
    """Write a plot of runs as PNG or SVG."""
    from vlbench.results import plots

    try:
        if kind not in PLOT_KINDS:
            raise ConfigError(f"plot kind {kind!r}: use one of {', '.join(PLOT_KINDS)}")
        if kind == "curves":
            runs, problems = _load(paths, rescore=False)
            _report(problems, [])
            if not runs:
                raise DataError("no readable run to plot; pass run directories")
            fig = plots.learning_curves(runs, metric)
        else:
            board = _board(
                paths, group_by=group_by, task=task, split=split, metric=metric,
                filters=filter_ or [], reference=reference or [], alpha=alpha,
                n_resamples=resamples, seed=seed,
            )
            _report(board.problems, board.notes)
            if len(board.sections) > 1:
                names = ", ".join(s.title for s in board.sections)
                raise ConfigError(f"the runs cover several tasks/splits ({names}); pick one "
                                  "with --task and --split")
            section = board.sections[0]
            fig = (plots.grid_bars(section) if kind == "grid" else
                   plots.sweep_curve(section) if kind == "sweep" else
                   plots.accuracy_vs_compute(section, x))
        path = plots.save_figure(fig, out)
    except VLBenchError as err:
        _fail(err)
    _stderr().print(f"wrote {escape(str(path))}")
