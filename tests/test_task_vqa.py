"""The VQA v2 task plugin on tiny files in the official and LXMERT formats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vlbench.data.features import FeatureStore
from vlbench.data.source import DataSource
from vlbench.data.tokenizer import WordPieceTokenizer
from vlbench.data.tsv import RegionRecord, write_tsv
from vlbench.errors import ConfigError, DataError
from vlbench.models.lxmert.config import LxmertConfig
from vlbench.models.lxmert.modeling import LxmertModel
from vlbench.models.lxmert.spec import SPEC
from vlbench.tasks.vqa.scoring import score_vqa, score_vqa_files, vqa_soft_targets
from vlbench.tasks.vqa.task import VQAConfig, VQATask, vqa_answer_vocab

FEAT_DIM = 8

# (image_id, question_id, question, question_type, answer_type, multiple_choice_answer, answers)
TRAIN = [
    (
        1,
        10,
        "What color is the cube?",
        "what color is the",
        "other",
        "red",
        ["red"] * 6 + ["blue"] * 3 + ["green"],
    ),
    (1, 11, "Is there a sphere?", "is there a", "yes/no", "yes", ["yes"] * 10),
    (
        2,
        20,
        "What color is the cube?",
        "what color is the",
        "other",
        "blue",
        ["blue"] * 8 + ["Blue."] * 2,
    ),
    (
        2,
        21,
        "How many spheres are there?",
        "how many",
        "number",
        "2",
        ["2"] * 5 + ["two"] * 3 + ["3"] * 2,
    ),
    (3, 30, "What color is the cube?", "what color is the", "other", "red", ["red"] * 10),
    (3, 31, "Is there a sphere?", "is there a", "yes/no", "no", ["no"] * 9 + ["yes"]),
    (
        4,
        40,
        "What color is the cube?",
        "what color is the",
        "other",
        "red",
        ["red"] * 4 + ["green"] * 3 + ["blue"] * 3,
    ),
    (4, 41, "How many spheres are there?", "how many", "number", "2", ["2"] * 10),
]
MINIVAL = [
    (
        100,
        1000,
        "What color is the cube?",
        "what color is the",
        "other",
        "blue",
        ["red"] * 2 + ["blue"] * 8,
    ),
    (100, 1001, "Is there a sphere?", "is there a", "yes/no", "yes", ["yes"] * 7 + ["no"] * 3),
    (101, 1010, "How many spheres are there?", "how many", "number", "2", ["3"] * 3 + ["2"] * 7),
]


def coco(subtype: str, image_id: int) -> str:
    return f"COCO_{subtype}_{image_id:012d}"


def write_official(root: Path, subtype: str, rows: list) -> None:
    (root / "vqa").mkdir(parents=True, exist_ok=True)
    questions = {
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "data_subtype": subtype,
        "questions": [{"image_id": r[0], "question": r[2], "question_id": r[1]} for r in rows],
    }
    annotations = {
        "data_subtype": subtype,
        "annotations": [
            {
                "question_type": r[3],
                "multiple_choice_answer": r[5],
                "image_id": r[0],
                "answer_type": r[4],
                "question_id": r[1],
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                    for j, a in enumerate(r[6])
                ],
            }
            for r in rows
        ],
    }
    (root / f"vqa/v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(json.dumps(questions))
    (root / f"vqa/v2_mscoco_{subtype}_annotations.json").write_text(json.dumps(annotations))


def write_lxmert(root: Path, name: str, coco_split: str, rows: list) -> None:
    (root / "vqa/lxmert").mkdir(parents=True, exist_ok=True)
    data = [
        {
            "answer_type": r[4],
            "img_id": coco(coco_split, r[0]),
            "label": vqa_soft_targets(r[6]),
            "question_id": r[1],
            "question_type": r[3],
            "sent": r[2],
        }
        for r in rows
    ]
    (root / f"vqa/lxmert/{name}.json").write_text(json.dumps(data))


def write_features(path: Path, ids: list[str]) -> Path:
    rng = np.random.default_rng(0)

    def record(img_id: str) -> RegionRecord:
        n = 3
        boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 30], [1, 2, 30, 40]], dtype=np.float32)
        return RegionRecord(
            img_id,
            40,
            30,
            np.arange(n),
            np.ones(n, np.float32),
            np.arange(n),
            np.ones(n, np.float32),
            boxes,
            rng.normal(size=(n, FEAT_DIM)).astype(np.float32),
        )

    write_tsv(path, (record(i) for i in ids))
    return path


IMAGES = [coco("train2014", i) for i in (1, 2, 3, 4)] + [coco("val2014", i) for i in (100, 101)]


@pytest.fixture
def world(tmp_path: Path) -> Path:
    write_official(tmp_path, "train2014", TRAIN)
    write_official(tmp_path, "minival", MINIVAL)
    write_features(tmp_path / "features/tiny_obj36.tsv", IMAGES)
    return tmp_path


def make_task(root: Path, tsv: Path | None = None, state: dict | None = None, **config) -> VQATask:
    task = VQATask(
        VQAConfig(**{"min_answer_count": 1, **config}), DataSource(root, synthetic=False)
    )
    tokenizer = WordPieceTokenizer.train(task.training_texts(), vocab_size=80)
    store = FeatureStore.open([tsv or root / "features/tiny_obj36.tsv"], root / "cache")
    task.setup(tokenizer, store, max_boxes=4, state=state)
    return task


def tiny_backbone(task: VQATask) -> LxmertModel:
    torch.manual_seed(0)
    cfg = LxmertConfig.from_preset(
        "tiny",
        vocab_size=task.tokenizer.vocab_size,
        visual_feat_dim=FEAT_DIM,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return LxmertModel(cfg)


def test_official_examples_targets_and_image_ids(world: Path):
    task = make_task(world)
    train = task.examples("train")
    assert [e.qid for e in train] == [str(r[1]) for r in TRAIN]
    first = train[0]
    assert first.img_id == "COCO_train2014_000000000001"
    assert first.question == "What color is the cube?"
    assert first.qtype == "what color is the"
    assert first.label == {"red": 1.0, "blue": 0.9, "green": 0.3}
    # official normalisation: "Blue." is "blue", "two" is "2"
    assert train[2].label == {"blue": 1.0}
    assert train[3].label == {"2": 1.0, "3": 0.6}
    minival = task.examples("minival")
    assert [e.img_id for e in minival] == [coco("val2014", 100)] * 2 + [coco("val2014", 101)]
    assert task.image_ids() == set(IMAGES)


def test_answer_vocabulary_counts_majority_answers(world: Path):
    assert make_task(world).answers == ["red", "2", "blue", "no", "yes"]
    assert make_task(world, min_answer_count=2).answers == ["red", "2"]
    with pytest.raises(DataError, match="min_answer_count"):
        make_task(world, min_answer_count=4)
    # LXMERT's table counts over train + val: the minival majority answers join in
    both = make_task(world, answer_splits=["train", "minival"], min_answer_count=2)
    assert both.answers == ["2", "red", "blue", "yes"]


def test_answer_table_and_saved_state(world: Path):
    (world / "vqa/lxmert").mkdir()
    (world / "vqa/lxmert/trainval_ans2label.json").write_text(
        json.dumps({"yes": 1, "no": 0, "red": 2})
    )
    task = make_task(world, answer_vocab="vqa/lxmert/trainval_ans2label.json")
    assert task.answers == ["no", "yes", "red"]
    assert make_task(world, state=task.state()).answers == ["no", "yes", "red"]
    (world / "bad.json").write_text(json.dumps({"yes": 3}))
    with pytest.raises(DataError, match="bad.json"):
        make_task(world, answer_vocab="bad.json")


def test_lxmert_format_matches_official(world: Path, tmp_path_factory):
    lx = tmp_path_factory.mktemp("lxmert")
    write_lxmert(lx, "train", "train2014", TRAIN)
    write_lxmert(lx, "minival", "val2014", MINIVAL)
    official, lxmert = make_task(world), make_task(lx, tsv=world / "features/tiny_obj36.tsv")
    for split in ("train", "minival"):
        a, b = official.examples(split), lxmert.examples(split)
        assert [(e.qid, e.img_id, e.question, e.label, e.qtype) for e in a] == [
            (e.qid, e.img_id, e.question, e.label, e.qtype) for e in b
        ]
    assert lxmert.answers == official.answers
    # LXMERT's evaluator: the label score of the predicted answer
    metrics, records = lxmert.score("minival", {"1000": "blue", "1001": "no", "1010": "7"})
    assert metrics["accuracy"] == pytest.approx(round(100 * (1.0 + 0.9 + 0.0) / 3, 2))
    assert metrics["per_answer_type"] == {"other": 100.0, "yes/no": 90.0, "number": 0.0}
    assert records[0]["answers"][0] == "blue" and records[1]["score"] == 0.9


def test_format_choice_and_joined_splits(world: Path):
    write_lxmert(world, "nominival", "val2014", MINIVAL[:1])
    task = make_task(world, train_split="train+nominival")
    assert [e.qid for e in task.examples("train+nominival")] == [str(r[1]) for r in TRAIN] + [
        "1000"
    ]
    assert task._format("minival") == "official"  # both formats there: the official files win
    with pytest.raises(DataError, match="val2014"):
        make_task(world, eval_splits=["val"]).examples("val")
    with pytest.raises(DataError, match="lxmert/minival.json"):
        make_task(world, format="lxmert", train_split="nominival").examples("minival")


def test_image_id_fallback_and_format(world: Path, tmp_path: Path):
    plain = write_features(tmp_path / "plain.tsv", ["1", "2", "3", "4", "100", "101"])
    task = make_task(world, tsv=plain)
    assert task.examples("train")[0].img_id == "1"  # no COCO_... id in the store: str(image_id)
    task = make_task(world, image_id_format="{coco_split}/{image_id}")
    assert task.examples("minival")[0].img_id == "val2014/100"
    with pytest.raises(ConfigError, match="image_id_format"):
        make_task(world, image_id_format="{imgid}")


def test_collate_model_and_loss(world: Path):
    task = make_task(world)
    batch = task.collate(task.examples("train")[:4])
    b, t = batch["input_ids"].shape
    assert b == 4 and t <= 20
    assert batch["visual_feats"].shape == (4, 4, FEAT_DIM)
    assert batch["visual_pos"].shape == (4, 4, 4)
    assert batch["visual_attention_mask"].tolist()[0] == [1, 1, 1, 0]  # 3 regions, padded to 4
    assert batch["target"].shape == (4, len(task.answers))
    red, blue = task.answer_index["red"], task.answer_index["blue"]
    assert batch["target"][0, red] == 1.0 and batch["target"][0, blue] == pytest.approx(0.9)
    assert batch["target"][1].sum() == 1.0  # "yes" only
    model = task.build_model(tiny_backbone(task), SPEC)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        logits = model(batch)
        assert logits.shape == (4, len(task.answers))
        loss = task.loss(logits, batch)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 0.75 * losses[0]  # soft targets (0.9, 0.3, 0.6) keep the floor above 0
    preds = task.predict(logits, batch)
    assert [qid for qid, _ in preds] == ["10", "11", "20", "21"]
    assert all(p in task.answers for _, p in preds)


def test_score_matches_official_scorer_and_predictions_round_trip(world: Path, tmp_path: Path):
    task = make_task(world)
    preds = {"1000": "red", "1001": "yes", "1010": "two"}
    path = task.write_predictions(preds, tmp_path / "minival.json")
    rows = json.loads(path.read_text())
    assert rows == [
        {"question_id": 1000, "answer": "red"},
        {"question_id": 1001, "answer": "yes"},
        {"question_id": 1010, "answer": "two"},
    ]
    assert task.read_predictions(path) == preds
    metrics, records = task.score("minival", preds)
    official = score_vqa_files(
        world / "vqa/v2_mscoco_minival_annotations.json",
        world / "vqa/v2_OpenEnded_mscoco_minival_questions.json",
        path,
    )
    official.pop("per_question")
    assert metrics == official
    assert metrics["accuracy"] == pytest.approx(round(100 * (0.6 + 1.0 + 1.0) / 3, 2))
    assert set(metrics) == {"accuracy", "per_answer_type", "per_question_type"}
    assert records[0] == {
        "id": "1000",
        "score": pytest.approx(0.6),
        "prediction": "red",
        "answers": ["red"] * 2 + ["blue"] * 8,
        "question": "What color is the cube?",
        "types": {"answer_type": "other", "question_type": "what color is the"},
    }
    # a subset (train.eval_limit) is scored against its own annotations
    sub, _ = task.score("minival", {"1001": "no"})
    anns = json.loads((world / "vqa/v2_mscoco_minival_annotations.json").read_text())["annotations"]
    assert (
        sub["accuracy"]
        == score_vqa({"annotations": anns[1:2]}, None, [{"question_id": 1001, "answer": "no"}])[
            "accuracy"
        ]
    )
    with pytest.raises(DataError, match="not in the split"):
        task.score("minival", {"999": "red"})


def test_prior_baseline(world: Path):
    task = make_task(world)
    assert task.prior_predictions("minival") == {"1000": "red", "1001": "yes", "1010": "2"}
    prior = task.baselines("minival")["prior"]
    assert prior == {"accuracy": pytest.approx(round(100 * (0.6 + 1.0 + 1.0) / 3, 2))}


def test_vocab_helper_uses_best_label_without_majority_answer():
    from vlbench.tasks.qa import QAExample

    exs = [QAExample("1", "i", "q", {"a": 1.0, "b": 0.3}), QAExample("2", "i", "q", {"b": 0.9})]
    assert vqa_answer_vocab(exs, 1) == ["a", "b"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda q, a: a["annotations"][1].pop("answers"), "annotations\\[1\\] lacks 'answers'"),
        (lambda q, a: a["annotations"][0].update(answers=[{"text": "x"}]), "annotations\\[0\\]"),
        (lambda q, a: q["questions"][2].pop("image_id"), "questions\\[2\\] lacks 'image_id'"),
        (lambda q, a: a["annotations"].pop(0), "no annotation for question_id 10"),
        (lambda q, a: q.pop("questions"), "'questions' list"),
    ],
)
def test_malformed_official_files(world: Path, mutate, message):
    qpath = world / "vqa/v2_OpenEnded_mscoco_train2014_questions.json"
    apath = world / "vqa/v2_mscoco_train2014_annotations.json"
    questions, annotations = json.loads(qpath.read_text()), json.loads(apath.read_text())
    mutate(questions, annotations)
    qpath.write_text(json.dumps(questions))
    apath.write_text(json.dumps(annotations))
    task = VQATask(VQAConfig(), DataSource(world, synthetic=False))
    with pytest.raises(DataError, match=message) as info:
        list(task.training_texts())
    assert "train2014" in str(info.value)  # names the file


def test_malformed_lxmert_file(tmp_path: Path):
    write_lxmert(tmp_path, "train", "train2014", TRAIN)
    data = json.loads((tmp_path / "vqa/lxmert/train.json").read_text())
    del data[3]["sent"]
    (tmp_path / "vqa/lxmert/train.json").write_text(json.dumps(data))
    task = VQATask(VQAConfig(), DataSource(tmp_path, synthetic=False))
    with pytest.raises(DataError, match=r"train.json: entry 3 .*'sent'"):
        list(task.training_texts())


def test_annotations_without_the_ten_answers_are_refused(world: Path):
    path = world / "vqa/v2_mscoco_train2014_annotations.json"
    data = json.loads(path.read_text())
    data["annotations"][2]["answers"] = data["annotations"][2]["answers"][:4]
    path.write_text(json.dumps(data))
    task = VQATask(VQAConfig(), DataSource(world, synthetic=False))
    with pytest.raises(DataError, match=re.escape(f"{path}: annotations[2] (question_id 20): "
                                                  "'answers' holds 4 answers")):
        task.read_split("train")


def test_stored_predictions_must_be_answer_strings(tmp_path: Path):
    path = tmp_path / "minival.json"
    path.write_text(json.dumps([{"question_id": 1000, "answer": "blue"},
                                {"question_id": 1001, "answer": 2}]))
    task = VQATask(VQAConfig(), DataSource(tmp_path, synthetic=False))
    with pytest.raises(DataError, match=r"results\[1\] \(question_id 1001\): 'answer' is 2"):
        task.read_predictions(path)
