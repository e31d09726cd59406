"""One checkpoint layout: trained runs load everywhere, export to HF, and older layouts still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlbench
from vlbench.engine.layout import read_checkpoint
from vlbench.engine.run import train
from vlbench.engine.session import open_session
from vlbench.errors import CheckpointError

QUICK = {"train.epochs": "1", "train.train_limit": "256", "train.eval_limit": "64"}


@pytest.fixture(scope="module")
def gqa_run(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("lxmert", "gqa", data_dir=str(small_world), seed=0,
                 out=tmp_path_factory.mktemp("runs"), overrides=QUICK)


def _batch(run: Path) -> tuple[object, dict]:
    session = open_session(run, say=lambda _: None)
    batch = session.task.collate(session.task.examples("testdev")[:8])
    return session, batch


def test_training_checkpoint_is_in_the_one_layout(gqa_run: Path):
    best = gqa_run / "checkpoints" / "best"
    meta = json.loads((best / "config.json").read_text())
    assert meta["layout"] == 2 and meta["family"] == "lxmert" and meta["model"] == "lxmert"
    assert meta["preset"] == "tiny" and meta["task"] == "gqa" and meta["heads"] == {"qa": "QAHead"}
    assert set(meta["config"]) == {"model", "task", "train", "data"}
    keys = set(load_file(str(best / "model.safetensors")))
    assert all(k.startswith(("backbone.", "heads.qa.")) for k in keys)
    answers = json.loads((best / "answers.json").read_text())
    assert answers == json.loads((gqa_run / "task_state.json").read_text())["answers"]
    stored = read_checkpoint(gqa_run)
    assert stored.path == best and stored.answers == answers and stored.run_dir == gqa_run


def test_load_model_reads_a_run_and_a_checkpoint(gqa_run: Path):
    session, batch = _batch(gqa_run)
    for target in (gqa_run, gqa_run / "checkpoints" / "best", gqa_run / "checkpoints" / "last"):
        backbone = vlbench.load_model(str(target))
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "visual_feats",
                                        "visual_pos", "visual_attention_mask")}
        out = backbone(**inputs)
        assert out.pooled.shape == (8, 192) and out.vision.shape[:2] == batch["visual_feats"].shape[:2]


def test_a_trained_run_exports_to_hf_with_equal_answer_logits(gqa_run: Path, tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from vlbench.cli import app

    result = CliRunner().invoke(app, ["convert", str(gqa_run / "checkpoints" / "best"),
                                      str(tmp_path / "hf"), "--to", "hf"])
    assert result.exit_code == 0, result.output
    hf = transformers.LxmertForQuestionAnswering.from_pretrained(str(tmp_path / "hf")).eval()
    session, batch = _batch(gqa_run)
    from vlbench.engine.checkpoint import load_weights

    load_weights(session.model, gqa_run / "checkpoints" / "best" / "model.safetensors")
    session.model.eval()
    with torch.no_grad():
        ours = session.model(batch)
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], visual_feats=batch["visual_feats"],
                    visual_pos=batch["visual_pos"],
                    visual_attention_mask=batch["visual_attention_mask"]).question_answering_score
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["num_qa_labels"] == len(session.task.answers)


def test_a_trained_visualbert_run_exports_to_hf_with_equal_answer_logits(small_world: Path,
                                                                          tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from vlbench.cli import app
    from vlbench.engine.checkpoint import load_weights

    run = train("visualbert", "gqa", data_dir=str(small_world), seed=0, out=tmp_path / "runs",
                overrides=QUICK)
    result = CliRunner().invoke(app, ["convert", str(run), str(tmp_path / "hf"), "--to", "hf"])
    assert result.exit_code == 0, result.output
    hf = transformers.VisualBertForQuestionAnswering.from_pretrained(str(tmp_path / "hf")).eval()
    session, batch = _batch(run)
    load_weights(session.model, run / "checkpoints" / "best" / "model.safetensors")
    session.model.eval()
    with torch.no_grad():
        ours = session.model(batch)
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], visual_embeds=batch["visual_feats"],
                    visual_attention_mask=batch["visual_attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def _to_earlier_layout(run: Path) -> None:
    """Rewrite a run's checkpoints as the previous release wrote them (answer_head.* keys, the
    run config without layout fields, answers only in task_state.json)."""
    for name in ("best", "last"):
        ckpt = run / "checkpoints" / name
        state = load_file(str(ckpt / "model.safetensors"))
        state = {("answer_head." + k[len("heads.qa."):]) if k.startswith("heads.qa.") else k: v
                 for k, v in state.items()}
        save_file(state, str(ckpt / "model.safetensors"))
        meta = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").write_text(json.dumps(
            {"model": meta["model"], "task": meta["task"], "config": meta["config"]}))
        (ckpt / "answers.json").unlink()


def test_runs_of_the_earlier_layout_still_load_evaluate_and_export(gqa_run: Path, tmp_path: Path):
    old = tmp_path / gqa_run.name
    shutil.copytree(gqa_run, old)
    _to_earlier_layout(old)
    stored = read_checkpoint(old)
    assert stored.legacy and stored.answers and "heads.qa.logit_fc.3.weight" in stored.state()
    session, batch = _batch(gqa_run)
    from vlbench.engine.checkpoint import load_weights

    load_weights(session.model, old / "checkpoints" / "best" / "model.safetensors")
    assert vlbench.load_model(str(old)).pooler.dense.weight.shape == (192, 192)
    from vlbench.engine.run import evaluate

    current = tmp_path / "current" / gqa_run.name
    shutil.copytree(gqa_run, current)
    assert evaluate(old, split="testdev")["metrics"] == evaluate(current, split="testdev")["metrics"]


def test_a_damaged_checkpoint_is_a_one_line_error(gqa_run: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(gqa_run / "checkpoints" / "best", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="unreadable safetensors file") as info:
        vlbench.load_model(str(broken))
    assert "\n" not in str(info.value)
    (broken / "config.json").write_text('{"model": "lxmert", "config": "x"}')
    with pytest.raises(CheckpointError, match="not a vlbench checkpoint config"):
        read_checkpoint(broken)


def test_reuse_skips_a_finished_run_and_replaces_a_stale_one(small_world: Path, tmp_path: Path):
    first = train("lxmert", "gqa", data_dir=str(small_world), seed=1, out=tmp_path, overrides=QUICK,
                  reuse=True)
    record = json.loads((first / "run.json").read_text())
    assert record["inputs"]["key"] and record["inputs"]["revisions"] == {"model": 1, "task": 1}
    again = train("lxmert", "gqa", data_dir=str(small_world), seed=1, out=tmp_path, overrides=QUICK,
                  reuse=True)
    assert again == first  # same inputs: nothing trained
    changed = train("lxmert", "gqa", data_dir=str(small_world), seed=1, out=tmp_path,
                    overrides={**QUICK, "train.lr": "1e-4"}, reuse=True)
    assert changed != first and not first.exists()  # the stale run is replaced
    assert [p.name for p in tmp_path.iterdir()] == [changed.name]
