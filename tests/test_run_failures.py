"""Runs that cannot go on are recorded as failed; evaluations never replace a run's record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vlbench.engine.run import evaluate, train
from vlbench.engine.trainer import Trainer
from vlbench.errors import ConfigError, TrainingError

QUICK = {"train.epochs": "1", "train.train_limit": "128", "train.eval_limit": "32"}


def _only_run(out: Path) -> dict:
    (run,) = out.iterdir()
    return json.loads((run / "run.json").read_text())


def test_a_non_finite_loss_stops_the_run_as_failed(small_world: Path, tmp_path: Path):
    with pytest.raises(TrainingError, match=r"the loss is (nan|inf) at epoch 1, step \d+") as info:
        train("lxmert", "gqa", data_dir=str(small_world), out=tmp_path,
              overrides={**QUICK, "train.train_limit": "1024", "train.lr": "1e3", "train.warmup_ratio": "0"})
    assert "\n" not in str(info.value)
    record = _only_run(tmp_path)
    assert record["status"] == "failed" and record["failure"].startswith("the loss is")


def test_a_crash_inside_the_trainer_is_recorded_as_failed(small_world: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    def crash(self, *args):
        raise RuntimeError("out of memory\nmore detail")

    monkeypatch.setattr(Trainer, "_train_epoch", crash)
    with pytest.raises(TrainingError, match="RuntimeError at epoch 0, step 0: out of memory"):
        train("lxmert", "gqa", data_dir=str(small_world), out=tmp_path, overrides=QUICK)
    record = _only_run(tmp_path)
    assert record["status"] == "failed" and "\n" not in record["failure"]


@pytest.mark.parametrize("override, message", [
    ("train.lr=inf", "expects float"), ("train.max_grad_norm=-1", "must be > 0.0"),
    ("train.epochs=0", "must be >= 1"), ("train.precision=fp8", "one of fp32, bf16"),
    ("model.hidden_size=100", "not a multiple"), ("model.hidden_dropout_prob=1.5", "[0, 1)"),
    ("data.max_boxes=0", "must be >= 1"), ("train.warmup_ratio=5", "<= 1.0"),
    ("train.batch_size=0", "must be >= 1"), ("train.grad_accum=0", "must be >= 1"),
    ("train.log_every=0", "must be >= 1"), ("train.lr=-0.1", "must be > 0.0"),
    ("train.save_every=-1", "must be >= 0"), ("train.eval_limit=-5", "must be >= 0"),
    ("data.max_seq_len=0", "must be >= 3"), ("train.select_split=nosuch", "not an evaluation split"),
])
def test_out_of_range_settings_are_refused_before_any_work(override: str, message: str,
                                                           small_world: Path, tmp_path: Path):
    key, _, value = override.partition("=")
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        train("lxmert", "gqa", data_dir=str(small_world), out=tmp_path, overrides={key: value})
    assert "\n" not in str(info.value)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_an_evaluation_goes_to_its_own_folder(small_world: Path, tmp_path: Path):
    run = train("lxmert", "gqa", data_dir=str(small_world), out=tmp_path, overrides=QUICK)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "checkpoints" not in p.parts}
    result = evaluate(run / "checkpoints" / "last", split="testdev")
    after = {p: p.read_bytes() for p in before}
    assert after == before  # the record, its predictions and per-question results are untouched
    assert Path(result["predictions"]) == run / "evaluations" / "last" / "predictions" / "testdev.json"
    assert json.loads((run / "evaluations" / "last" / "testdev.json").read_text())["metrics"] \
        == result["metrics"]


def _interrupted(small_world: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run stopped right after its first checkpoint (a mid-epoch save, before any log line)."""
    def stop(self, started):
        if self.state["step"] >= 1:
            self.save_last()
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_stop_if_requested", stop)
    monkeypatch.setattr(Trainer, "_request_stop", lambda *a: None)
    overrides = {**QUICK, "train.save_every": "1", "train.log_every": "1000", "train.epochs": "2"}
    with pytest.raises(KeyboardInterrupt):
        train("lxmert", "gqa", data_dir=str(small_world), out=out, overrides=overrides)
    monkeypatch.undo()
    (run,) = out.iterdir()
    return run


def test_resume_before_the_first_log_line_and_after_a_kill_between_renames(
        small_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from vlbench.engine.run import resume

    run = _interrupted(small_world, tmp_path, monkeypatch)
    (run / "history.jsonl").unlink(missing_ok=True)
    last = run / "checkpoints" / "last"
    last.rename(last.with_name("last.old"))  # killed between the two renames of a save
    assert resume(run) == run
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_resume_refuses_data_that_changed(small_world: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    import shutil

    from vlbench.engine.run import resume
    from vlbench.errors import DataError

    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    run = _interrupted(world, tmp_path / "runs", monkeypatch)
    questions = world / "gqa" / "train_balanced_questions.json"
    data = json.loads(questions.read_text())
    first = next(iter(data))
    data[first]["question"] = "Is this a changed question?"
    questions.write_text(json.dumps(data))
    with pytest.raises(DataError, match="the data changed since the run started"):
        resume(run)
    (world / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="manifest.json"):
        train("lxmert", "gqa", data_dir=str(world), out=tmp_path / "more", overrides=QUICK)


def test_an_out_that_is_a_file_is_refused_before_any_work(small_world: Path, tmp_path: Path):
    out = tmp_path / "runs"
    out.write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file"):
        train("lxmert", "gqa", data_dir=str(small_world), out=out, overrides=QUICK)
    assert out.read_text() == "not a folder"
