"""A run killed mid-epoch and resumed ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

SETTINGS = ["--set", "train.epochs=2", "--set", "train.train_limit=768", "--set", "train.batch_size=32",
            "--set", "train.save_every=3", "--set", "train.eval_limit=64", "--set", "train.log_every=1",
            "--set", "train.grad_accum=2"]


def vlbench(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vlbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def last_state(run: Path) -> dict | None:
    try:
        return json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None


def weights(run: Path) -> dict:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] == wb[k]).all(), f"{k} differs after resume"


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    # One thread and MKL's strict reproducibility mode (results independent of memory
    # alignment): the same floating-point reduction order in every process.
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MKL_CBWR="AUTO,STRICT", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def uninterrupted(small_world: Path, tmp_path_factory: pytest.TempPathFactory, env) -> Path:
    out = tmp_path_factory.mktemp("straight")
    proc = vlbench(["train", "--data", str(small_world), "--seed", "5", "--out", str(out), *SETTINGS], env)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return only_run(out)


def interrupt_and_resume(small_world: Path, out: Path, env: dict[str, str], sig: signal.Signals,
                         extra: tuple[str, ...] | list[str] = ()) -> Path:
    proc = vlbench(["train", "--data", str(small_world), "--seed", "5", "--out", str(out), *SETTINGS, *extra],
                   env)
    deadline = time.time() + 300
    state = None
    while time.time() < deadline and proc.poll() is None:
        runs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
        state = last_state(runs[0]) if runs else None
        if state and state["epoch"] == 0 and state["step"] >= 3:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    proc.communicate(timeout=120)
    assert state is not None and state["epoch"] == 0, "the run was not caught mid-epoch"
    run = only_run(out)
    stopped = last_state(run)
    assert stopped["epoch"] == 0 and 0 < stopped["batch"] < 24  # 768 / 32 batches in an epoch
    resumed = vlbench(["train", "--resume", str(run)], env)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    return run


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(small_world: Path, tmp_path: Path, env, uninterrupted):
    run = interrupt_and_resume(small_world, tmp_path / "killed", env, signal.SIGKILL)
    assert_same_weights(run, uninterrupted)
    record = json.loads((run / "run.json").read_text())
    straight = json.loads((uninterrupted / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["metrics"] == straight["metrics"]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    steps = [h["step"] for h in history if "loss" in h]
    assert steps == sorted(set(steps)), "log lines written after the checkpoint must not be duplicated"


@pytest.mark.slow
def test_sigterm_saves_an_interrupted_run_that_resumes_exactly(small_world: Path, tmp_path: Path, env,
                                                              uninterrupted):
    run = interrupt_and_resume(small_world, tmp_path / "term", env, signal.SIGTERM)
    assert_same_weights(run, uninterrupted)
