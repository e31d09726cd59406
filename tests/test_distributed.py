"""Data-parallel training under torchrun (gloo on CPU) is one-process training, faster.

Two processes train a tiny model with the same global batch as one process: the loss curve
agrees to float rounding and the predictions and metrics are identical; a two-process run
stopped after a checkpoint and resumed with one process ends where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlbench.engine import distributed

# 127 = 18 x 7 + 1: every global batch of 7 splits 4/3 over two ranks, and the last one holds a
# single example, so rank 1 runs it weighted 0; grad_accum=2 exercises DDP's no_sync and a last
# step of one batch. lr=1e-2 so that ten steps move the metrics off zero.
SETTINGS = ["--set", "train.epochs=1", "--set", "train.train_limit=127", "--set", "train.eval_limit=32",
            "--set", "train.log_every=1", "--set", "model.hidden_size=32", "--set", "model.num_attention_heads=2",
            "--set", "model.intermediate_size=64", "--set", "train.batch_size=7", "--set", "train.grad_accum=2",
            "--set", "train.lr=1e-2", "--set", "train.save_every=1", "--seed", "3"]
STEPS = 10  # ceil(ceil(127 / 7) / 2)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    # VLBENCH_CACHE comes from the session fixture in conftest; gloo talks over loopback only.
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                GLOO_SOCKET_IFNAME="lo")


def launch(nproc: int, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """``vlbench ARGS`` in one process, or under torchrun with ``nproc`` (a free local port each)."""
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                                      "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0"]
    return subprocess.Popen([sys.executable, *launcher, "-m", "vlbench", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train(nproc: int, small_world: Path, out: Path, env: dict[str, str]) -> Path:
    proc = launch(nproc, ["train", "--data", str(small_world), "--out", str(out), *SETTINGS], env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return only_run(out)


def only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [h["loss"] for h in lines if "loss" in h]


def assert_same_training(run: Path, reference: Path) -> None:
    """Loss curve to 1e-4 relative (the ranks sum their shares' losses in another order than one
    process sums the batch); predictions and metrics exactly equal: evaluation runs the
    one-process batches, and weights a few ulps apart do not move an argmax."""
    got, want = losses(run), losses(reference)
    assert len(got) == len(want) == STEPS
    assert got == pytest.approx(want, rel=1e-4)
    assert record(run)["metrics"] == record(reference)["metrics"]
    assert any(m["accuracy"] > 0 for m in record(reference)["metrics"].values())  # not trivially equal
    for split in record(reference)["metrics"]:
        name = f"predictions/{split}.json"
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.fixture(scope="module")
def one_process(small_world: Path, tmp_path_factory: pytest.TempPathFactory, env) -> Path:
    return train(1, small_world, tmp_path_factory.mktemp("one"), env)


def test_shards_interleave_and_cover_each_global_batch():
    batch = [11, 4, 7, 9, 2, 5, 8]
    shares = [distributed.shard(batch, r, 2) for r in range(2)]
    assert shares == [[11, 7, 2, 8], [4, 9, 5]]
    assert distributed.shard(batch, 0, 1) == batch
    assert [distributed.shard([3], r, 2) for r in range(2)] == [[3], []]


def test_one_process_needs_no_process_group():
    assert not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.broadcast("x") == "x" and distributed.gather("x") == ["x"]
    assert distributed.main_first(lambda: 3) == 3
    assert distributed.device_for(torch.device("cpu")) == torch.device("cpu")


def test_nproc_execs_torchrun_with_the_other_arguments(monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from vlbench.cli import app

    args = ["train", "--task", "nlvr2", "--nproc", "4", "--set", "train.lr=1e-4"]
    calls = []
    monkeypatch.setattr(sys, "argv", ["vlbench", *args])
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append((file, argv)) or sys.exit(0))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls == [(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                       "--nproc-per-node", "4", "-m", "vlbench", "train", "--task", "nlvr2",
                                       "--set", "train.lr=1e-4"])]


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(small_world: Path, tmp_path: Path, env,
                                                               one_process: Path):
    run = train(2, small_world, tmp_path, env)
    assert_same_training(run, one_process)
    assert record(run)["provenance"]["world_size"] == 2
    assert record(one_process)["provenance"]["world_size"] == 1
    assert record(run)["config"] == record(one_process)["config"]
    # Weights agree to float rounding (unused parameters included: DDP leaves their grads unset).
    a = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(one_process / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_two_process_run_stopped_and_resumed_with_one_ends_as_uninterrupted(small_world: Path, tmp_path: Path,
                                                                            env, one_process: Path):
    out = tmp_path / "stopped"
    proc = launch(2, ["train", "--data", str(small_world), "--out", str(out), *SETTINGS], env)
    deadline, caught = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None:
        states = list(out.glob("*/checkpoints/last/trainer_state.json")) if out.exists() else []
        if states:
            # To torchrun alone: it forwards SIGTERM to each worker once, and they stop together
            # at the next step boundary (a terminal's Ctrl-C reaching both is handled the same).
            proc.send_signal(signal.SIGTERM)
            caught = True
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=120)
    assert caught, f"the run ended before its first checkpoint was seen: {err[-2000:]}"
    run = only_run(out)
    assert record(run)["status"] == "interrupted", err[-2000:]
    state = json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 0 and 0 < state["step"] < STEPS and state["world_size"] == 2

    resumed = launch(1, ["train", "--resume", str(run)], env)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert record(run)["status"] == "finished"
    assert_same_training(run, one_process)
    provenance = record(run)["provenance"]
    assert provenance["world_size"] == 2 and provenance["resumed_world_size"] == 1
