"""``vlbench pretrain`` and ``vlbench ablate``."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console

from vlbench.config import parse_overrides

#: low-data fine-tuning of ``vlbench ablate``: training examples each fine-tune sees
DEFAULT_TRAIN_LIMIT = 1000
#: pre-training epochs of ``vlbench ablate`` (CPU-sized; the paper pre-trains 20)
DEFAULT_PRETRAIN_EPOCHS = 4


def _split_tasks(tasks: str | None) -> list[str] | None:
    return [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None


def pretrain(
    model: str = typer.Option("lxmert", "--model", "-m", help="Registered model (see `vlbench list models`)."),
    tasks: str | None = typer.Option(
        None, "--tasks",
        help="Comma-separated pre-training tasks (default all): mask_lm, mask_obj, matched, qa; "
             "obj_feat, obj_label, obj_attr switch on masked object prediction with just those sub-losses."),
    drop_task: list[str] = typer.Option([], "--drop-task", help="Leave a task or visual sub-loss out (repeatable)."),
    data: str | None = typer.Option(
        None, "--data", help="Data directory with LXMERT pre-training JSON (task.train_files / task.eval_files); "
                             "omit for the embedded synthetic benchmark's captions and questions."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, data order, masking and dropout."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder that receives the run directory."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Config override key=value, e.g. task.qa_from_epoch=10 or task.visual_loss_weight=1 "
                          "(repeatable)."),
) -> None:
    """Pre-train MODEL with LXMERT's objectives; writes a run directory (checkpoint, run.json) like `train`."""
    from vlbench.cli.run import show_record
    from vlbench.engine import distributed
    from vlbench.engine.run import train
    from vlbench.registry import TASKS

    console = distributed.console_for_rank(Console(stderr=True))  # under torchrun: rank 0 speaks
    settings = TASKS.get("pretrain").objective_overrides(_split_tasks(tasks), drop_task)
    settings.update(parse_overrides(overrides))
    console.print(f"Pre-training tasks: {settings['task.objectives']}"
                  + (f" (visual losses {settings['task.visual_losses']})" if settings["task.visual_losses"] else ""))
    run_dir = train(model, "pretrain", data_dir=data, seed=seed, out=out, overrides=settings, console=console)
    if distributed.is_main():
        show_record(run_dir, console)
        print(run_dir)


def ablate(
    drop_task: list[str] = typer.Option([], "--drop-task", help="Compare with pre-training without this task (repeatable)."),
    only: list[str] = typer.Option([], "--only", help="Compare with pre-training on just these comma-separated tasks (repeatable)."),
    grid: str | None = typer.Option(
        None, "--grid", help="Every subset of these comma-separated tasks, e.g. feat,label (the paper's Table 5)."),
    no_pretrain: bool = typer.Option(False, "--no-pretrain", help="Only full pre-training against none."),
    models: str | None = typer.Option(
        None, "--models",
        help="Compare these comma-separated models under one recipe (the first is the reference), e.g. "
             "lxmert,visualbert,late_fusion,text_only."),
    vary: str | None = typer.Option(
        None, "--vary", help="Compare values of one config key, KEY=V1,V2,... (the first is the reference), "
                             "e.g. model.x_layers=0,1,2,3."),
    with_pretraining: bool = typer.Option(
        False, "--pretrain",
        help="With --models or --vary: pre-train each row first, on every objective its model can train."),
    task: str = typer.Option("gqa", "--task", "-t", help="Fine-tuning task."),
    seeds: int = typer.Option(3, "--seeds", help="Fine-tuning seeds per variant (0..N-1)."),
    pretrain_seeds: int = typer.Option(1, "--pretrain-seeds", help="Pre-training runs per variant (fine-tune seed s uses s mod N)."),
    model: str = typer.Option("lxmert", "--model", "-m", help="Registered model."),
    data: str | None = typer.Option(None, "--data", help="Data directory; omit for the embedded synthetic benchmark."),
    out: Path = typer.Option(Path("ablation"), "--out", help="Folder for the runs (cells/) and the table (ablation.md/csv/json)."),
    train_limit: int = typer.Option(
        DEFAULT_TRAIN_LIMIT, "--train-limit",
        help="Low-data fine-tuning: use the first N training examples (0 = all)."),
    pretrain_epochs: int = typer.Option(DEFAULT_PRETRAIN_EPOCHS, "--pretrain-epochs", help="Pre-training epochs."),
    split: str | None = typer.Option(None, "--split", help="Split to tabulate (default: the task's last eval split)."),
    pretrain_set: list[str] = typer.Option([], "--set-pretrain", help="Override for the pre-training runs, key=value (repeatable)."),
    finetune_set: list[str] = typer.Option([], "--set-finetune", help="Override for the fine-tuning runs, key=value (repeatable)."),
    publish: Path | None = typer.Option(
        None, "--publish", help="Also write the table as STEM.md/.csv/.json, e.g. leaderboards/ablation_gqa."),
    launcher: str = typer.Option(
        "local", "--launcher",
        help="local: run the cells here; submitit: one SLURM job per cell (submitit's local executor where "
             "there is no SLURM); submitit-local: always submitit's local executor."),
    partition: str | None = typer.Option(None, "--partition", help="SLURM partition of the jobs (submitit)."),
    gpus_per_job: int | None = typer.Option(None, "--gpus-per-job", help="GPUs per job (submitit)."),
    cpus_per_job: int | None = typer.Option(None, "--cpus-per-job", help="CPUs per job (submitit)."),
    timeout_min: int | None = typer.Option(
        None, "--timeout-min",
        help="Time limit of each job in minutes (submitit; default 240); a job that reaches it is requeued."),
    slurm_folder: Path | None = typer.Option(
        None, "--slurm-folder", help="Folder for submitit's job logs (default OUT/slurm)."),
    collect: bool = typer.Option(
        False, "--collect", help="Run nothing: tabulate the cells once their jobs have all finished."),
) -> None:
    """Run a grid (pre-training variants, models, or values of a config key), fine-tune each row with the
    same seeds, and tabulate it against its first row.

    CPU-sized defaults: 4 pre-training epochs, fine-tuning on the first 1000 training questions.

    Finished runs are found by the content hash of their config and skipped: re-running adds what is missing.
    """
    from vlbench.engine.ablate import (
        AblationSpec,
        expand,
        expand_models,
        expand_values,
        run_ablation,
    )
    from vlbench.errors import ConfigError

    console = Console(stderr=True)
    if sum(map(bool, (drop_task or only or grid or no_pretrain, models, vary))) > 1:
        raise ConfigError("vlbench ablate: compare one thing at a time: pre-training tasks (--drop-task, "
                          "--only, --grid, --no-pretrain), --models, or --vary")
    if with_pretraining and not (models or vary):
        raise ConfigError("--pretrain goes with --models or --vary (an ablation pre-trains already)")
    if models:
        variants = expand_models(models.split(","), pretrain=with_pretraining)
    elif vary:
        key, sep, values = vary.partition("=")
        variants = expand_values(key.strip(), values.split(",") if sep else [], pretrain=with_pretraining)
    else:
        variants = expand(drop_tasks=drop_task, only=only, grid=grid, no_pretrain=no_pretrain)
    pre = {"train.epochs": str(pretrain_epochs), **parse_overrides(pretrain_set)}
    fine = {"train.train_limit": str(train_limit), **parse_overrides(finetune_set)}
    spec = AblationSpec(variants=variants, task=task, model=model, seeds=seeds, pretrain_seeds=pretrain_seeds,
                        data_dir=data, pretrain_overrides=pre, finetune_overrides=fine, split=split)
    command = _command(drop_task, only, grid, no_pretrain, task, seeds, pretrain_seeds, model, data, out,
                       train_limit, pretrain_epochs, split, pretrain_set, finetune_set)
    command = _grid_args(command, models, vary, with_pretraining)
    if publish is not None:
        command += " --publish " + shlex.quote(str(publish))
    slurm = None
    if launcher != "local":
        from vlbench.engine.launch import SlurmOptions

        slurm = SlurmOptions(partition=partition, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                             timeout_min=timeout_min, folder=slurm_folder)
    # The command omits the launcher: the table is the same wherever its cells ran.
    run_ablation(spec, out, command=command, publish=publish, console=console, launcher=launcher,
                 slurm=slurm, collect=collect)
    print(out)


def _grid_args(command: str, models: str | None, vary: str | None, with_pretraining: bool) -> str:
    """``command`` with the model or value grid's options, after ``vlbench ablate``."""
    args = ["--models", models] if models else ["--vary", vary] if vary else []
    args += ["--pretrain"] if with_pretraining else []
    head = "vlbench ablate"
    return " ".join([head, *map(shlex.quote, args), command[len(head):].strip()]).strip()


def _command(drop_task: list[str], only: list[str], grid: str | None, no_pretrain: bool, task: str, seeds: int,
             pretrain_seeds: int, model: str, data: str | None, out: Path, train_limit: int,
             pretrain_epochs: int, split: str | None, pretrain_set: list[str], finetune_set: list[str]) -> str:
    """The command line that regenerates the table (written under it)."""
    args = ["vlbench", "ablate"]
    args += [a for t in drop_task for a in ("--drop-task", t)]
    args += [a for t in only for a in ("--only", t)]
    args += ["--grid", grid] if grid else []
    args += ["--no-pretrain"] if no_pretrain else []
    args += ["--task", task, "--seeds", str(seeds)]
    args += ["--pretrain-seeds", str(pretrain_seeds)] if pretrain_seeds != 1 else []
    args += ["--model", model] if model != "lxmert" else []
    args += ["--data", data] if data else []
    args += ["--train-limit", str(train_limit)] if train_limit != DEFAULT_TRAIN_LIMIT else []
    args += ["--pretrain-epochs", str(pretrain_epochs)] if pretrain_epochs != DEFAULT_PRETRAIN_EPOCHS else []
    args += ["--split", split] if split else []
    args += [a for s in pretrain_set for a in ("--set-pretrain", s)]
    args += [a for s in finetune_set for a in ("--set-finetune", s)]
    args += ["--out", str(out)]
    return shlex.join(args)
