"""On a CUDA device: the trainer's GPU paths learn, log MFU, repeat themselves and resume exactly.

bf16 autocast, TF32, fused AdamW, batches built in loader workers into pinned memory and
copied without blocking: the small GQA job of ``test_learning`` must clear the same bar on a
GPU as on CPU, two runs of one seed must give the same weights, and a run killed mid-epoch
must resume to the weights of an uninterrupted one. Skipped where no CUDA device is present
(CI has none): ``VLBENCH_TEST_CUDA=1 python -m pytest tests/test_cuda.py`` where one is.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from test_learning import WORLD
from test_resume import SETTINGS, assert_same_weights, interrupt_and_resume, only_run, vlbench

from vlbench.data.synth.world import generate
from vlbench.engine.run import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device and VLBENCH_TEST_CUDA=1 (see conftest.py)")

GPU = {"train.device": "cuda", "train.precision": "bf16"}
GPU_ARGS = ["--set", "train.device=cuda", "--set", "train.precision=bf16"]


def test_bf16_job_on_cuda_learns_far_above_the_prior_and_logs_mfu(tmp_path: Path):
    generate(tmp_path / "world", seed=2, **WORLD)
    run = train("lxmert", "gqa", data_dir=str(tmp_path / "world"), out=tmp_path / "runs",
                overrides={**GPU, "train.epochs": "12"})
    record = json.loads((run / "run.json").read_text())
    accuracy = record["metrics"]["testdev"]["accuracy"]
    prior = record["baselines"]["prior"]["testdev"]["accuracy"]
    assert accuracy >= prior + 12, f"testdev {accuracy:.1f} vs prior {prior:.1f}"
    assert "cuda" in json.dumps(record["provenance"])
    logged = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    mfus = [h["mfu"] for h in logged if "mfu" in h]
    assert mfus and all(0 < m < 1 for m in mfus), mfus


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def straight_run(world: Path, out: Path, env: dict[str, str]) -> Path:
    proc = vlbench(["train", "--data", str(world), "--seed", "5", "--out", str(out), *SETTINGS, *GPU_ARGS], env)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return only_run(out)


def test_a_cuda_run_repeats_itself_and_a_killed_one_resumes_exactly(small_world: Path, tmp_path: Path,
                                                                    env: dict[str, str]):
    first = straight_run(small_world, tmp_path / "first", env)
    second = straight_run(small_world, tmp_path / "second", env)
    assert_same_weights(second, first)
    killed = interrupt_and_resume(small_world, tmp_path / "killed", env, signal.SIGKILL, extra=GPU_ARGS)
    assert_same_weights(killed, first)
    assert json.loads((killed / "run.json").read_text())["metrics"] == \
        json.loads((first / "run.json").read_text())["metrics"]
