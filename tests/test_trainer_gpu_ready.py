"""The trainer does not wait on the device per step, and its speed paths leave CPU runs as they were.

Losses stay on the device until a log line, a checkpoint or an epoch end reads them; the
history's means are the per-step losses' means all the same. ``train.compile`` and
``train.loader_workers`` are neutral settings; batches built in a worker process equal the
in-process ones; FLOP counting for MFU draws no random numbers.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vlbench.config import RunConfig, TrainConfig, parse_overrides
from vlbench.engine import speed
from vlbench.engine import trainer as trainer_module
from vlbench.engine.run import train
from vlbench.engine.trainer import LossWindow, Trainer
from vlbench.errors import TrainingError

# 96 examples in batches of 8: 12 micro-batches, 6 optimizer steps per epoch
QUICK = {"train.epochs": "1", "train.train_limit": "96", "train.eval_limit": "16", "train.batch_size": "8",
         "train.grad_accum": "2"}


def run_dir(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def step_losses(run: Path) -> list[dict]:
    return [h for h in history(run) if "loss" in h]


def assert_same_results(run: Path, reference: Path) -> None:
    """What must not move: metrics, predictions and the final weights, exactly."""
    from safetensors.torch import load_file

    def metrics(r: Path) -> dict:
        return json.loads((r / "run.json").read_text())["metrics"]

    assert metrics(run) == metrics(reference)
    for pred in (reference / "predictions").iterdir():
        assert (run / "predictions" / pred.name).read_bytes() == pred.read_bytes(), pred.name
    a, b = (load_file(str(r / "checkpoints" / "last" / "model.safetensors")) for r in (run, reference))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_speed_settings_are_neutral_in_the_run_identity():
    cfg = RunConfig(model=TrainConfig(), task=TrainConfig())
    assert {"compile", "loader_workers"} <= set(cfg.to_dict()["train"])
    assert not {"compile", "loader_workers"} & set(cfg.identity()["train"])
    cfg.train = TrainConfig(compile=True, loader_workers=2)
    assert cfg.identity()["train"]["compile"] is True and cfg.identity()["train"]["loader_workers"] == 2
    assert parse_overrides(["train.compile=true"]) == {"train.compile": "true"}


def test_loss_window_reads_once_and_names_the_first_non_finite_step():
    window = LossWindow()
    for i, (a, b) in enumerate([(1.25, 0.5), (0.1, 0.2), (float("nan"), 0.3)]):
        window.add(torch.tensor(a + b), {"a": torch.tensor(a), "b": torch.tensor(b)}, 1.0, f"step {i + 1}")
    assert len(window.pending) == 3 and not window.totals  # nothing read yet
    with pytest.raises(TrainingError, match=r"the loss is nan at step 3 \(a\)"):
        window.read()

    window = LossWindow()
    values = [torch.tensor(v) for v in (0.3, 0.7, 1.1)]  # float32: the means are over their exact values
    for v in values:
        window.add(v, {"task": v}, 1.0, "")
    mean, means = window.read_means()
    floats = [v.item() for v in values]
    assert mean == sum(floats) / 3 and means == {"task": mean}
    assert not window.pending and not window.totals


@pytest.fixture(scope="module")
def every_step(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("every-step")
    train("lxmert", "gqa", data_dir=str(small_world), out=out, overrides={**QUICK, "train.log_every": "1"})
    return run_dir(out)


def test_losses_are_read_at_log_points_only(small_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             every_step: Path):
    """The training loop itself moves no tensor to the host but at log lines and epoch ends.

    (Counted: calls made from the trainer's own code while an epoch trains. CPU AdamW reads its
    step counters with ``.item()``; on CUDA the fused one does not.)"""
    reads = {"item": 0, "float": 0, "tolist": 0}
    inside = [False]

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if inside[0] and sys._getframe(1).f_code.co_filename == trainer_module.__file__:
                reads[name.strip("_")] += 1
            return original(self, *args, **kwargs)
        return wrapper

    original_epoch = Trainer._train_epoch

    def train_epoch(self, *args):
        inside[0] = True
        try:
            return original_epoch(self, *args)
        finally:
            inside[0] = False

    for name in ("item", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    train("lxmert", "gqa", data_dir=str(small_world), out=tmp_path, overrides={**QUICK, "train.log_every": "3"})
    monkeypatch.undo()
    # 12 micro-batches, 6 steps: the loop used to read all 12 losses and their named terms; now
    # the epoch's order (a CPU tensor, once) and one read at each log line (steps 3 and 6), none
    # left over at the epoch end.
    assert reads == {"item": 0, "float": 0, "tolist": 1 + 2}

    run = run_dir(tmp_path)
    logged, each = step_losses(run), step_losses(every_step)
    assert [h["step"] for h in logged] == [3, 6] and len(each) == 6
    # The window's mean is the mean of the per-step losses (each a mean of its two micro-batches),
    # and logging less often changes nothing else.
    for h in logged:
        window = each[h["step"] - 3:h["step"]]
        assert h["loss"] == pytest.approx(sum(w["loss"] for w in window) / 3, rel=1e-12)
    assert_same_results(run, every_step)


def test_a_worker_process_builds_the_batches_the_training_process_builds(small_world: Path, tmp_path: Path,
                                                                          every_step: Path):
    train("lxmert", "gqa", data_dir=str(small_world), out=tmp_path,
          overrides={**QUICK, "train.log_every": "1", "train.loader_workers": "1"})
    run = run_dir(tmp_path)
    assert [h["loss"] for h in step_losses(run)] == [h["loss"] for h in step_losses(every_step)]
    assert_same_results(run, every_step)


def test_train_compile_runs_the_loop_through_torch_compile(small_world: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, every_step: Path):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    train("lxmert", "gqa", data_dir=str(small_world), out=tmp_path,
          overrides={**QUICK, "train.log_every": "1", "train.compile": "true"})
    assert len(compiled) == 1
    run = run_dir(tmp_path)
    assert json.loads((run / "run.json").read_text())["config"]["train"]["compile"] is True
    assert_same_results(run, every_step)  # evaluation and checkpoints use the model itself


def test_flops_are_counted_without_touching_the_random_stream_or_the_mode():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    state = torch.get_rng_state()
    flops = speed.train_flops_per_example(lambda_model(model), {"x": torch.ones(2, 4)}, 2)
    assert flops == 3 * (2 * 2 * 4 * 3) / 2  # 3x the forward's multiply-adds, per example
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert speed.mfu(100.0, 1e9, 1e12, devices=2) == pytest.approx(0.05)


def lambda_model(model: nn.Module) -> nn.Module:
    """``model`` called as the trainer calls task models: with the batch dict."""
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, batch):
            return self.inner(batch["x"])

    return Wrapped()


def test_cpu_keeps_the_plain_optimizer_and_reports_no_peak():
    cpu = torch.device("cpu")
    opt = speed.adamw([{"params": [nn.Parameter(torch.zeros(2))]}], 1e-3, cpu)
    assert not opt.defaults.get("fused") and not opt.defaults.get("foreach")
    assert speed.peak_flops(cpu) is None
    assert math.isclose(dict(speed.PEAK_BF16_TFLOPS)["H100"], 989.4)


def test_pretrain_prints_its_record_on_rank_0_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from typer.testing import CliRunner

    import vlbench.cli.run as cli_run
    import vlbench.engine.run as engine_run
    from vlbench.cli import app
    from vlbench.engine import distributed

    shown = []
    monkeypatch.setattr(engine_run, "train", lambda *a, **kw: tmp_path / "the-run")
    monkeypatch.setattr(cli_run, "show_record", lambda run, console: shown.append(run))
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    result = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert shown == [] and "the-run" not in result.output and "Pre-training tasks" not in result.output
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    result = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path)])
    assert shown == [tmp_path / "the-run"] and "the-run" in result.output


class DrawingTask:
    """A task whose batches hold random draws, as pre-training's masks do."""

    def collate(self, examples: list[int]) -> dict:
        return {"x": torch.tensor(examples), "draw": torch.rand(2)}


def test_worker_draws_depend_on_the_batch_not_on_the_workers_or_the_start():
    from vlbench.engine import loader

    data = loader.EpochBatches(DrawingTask(), list(range(10)), list(range(9, -1, -1)), 3, seed=5, epoch=1)

    def draws(start: int, workers: int) -> list:
        return [(b["x"].tolist(), b["draw"], mine, total)
                for b, mine, total in loader.epoch_batches(data, start, workers, pin_memory=False)]

    one, two, resumed = draws(0, 1), draws(0, 2), draws(2, 1)
    assert [(x, m, t) for x, _, m, t in one] == [([9, 8, 7], 3, 3), ([6, 5, 4], 3, 3), ([3, 2, 1], 3, 3),
                                                 ([0], 1, 1)]
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a[1], b[1])
    assert all(torch.equal(a[1], b[1]) for a, b in zip(one[2:], resumed, strict=True))
    assert not torch.equal(one[0][1], one[1][1])
    assert loader.worker_count(-1, torch.device("cpu")) == 0 and loader.worker_count(3, torch.device("cpu")) == 3
