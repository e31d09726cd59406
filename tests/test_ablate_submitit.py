"""`vlbench ablate --launcher submitit-local`: one job per cell, the same table, resumption, --collect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from vlbench.cli.pretrain import ablate
from vlbench.data.source import resolve_data
from vlbench.engine.ablate import AblationSpec, expand, plan, run_cell
from vlbench.engine.trainer import Trainer
from vlbench.errors import ConfigError

app = typer.Typer()
app.command("ablate")(ablate)
app.command("noop")(lambda: None)  # a second command keeps `ablate` a subcommand

QUICK = ["--task", "gqa", "--train-limit", "64", "--pretrain-epochs", "1",
         "--set-pretrain", "train.train_limit=128", "--set-pretrain", "train.eval_limit=32",
         "--set-finetune", "train.epochs=1", "--set-finetune", "train.eval_limit=32"]


def _args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["ablate", *extra, "--data", str(world), "--out", str(out), *QUICK]


#: what differs between two executions of the same cells: how fast they ran
TIMING = ("train_examples_per_s", "wall_seconds")


def _results(summary: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in summary["rows"]]


def _cells(summary: dict) -> list[tuple]:
    return [(c["cell"], c["kind"], c["seed"], c["variants"]) for c in summary["cells"]]


@pytest.mark.slow
def test_submitit_local_gives_the_local_table(small_world: Path, tmp_path: Path):
    grid = ["--drop-task", "mask_obj", "--seeds", "2"]
    local = CliRunner().invoke(app, _args(small_world, tmp_path / "local", *grid))
    assert local.exit_code == 0, local.output
    jobs = CliRunner().invoke(app, _args(small_world, tmp_path / "jobs", *grid, "--launcher", "submitit-local"))
    assert jobs.exit_code == 0, jobs.output
    a = json.loads((tmp_path / "local" / "ablation.json").read_text())
    b = json.loads((tmp_path / "jobs" / "ablation.json").read_text())
    assert _results(b) == _results(a) and _cells(b) == _cells(a)
    assert len(b["cells"]) == 2 + 6 and not any(c["skipped"] for c in b["cells"])
    assert b["command"] == a["command"].replace(str(tmp_path / "local"), str(tmp_path / "jobs"))
    assert list((tmp_path / "jobs" / "slurm").glob("*_log.out"))  # each cell ran as a submitit job


@pytest.mark.slow
def test_a_killed_cell_resumes_in_its_job_and_collect_waits_for_it(
        small_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "abl"
    args = _args(small_world, out, "--no-pretrain", "--seeds", "1")
    spec = AblationSpec(variants=expand(no_pretrain=True), seeds=1, data_dir=str(small_world),
                        pretrain_overrides={"train.epochs": "1", "train.train_limit": "128",
                                            "train.eval_limit": "32"},
                        finetune_overrides={"train.train_limit": "64", "train.epochs": "1",
                                            "train.eval_limit": "32"})
    _, table = plan(spec, resolve_data(str(small_world), quiet=True))
    cell = table["no pre-training"][0]

    def stop(self, started):  # killed right after the first checkpoint, as in test_run_failures
        if self.state["step"] >= 1:
            self.save_last()
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_stop_if_requested", stop)
    monkeypatch.setattr(Trainer, "_request_stop", lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, out / "cells", spec, Console(stderr=True))
    monkeypatch.undo()
    (partial,) = (p.parent for p in (out / "cells" / cell.dirname).glob("*/run.json"))
    assert json.loads((partial / "run.json").read_text())["status"] != "finished"

    refused = CliRunner().invoke(app, args + ["--collect"])
    assert isinstance(refused.exception, ConfigError)
    assert "\n" not in str(refused.exception) and cell.dirname in str(refused.exception)
    assert not (out / "ablation.json").exists()

    jobs = CliRunner().invoke(app, args + ["--launcher", "submitit-local"])
    assert jobs.exit_code == 0, jobs.output
    assert [p.parent for p in (out / "cells" / cell.dirname).glob("*/run.json")] == [partial]
    assert json.loads((partial / "run.json").read_text())["status"] == "finished"
    summary = json.loads((out / "ablation.json").read_text())
    (entry,) = (c for c in summary["cells"] if c["cell"] == cell.dirname)
    assert out / entry["run"] == partial

    collected = CliRunner().invoke(app, args + ["--collect"])
    assert collected.exit_code == 0, collected.output
    again = json.loads((out / "ablation.json").read_text())
    assert again["rows"] == summary["rows"] and all(c["skipped"] for c in again["cells"])


def test_an_unknown_launcher_is_refused(small_world: Path, tmp_path: Path):
    result = CliRunner().invoke(app, _args(small_world, tmp_path / "abl", "--no-pretrain", "--seeds", "1",
                                           "--launcher", "pbs"))
    assert isinstance(result.exception, ConfigError) and "--launcher pbs" in str(result.exception)
    assert not (tmp_path / "abl" / "cells").exists()


def test_failed_jobs_are_named_in_one_line(small_world: Path, tmp_path: Path):
    import shutil

    from vlbench.engine.launch import SlurmOptions, make_executor, submit_cells
    from vlbench.errors import TrainingError

    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    spec = AblationSpec(variants=expand(no_pretrain=True), seeds=1, data_dir=str(world))
    cells, _ = plan(spec, resolve_data(str(world), quiet=True))
    shutil.rmtree(world)  # every job fails on the missing data
    executor = make_executor(tmp_path / "slurm", "local", SlurmOptions(timeout_min=5))
    with pytest.raises(TrainingError, match=r"3 cell\(s\) did not finish") as info:
        submit_cells(cells, tmp_path / "cells", spec, executor, Console(stderr=True))
    assert "\n" not in str(info.value) and all(c.dirname in str(info.value) for c in cells)
