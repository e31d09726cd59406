"""Ablation cells as submitit jobs: one job per cell, fine-tuning after its pre-training.

Each job calls :func:`vlbench.engine.ablate.run_cell`, which skips a finished cell and
resumes an interrupted one from its last checkpoint; the job is ``Checkpointable``, so a
preempted SLURM job is requeued with the same call and picks up where the run stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from rich.console import Console

from vlbench.engine.ablate import AblationSpec, Cell, _finished_run, run_cell
from vlbench.errors import TrainingError

#: ``--launcher`` values and the submitit cluster each selects (None: SLURM if present)
LAUNCHERS = {"local": None, "submitit": None, "submitit-local": "local"}
#: time limit of each job unless --timeout-min says otherwise
DEFAULT_TIMEOUT_MIN = 240


@dataclass
class SlurmOptions:
    """Resources asked for each job (``None``: submitit's default)."""

    partition: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    timeout_min: int | None = None  # default DEFAULT_TIMEOUT_MIN
    folder: Path | None = None  # submitit's logs and pickles (default OUT/slurm)


class CellJob(submitit.helpers.Checkpointable):
    """A picklable job running one cell; on preemption submitit requeues the same call."""

    def __call__(self, cell: Cell, cells_dir: Path, spec: AblationSpec) -> str:
        # The pre-training cell ran in another job: find its run directory on disk.
        if cell.init is not None and cell.init.run_dir is None:
            cell.init.run_dir = _finished_run(cells_dir / cell.init.dirname)
            if cell.init.run_dir is None:
                raise TrainingError(f"{cell.dirname}: its pre-training cell {cell.init.dirname} has not finished")
        return str(run_cell(cell, cells_dir, spec, Console(stderr=True)))


def make_executor(folder: Path, cluster: str | None, options: SlurmOptions) -> submitit.AutoExecutor:
    """An executor for ``cluster`` (``"local"``, or None for SLURM when available)."""
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    # submitit's own default limit is 5 minutes; a timed-out job is requeued, but not that often.
    params: dict[str, Any] = {"name": "vlbench-ablate", "timeout_min": options.timeout_min or DEFAULT_TIMEOUT_MIN}
    if options.gpus_per_job is not None:
        params["gpus_per_node"] = options.gpus_per_job
    if options.cpus_per_job is not None:
        params["cpus_per_task"] = options.cpus_per_job
    if options.partition is not None:
        params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    return executor


def submit_cells(cells: list[Cell], cells_dir: Path, spec: AblationSpec, executor: submitit.AutoExecutor,
                 console: Console) -> None:
    """Run the unfinished ``cells`` as jobs and wait for them; sets each cell's ``run_dir``."""
    pending = []
    for cell in cells:
        done = _finished_run(cells_dir / cell.dirname)
        if done is not None:
            cell.run_dir, cell.skipped = done, True
        else:
            pending.append(cell)
    pre = [c for c in pending if c.kind == "pretrain"]
    fine = [c for c in pending if c.kind != "pretrain"]
    slurm = executor.cluster == "slurm"
    jobs: dict[str, Any] = {}
    failed: list[str] = []
    for cell in pre:
        if slurm:
            executor.update_parameters(slurm_additional_parameters={})
        jobs[cell.key] = executor.submit(CellJob(), cell, cells_dir, spec)
    if not slurm:
        # Outside SLURM there are no job dependencies: finish the pre-training cells first.
        failed += _wait(pre, jobs)
    for cell in fine:
        init_job = jobs.get(cell.init.key) if cell.init is not None else None
        if cell.init is not None and cell.init.key in failed:
            failed.append(cell.key)  # its pre-training failed: nothing to fine-tune
            continue
        if slurm:
            # SLURM starts the job once its pre-training job has succeeded, and cancels it if
            # that job failed (so that waiting on it below cannot hang).
            dependency = ({"dependency": f"afterok:{init_job.job_id}", "kill_on_invalid_dep": "yes"}
                          if init_job is not None else {})
            executor.update_parameters(slurm_additional_parameters=dependency)
        jobs[cell.key] = executor.submit(CellJob(), cell, cells_dir, spec)
    console.print(f"Submitted {len(jobs)} job(s) ({executor.cluster}); logs in {executor.folder}")
    failed += _wait([c for c in pending if c.key in jobs and c.key not in failed and c.run_dir is None], jobs)
    if failed:
        names = [c.dirname for c in pending if c.key in failed]
        raise TrainingError(f"{len(names)} cell(s) did not finish: {', '.join(names)}; "
                            f"see the job logs in {executor.folder} and run the grid again")


def _wait(cells: list[Cell], jobs: dict[str, Any]) -> list[str]:
    """Wait for the cells' jobs; returns the keys of those that failed (run_dir set on the others)."""
    failed = []
    for cell in cells:
        try:
            cell.run_dir = Path(jobs[cell.key].result())
        except Exception:  # submitit wraps the job's error with its whole traceback: report it by name
            failed.append(cell.key)
    return failed
