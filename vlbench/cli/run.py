"""``vlbench train`` and ``vlbench evaluate``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from vlbench.config import parse_overrides


def train(
    model: str = typer.Option("lxmert", "--model", "-m", help="Registered model (see `vlbench list models`)."),
    task: str = typer.Option("gqa", "--task", "-t", help="Registered task (see `vlbench list tasks`)."),
    data: str | None = typer.Option(None, "--data", help="Data directory; omit for the embedded synthetic benchmark."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, data order and dropout."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder that receives the run directory."),
    overrides: list[str] = typer.Option([], "--set", help="Config override key=value, e.g. train.lr=1e-4 (repeatable)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue an interrupted run directory."),
    init: Path | None = typer.Option(None, "--init", help="Start from a pre-trained run or checkpoint."),
    reuse: bool = typer.Option(
        False, "--reuse", help="Reuse a finished run in --out with the same config, data, code revision "
        "and seed (resume an interrupted one) instead of training again; replaces older runs of the "
        "same model, task and seed."),
    nproc: int | None = typer.Option(
        None, "--nproc", min=1, help="Train with N data-parallel processes on this machine: runs "
        "`torchrun --standalone --nproc-per-node N -m vlbench train` with the other arguments."),
) -> None:
    """Fine-tune MODEL on TASK and write a run directory (run.json, checkpoints, predictions)."""
    from vlbench.engine import distributed
    from vlbench.engine.run import resume as resume_run
    from vlbench.engine.run import train as train_run

    if nproc is not None and nproc > 1:
        if distributed.launched():
            raise typer.BadParameter("already running under torchrun; drop --nproc", param_hint="--nproc")
        argv = torchrun_argv(nproc, sys.argv[1:])
        os.execvp(argv[0], argv)  # the launcher takes this process's place (and its signals)
    console = Console(stderr=True)
    if resume is not None:
        run_dir = resume_run(resume, console=console)
    else:
        run_dir = train_run(model, task, data_dir=data, seed=seed, out=out, overrides=parse_overrides(overrides),
                            init=init, console=console, reuse=reuse)
    if distributed.is_main():
        show_record(run_dir, console)
        print(run_dir)


def torchrun_argv(nproc: int, args: list[str]) -> list[str]:
    """The torchrun command behind ``vlbench train --nproc N``: ``args`` (the command line
    after the program name) without ``--nproc``. ``--standalone`` picks a free local port,
    so two such runs on one machine do not collide."""
    rest, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True  # its value follows
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "vlbench", *rest]


def show_record(run_dir: Path, console: Console) -> None:
    record = json.loads((run_dir / "run.json").read_text())
    synthetic = " (SYNTHETIC data)" if record["data"]["synthetic"] else ""
    table = Table(title=f"{record['model']} on {record['task']}{synthetic}, seed {record['seed']}")
    table.add_column("split")
    table.add_column(record["primary_metric"], justify="right")
    baselines = record.get("baselines") or {}
    for name in baselines:
        table.add_column(f"{name.replace('_', '-')} baseline", justify="right")
    for split, metrics in record.get("metrics", {}).items():
        base = [baselines[name].get(split, {}).get(record["primary_metric"]) for name in baselines]
        table.add_row(split, f"{metrics[record['primary_metric']]:.2f}",
                      *("" if b is None else f"{b:.2f}" for b in base))
    console.print(table)
    tp = record.get("throughput", {})
    console.print(f"params {record['params']:,}  train {tp.get('train_examples_per_s') or 0:.0f} ex/s  "
                  f"wall {record['wall_seconds']:.0f} s  status {record['status']}")


def evaluate(
    target: Path = typer.Argument(..., help="Run directory or checkpoint directory inside a run."),
    task: str | None = typer.Option(None, "--task", "-t", help="Task (checked against the run's)."),
    split: str = typer.Option(..., "--split", help="Split to score, e.g. testdev."),
    data: str | None = typer.Option(None, "--data", help="Data directory (default: the run's)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Re-score a run or checkpoint on a split with the task's official metric."""
    from vlbench.engine import distributed
    from vlbench.engine.run import evaluate as evaluate_run

    console = Console(stderr=True)
    result = evaluate_run(target, split=split, task=task, data_dir=data, console=console)
    if not distributed.is_main():
        return
    if json_out:
        print(json.dumps(result))
        return
    table = Table(title=f"{result['run']} on {split}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        if isinstance(v, int | float):
            table.add_row(k, f"{v:.2f}")
    Console().print(table)
    console.print(f"predictions: {result['predictions']}")
