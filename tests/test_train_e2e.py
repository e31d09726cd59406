"""`vlbench train / evaluate` end to end on a small synthetic world, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import vlbench
from vlbench.cli import app

RUN_KEYS = {"model", "variant", "task", "seed", "config", "data", "metrics", "baselines", "params",
            "throughput", "wall_seconds", "provenance", "checkpoint"}

QUICK = ["--set", "train.epochs=2", "--set", "train.train_limit=512", "--set", "train.eval_limit=96"]


@pytest.fixture(scope="module")
def run_dir(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(app, ["train", "--model", "lxmert", "--task", "gqa", "--data", str(small_world),
                                      "--seed", "3", "--out", str(out), *QUICK])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert run.parent == out
    return run


def test_run_record_follows_the_contract(run_dir: Path, small_world: Path):
    record = json.loads((run_dir / "run.json").read_text())
    assert RUN_KEYS <= set(record)
    assert record["status"] == "finished" and record["seed"] == 3
    assert record["data"]["synthetic"] is True and record["data"]["source"] == str(small_world.resolve())
    assert record["data"]["fingerprint"].startswith("sha256:")
    assert record["config"]["model"]["preset"] == "tiny"  # data-source default for synthetic worlds
    assert record["config"]["train"]["epochs"] == 2  # --set wins over the data-source default
    for split in ("val", "testdev"):
        m = record["metrics"][split]
        assert {"accuracy", "binary", "open"} <= set(m) and 0 <= m["accuracy"] <= 100
        assert 0 <= record["baselines"]["prior"][split]["accuracy"] <= 100
    assert record["params"] > 0 and record["throughput"]["train_examples_per_s"] > 0
    prov = record["provenance"]
    assert {"vlbench", "git_commit", "python", "torch", "device", "command"} <= set(prov)
    assert (run_dir / record["checkpoint"] / "model.safetensors").is_file()


def test_predictions_are_in_gqa_submission_format(run_dir: Path):
    preds = json.loads((run_dir / "predictions" / "testdev.json").read_text())
    assert len(preds) == 96 and set(preds[0]) == {"questionId", "prediction"}
    lines = (run_dir / "per_question" / "testdev.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert {"id", "score", "prediction", "answer", "question", "types"} <= set(first)


def test_evaluate_rescores_the_best_checkpoint(run_dir: Path):
    result = CliRunner().invoke(app, ["evaluate", str(run_dir), "--task", "gqa", "--split", "val", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["examples"] > 96  # the whole split, not the training-time eval limit
    assert 0 <= out["metrics"]["accuracy"] <= 100


def test_evaluate_wrong_task_is_one_line_error(run_dir: Path):
    result = CliRunner().invoke(app, ["evaluate", str(run_dir), "--task", "vqa", "--split", "val"])
    assert result.exit_code != 0


def test_load_model_gives_the_three_outputs(run_dir: Path):
    backbone = vlbench.load_model(str(run_dir))
    cfg = backbone.config
    ids = torch.tensor([[2, 7, 8, 3, 0]])
    out = backbone(input_ids=ids, attention_mask=(ids > 0).long(), token_type_ids=torch.zeros_like(ids),
                   visual_feats=torch.randn(1, 4, cfg.visual_feat_dim), visual_pos=torch.rand(1, 4, 4))
    assert out.language.shape == (1, 5, cfg.hidden_size)
    assert out.vision.shape == (1, 4, cfg.hidden_size)
    assert out.pooled.shape == (1, cfg.hidden_size)


def test_unknown_override_is_refused_before_training(small_world: Path, tmp_path: Path):
    from vlbench.cli import main  # noqa: F401  (the console script wraps errors into one line)

    result = CliRunner().invoke(app, ["train", "--data", str(small_world), "--out", str(tmp_path),
                                      "--set", "train.lrr=1"])
    assert result.exit_code != 0
    assert "did you mean train.lr" in str(result.exception)
    assert not any(tmp_path.iterdir())
