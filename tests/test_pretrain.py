"""`vlbench pretrain` end to end, the pre-training corpus reader, and fine-tuning with --init."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from vlbench.cli.pretrain import pretrain
from vlbench.engine.init import apply_init
from vlbench.engine.run import train
from vlbench.engine.session import new_session
from vlbench.engine.trainer import Trainer
from vlbench.errors import CheckpointError, DataError
from vlbench.tasks.pretrain.objectives import normalize_answer
from vlbench.tasks.pretrain.task import read_corpus

app = typer.Typer()
app.command("pretrain")(pretrain)
app.command("noop")(lambda: None)  # a second command keeps `pretrain` a subcommand

QUICK = ["--set", "train.epochs=1", "--set", "train.train_limit=320", "--set", "train.eval_limit=64",
         "--set", "train.log_every=1",
         "--set", "train.device=cpu"]
FINE = {"train.epochs": "1", "train.train_limit": "128", "train.eval_limit": "48", "train.device": "cpu"}
ALL_LOSSES = {"mask_lm", "obj_feat", "obj_label", "obj_attr", "matched", "qa"}


def _pretrain(world: Path, out: Path, *args: str) -> Path:
    result = CliRunner().invoke(app, ["pretrain", "--data", str(world), "--out", str(out), *QUICK, *args])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pre_run(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pretrain(small_world, tmp_path_factory.mktemp("pretrain"))


def test_pretrain_writes_a_run_like_train(pre_run: Path):
    record = json.loads((pre_run / "run.json").read_text())
    assert record["task"] == "pretrain" and record["status"] == "finished"
    assert record["config"]["task"]["objectives"] == ["mask_lm", "mask_obj", "matched", "qa"]
    assert record["config"]["task"]["visual_loss_weight"] == pytest.approx(6.67)
    val = record["metrics"]["val"]
    assert {"neg_loss", "mlm_accuracy", "matched_accuracy", "qa_accuracy", "loss_obj_feat"} <= set(val)
    assert record["primary_metric"] == "neg_loss" and val["neg_loss"] == pytest.approx(-val["loss"])
    assert (pre_run / "checkpoints" / "best" / "model.safetensors").is_file()
    steps = [json.loads(line) for line in (pre_run / "history.jsonl").read_text().splitlines()]
    logged = [s for s in steps if "losses" in s]
    assert logged and all(set(s["losses"]) == ALL_LOSSES for s in logged)
    assert all(s["loss"] == pytest.approx(sum(s["losses"].values()), rel=1e-4) for s in logged)
    answers = json.loads((pre_run / "task_state.json").read_text())["answers"]
    assert answers and all(a == normalize_answer(a) for a in answers)


def test_tasks_and_drop_task_switch_objectives_and_heads(small_world: Path, tmp_path: Path):
    run = _pretrain(small_world, tmp_path, "--tasks", "mask_lm,matched,obj_label", "--drop-task", "matched")
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["task"]["objectives"] == ["mask_lm", "mask_obj"]
    assert record["config"]["task"]["visual_losses"] == ["obj_label"]
    keys = set(load_file(str(run / "checkpoints" / "best" / "model.safetensors")))
    assert any(k.startswith("heads.pretraining.obj_predict_head.decoder_dict.obj.") for k in keys)
    assert not any(k.startswith(("heads.pretraining.obj_predict_head.decoder_dict.feat", "heads.pretraining.answer_head.")) for k in keys)
    steps = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert all(set(s["losses"]) == {"mask_lm", "obj_label"} for s in steps if "losses" in s)


def test_unknown_task_is_a_one_line_error(small_world: Path, tmp_path: Path):
    result = CliRunner().invoke(app, ["pretrain", "--data", str(small_world), "--out", str(tmp_path),
                                      "--tasks", "mask_lm,matchd"])
    assert result.exit_code != 0
    assert "did you mean 'matched'" in str(result.exception)
    assert not any(tmp_path.iterdir())


# -- the corpus --------------------------------------------------------------------------------


def test_reads_lxmert_pretraining_json(tmp_path: Path):
    path = tmp_path / "mscoco_minival.json"
    path.write_text(json.dumps([
        {"img_id": "COCO_val2014_000000000042", "sentf": {"mscoco": ["A dog on a couch.", "A brown dog."],
                                                          "vqa": ["How many dogs?"]},
         "labelf": {"vqa": [{"two": 0.6, "2": 1.0}]}},
    ]))
    examples = read_corpus(path, "val")
    assert [e.sent for e in examples] == ["A dog on a couch.", "A brown dog.", "How many dogs?"]
    assert examples[0].label is None and examples[2].label == {"2": 1.0}  # normalised, best score kept
    assert examples[2].uid == "COCO_val2014_000000000042/vqa/0"


@pytest.mark.parametrize("content, message", [
    ({"img_id": "1"}, "expected a JSON list"),
    ([{"sentf": {}}], "item 0 lacks 'img_id'"),
    ([{"img_id": "1", "sentf": {"vqa": ["q"]}, "labelf": {"vqa": []}}], "same length"),
    ([{"img_id": "1", "sentf": {"vqa": ["q"]}, "labelf": {"vqa": ["yes"]}}], r"labelf\['vqa'\]\[0\]"),
])
def test_bad_corpus_is_a_one_line_data_error(tmp_path: Path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message) as exc:
        read_corpus(path, "train")
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_corpus_files_are_configurable(small_world: Path, tmp_path: Path):
    own = tmp_path / "captions.json"
    entries = json.loads((small_world / "pretrain" / "val.json").read_text())[:3]
    own.write_text(json.dumps([{"img_id": e["img_id"], "sentf": {"c": e["sentf"]["synth_captions"]}}
                               for e in entries]))
    s = new_session("lxmert", "pretrain", data_dir=str(small_world), out=tmp_path / "runs", say=lambda _: None,
                    overrides={"task.eval_files": str(own), "task.objectives": "mask_lm,matched"})
    assert len(s.task.examples("val")) == sum(len(e["sentf"]["synth_captions"]) for e in entries)
    with pytest.raises(DataError, match="task.train_files"):
        new_session("lxmert", "pretrain", data_dir=str(small_world), out=tmp_path / "runs2",
                    say=lambda _: None, overrides={"task.train_files": "nowhere.json"})


# -- fine-tuning from the pre-trained checkpoint -------------------------------------------------


def test_apply_init_loads_backbone_and_transfers_answer_rows(pre_run: Path, small_world: Path, tmp_path: Path):
    session = new_session("lxmert", "gqa", data_dir=str(small_world), out=tmp_path, overrides=FINE,
                          say=lambda _: None)
    messages: list[str] = []
    lineage = apply_init(session, pre_run, say=messages.append)
    state = load_file(str(pre_run / "checkpoints" / "best" / "model.safetensors"))
    for k, v in session.model.backbone.state_dict().items():
        assert torch.equal(v, state["backbone." + k]), k
    source = json.loads((pre_run / "task_state.json").read_text())["answers"]
    weight = session.model.heads["qa"].logit_fc[3].weight
    shared = 0
    for j, answer in enumerate(session.task.answers):
        if normalize_answer(answer) in source:
            i = source.index(normalize_answer(answer))
            assert torch.equal(weight[j], state["heads.pretraining.answer_head.logit_fc.3.weight"][i])
            shared += 1
        else:
            assert not weight[j].any()  # LXMERT: answers the pre-training never saw start at zero
    assert lineage["answers_transferred"] == shared > 0
    # the softmax-trained biases are shifted so that sigmoid scores start near the softmax ones
    shift = lineage["answer_bias_shift"]
    assert shift < 0
    bias = session.model.heads["qa"].logit_fc[3].bias
    rows = [j for j, a in enumerate(session.task.answers) if normalize_answer(a) in source]
    expected = torch.stack([state["heads.pretraining.answer_head.logit_fc.3.bias"][source.index(normalize_answer(a))]
                            for a in (session.task.answers[j] for j in rows)]) + shift
    assert torch.allclose(bias[rows], expected)
    examples = session.task.examples("train")[:256]
    with torch.no_grad():
        session.model.eval()
        lse = torch.cat([torch.logsumexp(session.model(session.task.collate(examples[i:i + 64]))[:, rows], -1)
                         for i in range(0, len(examples), 64)])
    assert abs(lse.mean().item()) < 1e-3
    assert lineage["answers_total"] == len(session.task.answers)
    assert any(f"Transferred {shared} of" in m for m in messages)
    digest = hashlib.sha256((pre_run / "checkpoints" / "best" / "model.safetensors").read_bytes()).hexdigest()
    assert lineage["checkpoint_sha256"] == "sha256:" + digest
    assert lineage["objectives"] == ["mask_lm", "mask_obj", "matched", "qa"]
    assert lineage["run"] == str(pre_run)
    # the pre-training vocabulary comes along (token ids must mean the same words)
    assert session.tokenizer.tokenizer.get_vocab() == load_tok(pre_run)
    assert (session.run_dir / "tokenizer.json").read_text() == (pre_run / "tokenizer.json").read_text()


def load_tok(run: Path) -> dict:
    from vlbench.data.tokenizer import WordPieceTokenizer

    return WordPieceTokenizer.load(run / "tokenizer.json").tokenizer.get_vocab()


def test_train_with_init_records_the_lineage(pre_run: Path, small_world: Path, tmp_path: Path):
    run = train("lxmert", "gqa", data_dir=str(small_world), out=tmp_path, overrides=FINE,
                init=pre_run / "checkpoints" / "best")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["init"]["run"] == str(pre_run) and record["init"]["task"] == "pretrain"
    assert record["objectives"] == ["mask_lm", "mask_obj", "matched", "qa"]
    assert record["init"]["answers_transferred"] > 0
    assert record["config"]["model"]["vocab_size"] == json.loads(
        (pre_run / "run.json").read_text())["config"]["model"]["vocab_size"]
    # a fine-tuned QA run is a checkpoint too: its whole answer head carries over
    session = new_session("lxmert", "gqa", data_dir=str(small_world), out=tmp_path / "again", overrides=FINE,
                          say=lambda _: None)
    lineage = apply_init(session, run, say=lambda _: None)
    assert lineage["task"] == "gqa" and lineage["objectives"] == []
    assert lineage["answers_transferred"] == lineage["answers_total"] == len(session.task.answers)
    assert lineage["answer_bias_shift"] == 0.0  # a fine-tuned head is already a sigmoid head
    state = load_file(str(run / "checkpoints" / "best" / "model.safetensors"))
    assert torch.equal(session.model.heads["qa"].logit_fc[3].weight, state["heads.qa.logit_fc.3.weight"])


def test_bad_init_is_a_one_line_checkpoint_error(small_world: Path, tmp_path: Path):
    session = new_session("lxmert", "gqa", data_dir=str(small_world), out=tmp_path, overrides=FINE,
                          say=lambda _: None)
    with pytest.raises(CheckpointError, match="no such run"):
        apply_init(session, tmp_path / "missing", say=lambda _: None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a vlbench checkpoint"):
        apply_init(session, empty, say=lambda _: None)


@pytest.mark.skipif("set_epoch" not in inspect.getsource(Trainer),
                    reason="the trainer does not call Task.set_epoch at epoch starts")
def test_qa_from_epoch_schedule_end_to_end(small_world: Path, tmp_path: Path):
    run = _pretrain(small_world, tmp_path, "--set", "train.epochs=2", "--set", "task.qa_from_epoch=1",
                    "--set", "train.log_every=1")
    steps = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    qa = {s["epoch"]: s["losses"]["qa"] for s in steps if "losses" in s}
    assert qa[0] == 0.0 and qa[1] > 0.0


# -- resume: masks come from the global RNG, which the trainer checkpoints ------------------------

RESUME = ["--set", "train.epochs=2", "--set", "train.train_limit=640", "--set", "train.batch_size=32",
          "--set", "train.save_every=3", "--set", "train.eval_limit=64", "--set", "train.log_every=1"]


def _cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MKL_CBWR="AUTO,STRICT", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "vlbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _last(run: Path) -> dict | None:
    try:
        return json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_killed_pretraining_resumes_to_the_same_weights(small_world: Path, tmp_path: Path):
    straight = _cli(["pretrain", "--data", str(small_world), "--seed", "2", "--out", str(tmp_path / "a"), *RESUME])
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err
    proc = _cli(["pretrain", "--data", str(small_world), "--seed", "2", "--out", str(tmp_path / "b"), *RESUME])
    deadline, state = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        runs = list((tmp_path / "b").glob("*/run.json"))
        state = _last(runs[0].parent) if runs else None
        if state and state["epoch"] == 0 and state["step"] >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.communicate(timeout=120)
    assert state is not None and state["epoch"] == 0, "the run was not caught mid-epoch"
    (killed,) = [p.parent for p in (tmp_path / "b").glob("*/run.json")]
    resumed = _cli(["train", "--resume", str(killed)])
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    (done,) = [p.parent for p in (tmp_path / "a").glob("*/run.json")]
    a = load_file(str(done / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(killed / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((r / "run.json").read_text()) for r in (done, killed))
    assert rb["status"] == "finished" and rb["metrics"] == ra["metrics"]
