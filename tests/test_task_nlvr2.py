"""The NLVR2 task plugin on tiny files in the official and LXMERT formats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vlbench.config import build_config
from vlbench.data.features import FeatureStore
from vlbench.data.source import DataSource
from vlbench.data.tokenizer import WordPieceTokenizer
from vlbench.data.tsv import RegionRecord, write_tsv
from vlbench.engine.scoring import rescore_run
from vlbench.engine.task import default_layers
from vlbench.engine.trainer import epoch_order
from vlbench.errors import ConfigError, DataError
from vlbench.models.lxmert.config import LxmertConfig
from vlbench.models.lxmert.modeling import LxmertModel
from vlbench.models.lxmert.spec import SPEC
from vlbench.results.questions import QuestionTable, parse_metric_units, unit_values
from vlbench.tasks.nlvr2.scoring import score_nlvr2_files, sentence_group
from vlbench.tasks.nlvr2.task import NLVR2Config, NLVR2Model, NLVR2Task

FEAT_DIM = 8

# (identifier, sentence, label)
TRAIN = [
    ("train-0-0-0", "Both images contain a red cube.", "True"),
    ("train-0-1-0", "Both images contain a red cube.", "False"),
    ("train-1-0-0", "There are exactly two spheres in total.", "True"),
    ("train-1-1-0", "There are exactly two spheres in total.", "True"),
]
DEV = [
    ("dev-0-0-0", "Exactly one image contains a cube.", "True"),
    ("dev-0-1-0", "Exactly one image contains a cube.", "False"),
    ("dev-1-0-0", "The left image contains more spheres than the right image.", "False"),
]


def images(rows: list) -> list[str]:
    return [f"{r[0].rsplit('-', 1)[0]}-img{side}" for r in rows for side in (0, 1)]


def official_line(row: tuple) -> dict:
    ident, sentence, label = row
    return {
        "validation": {},
        "sentence": sentence,
        "left_url": "x",
        "writer": "w",
        "label": label,
        "right_url": "y",
        "synset": "cube",
        "query": "cube 0",
        "identifier": ident,
        "extra_validations": {},
    }


def write_official(root: Path, split: str, rows: list) -> Path:
    path = root / f"nlvr2/{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(official_line(r)) + "\n" for r in rows))
    return path


def write_lxmert(path: Path, split: str, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [
        {
            "identifier": r[0],
            "img0": images([r])[0],
            "img1": images([r])[1],
            "label": int(r[2] == "True"),
            "sent": r[1],
            "uid": f"nlvr2_{split}_{i}",
        }
        for i, r in enumerate(rows)
    ]
    path.write_text(json.dumps(data))


def write_features(path: Path, ids: list[str]) -> Path:
    rng = np.random.default_rng(0)

    def record(img_id: str) -> RegionRecord:
        n = int(rng.integers(2, 4))
        boxes = np.tile(np.array([[0, 0, 10, 10]], dtype=np.float32), (n, 1))
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


@pytest.fixture
def world(tmp_path: Path) -> Path:
    write_official(tmp_path, "train", TRAIN)
    write_official(tmp_path, "dev", DEV)
    write_features(tmp_path / "features/tiny_obj36.tsv", images(TRAIN + DEV))
    return tmp_path


def make_task(root: Path, tsv: Path | None = None, **config) -> NLVR2Task:
    task = NLVR2Task(
        NLVR2Config(**{"eval_splits": ["dev"], **config}), DataSource(root, synthetic=False)
    )
    tokenizer = WordPieceTokenizer.train(task.training_texts(), vocab_size=80)
    store = FeatureStore.open([tsv or root / "features/tiny_obj36.tsv"], root / "cache")
    task.setup(tokenizer, store, max_boxes=4)
    return task


def tiny_model(task: NLVR2Task) -> NLVR2Model:
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
    return task.build_model(LxmertModel(cfg), SPEC)


def fields(examples) -> list[tuple]:
    return [(e.identifier, e.sentence, e.img0, e.img1, e.label) for e in examples]


def test_official_examples(world: Path):
    task = make_task(world)
    dev = task.examples("dev")
    assert fields(dev)[0] == ("dev-0-0-0", DEV[0][1], "dev-0-0-img0", "dev-0-0-img1", "True")
    assert [e.label for e in task.examples("train")] == ["True", "False", "True", "True"]
    assert task.image_ids() == set(images(TRAIN + DEV))
    assert task.majority == "True"


def test_lxmert_format_matches_official(world: Path, tmp_path_factory):
    lx = tmp_path_factory.mktemp("lxmert")
    write_lxmert(lx / "nlvr2/lxmert/train.json", "train", TRAIN)
    write_lxmert(lx / "nlvr2/lxmert/valid.json", "valid", DEV)  # LXMERT calls dev "valid"
    task = make_task(lx, tsv=world / "features/tiny_obj36.tsv")
    official = make_task(world)
    for split in ("train", "dev"):
        assert fields(task.examples(split)) == fields(official.examples(split))
    # LXMERT's files dropped where the official ones go are recognised by their JSON list
    sniffed = tmp_path_factory.mktemp("sniffed")
    write_lxmert(sniffed / "nlvr2/train.json", "train", TRAIN)
    write_lxmert(sniffed / "nlvr2/dev.json", "valid", DEV)
    assert fields(
        make_task(sniffed, tsv=world / "features/tiny_obj36.tsv").examples("dev")
    ) == fields(official.examples("dev"))
    with pytest.raises(DataError, match="lxmert/valid.json"):
        NLVR2Task(NLVR2Config(format="lxmert"), DataSource(world, synthetic=False)).examples("dev")


def test_image_id_format(world: Path, tmp_path: Path):
    ids = [f"{i.split('-')[0]}/{i}" for i in images(TRAIN + DEV)]
    task = make_task(
        world,
        tsv=write_features(tmp_path / "f.tsv", ids),
        image_id_format="{split}/{pair}-img{side}",
    )
    assert (task.examples("dev")[2].img0, task.examples("dev")[2].img1) == (
        "dev/dev-1-0-img0",
        "dev/dev-1-0-img1",
    )
    with pytest.raises(ConfigError, match="image_id_format"):
        NLVR2Task(
            NLVR2Config(image_id_format="{image}"), DataSource(world, synthetic=False)
        ).examples("dev")


def test_collate_pairs_each_sentence_with_both_images(world: Path):
    task = make_task(world)
    exs = task.examples("train")[:3]
    batch = task.collate(exs)
    assert batch["input_ids"].shape[0] == 6
    assert torch.equal(batch["input_ids"][0], batch["input_ids"][1])
    assert torch.equal(batch["input_ids"][4], batch["input_ids"][5])
    assert not torch.equal(batch["input_ids"][1], batch["input_ids"][4])
    assert batch["visual_feats"].shape == (6, 4, FEAT_DIM)
    assert batch["visual_pos"].shape == (6, 4, 4)
    feats, _, _ = task.features.batch(["train-0-1-img0", "train-0-1-img1"], 4)
    assert np.array_equal(batch["visual_feats"][2:4].numpy(), feats)
    assert batch["target"].tolist() == [1, 0, 1]
    assert batch["ids"] == ["train-0-0-0", "train-0-1-0", "train-1-0-0"]


def test_model_pools_each_image_and_uses_lxmert_head_names(world: Path):
    task = make_task(world)
    model = tiny_model(task).eval()
    keys = model.state_dict()
    h = model.backbone.config.hidden_size
    assert keys["heads.nlvr2.logit_fc.0.weight"].shape == (2 * h, 2 * h)
    assert keys["heads.nlvr2.logit_fc.2.weight"].shape == (2 * h,)  # LayerNorm
    assert keys["heads.nlvr2.logit_fc.3.weight"].shape == (2, 2 * h)
    assert all(k.startswith(("backbone.", "heads.nlvr2.logit_fc.")) for k in keys)
    batch = task.collate(task.examples("dev"))
    with torch.no_grad():
        logits = model(batch)
        pooled = model.backbone(
            **{
                k: batch[k]
                for k in (
                    "input_ids",
                    "attention_mask",
                    "token_type_ids",
                    "visual_feats",
                    "visual_pos",
                    "visual_attention_mask",
                )
            }
        ).pooled
        manual = model.heads["nlvr2"].logit_fc(torch.cat([pooled[0::2], pooled[1::2]], dim=-1))
    assert logits.shape == (3, 2)
    assert not torch.allclose(logits[0], logits[1])  # same sentence, other images
    assert torch.allclose(logits, manual, atol=1e-6)
    assert [
        p for _, p in task.predict(torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.0, 3.0]]), batch)
    ] == ["True", "False", "True"]


def test_loss_finite_and_decreasing(world: Path):
    task = make_task(world)
    model = tiny_model(task)
    batch = task.collate(task.examples("train"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = task.loss(model(batch), batch)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_score_matches_official_scorer_and_predictions_round_trip(world: Path, tmp_path: Path):
    task = make_task(world)
    preds = {"dev-0-0-0": "True", "dev-0-1-0": "True", "dev-1-0-0": "False"}
    path = task.write_predictions(preds, tmp_path / "dev.csv")
    assert path.read_text() == "dev-0-0-0,True\ndev-0-1-0,True\ndev-1-0-0,False\n"  # no header
    assert task.read_predictions(path) == preds
    metrics, records = task.score("dev", preds)
    assert metrics == score_nlvr2_files(world / "nlvr2/dev.json", path)
    assert metrics == {"accuracy": pytest.approx(200 / 3), "consistency": 50.0}
    assert records[1] == {
        "id": "dev-0-1-0",
        "score": 0.0,
        "prediction": "True",
        "answer": "False",
        "question": DEV[1][1],
        "types": {},
        "group": "dev-0--0",  # the sentence: the unit of the official consistency
    }
    assert task.score("dev", {"dev-1-0-0": "false"})[0] == {"accuracy": 100.0, "consistency": 100.0}
    with pytest.raises(DataError, match="not in the split"):
        task.score("dev", {"dev-9-0-0": "True"})


def test_records_rebuild_the_official_metrics_through_the_declared_units(world: Path):
    """What the results layer reads (rows + metric_units) gives the official numbers back."""
    task = make_task(world)
    preds = {"dev-0-0-0": "True", "dev-0-1-0": "False", "dev-1-0-0": "True"}
    metrics, records = task.score("dev", preds)
    assert [r["group"] for r in records] == [sentence_group(i) for i in preds]
    table = QuestionTable("nlvr2", "dev", [r["id"] for r in records],
                          np.array([[r["score"] for r in records]]), [list(preds.values())],
                          records, parse_metric_units(NLVR2Task.metric_units, "NLVR2Task"))
    for name in NLVR2Task.metric_units:
        assert 100 * unit_values(table, name).mean() == pytest.approx(metrics[name]), name
    assert unit_values(table, "consistency").shape == (1, 2)  # two sentences


def test_rescore_brings_a_record_of_an_earlier_release_up_to_date(world: Path, tmp_path: Path):
    """Rescoring rewrites the rows (now with their group) and adds the task's current
    metric_units, category_kinds and baselines, and the questions' fingerprint, to run.json,
    keeping the rest of the record."""
    task = make_task(world)
    run = tmp_path / "run"
    preds = {"dev-0-0-0": "True", "dev-0-1-0": "False", "dev-1-0-0": "True"}
    (run / "predictions").mkdir(parents=True)
    task.write_predictions(preds, run / "predictions" / "dev.csv")
    cfg = build_config(LxmertConfig, NLVR2Config(eval_splits=["dev"]), [])
    record = {"run_id": "old", "task": "nlvr2", "model": "lxmert", "status": "finished",
              "config": cfg.to_dict(), "data": {"source": str(world), "synthetic": False},
              "eval_splits": ["dev"], "metrics": {"dev": {"accuracy": 0.0}}, "seed": 3}
    (run / "run.json").write_text(json.dumps(record))
    metrics = rescore_run(run)
    assert metrics["dev"] == task.score("dev", preds)[0]
    after = json.loads((run / "run.json").read_text())
    assert after["metric_units"] == NLVR2Task.metric_units and after["category_kinds"] == []
    assert set(after["baselines"]) == {"prior", "text_only"} and set(after["baselines"]["prior"]) == {"dev"}
    new_keys = ("metric_units", "category_kinds", "baselines")
    assert after["data"].pop("questions").startswith("sha256:")
    assert {k: v for k, v in after.items() if k not in new_keys} == record
    lines = (run / "per_question" / "dev.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["group"] for r in rows] == ["dev-0--0", "dev-0--0", "dev-1--0"]


def test_prior_baseline(world: Path):
    # majority training label "True": right on dev-0-0-0 only; no sentence group all right
    baselines = make_task(world).baselines("dev")
    assert baselines["prior"] == {"accuracy": pytest.approx(100 / 3), "consistency": 0.0}
    # the sentence-only classifier is scored the same way (each of its answers a label)
    assert set(baselines["text_only"]) == {"accuracy", "consistency"}


def test_unlabelled_split_trains_nothing_and_cannot_be_scored(world: Path):
    (world / "nlvr2/test1.json").write_text(
        "".join(
            json.dumps({k: v for k, v in official_line(r).items() if k != "label"}) + "\n"
            for r in DEV
        )
    )
    task = make_task(
        world, eval_splits=["test1"], tsv=write_features(world / "all.tsv", images(TRAIN + DEV))
    )
    batch = task.collate(task.examples("test1"))
    assert batch["target"].tolist() == [-1, -1, -1]
    with pytest.raises(DataError, match="no label"):
        task.score("test1", {"dev-0-0-0": "True"})


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"identifier": "dev-0-0-0", "label": "True"}', r"dev.json:2: .*'sentence'"),
        (
            '{"identifier": "dev-0-0-0", "sentence": "s", "label": "yes"}',
            r"dev.json:2: key 'label'",
        ),
        (
            '{"identifier": "dev-0-0", "sentence": "s", "label": "True"}',
            r"dev.json:2: identifier 'dev-0-0'",
        ),
        ('{"identifier": "dev-0-0-0", "sentence": ', r"dev.json:2: malformed JSON"),
    ],
)
def test_malformed_official_file(world: Path, line: str, message: str):
    path = world / "nlvr2/dev.json"
    path.write_text(json.dumps(official_line(DEV[0])) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        NLVR2Task(NLVR2Config(), DataSource(world, synthetic=False)).examples("dev")


def test_malformed_lxmert_file_and_missing_split(tmp_path: Path):
    write_lxmert(tmp_path / "nlvr2/lxmert/train.json", "train", TRAIN)
    data = json.loads((tmp_path / "nlvr2/lxmert/train.json").read_text())
    del data[2]["img1"]
    (tmp_path / "nlvr2/lxmert/train.json").write_text(json.dumps(data))
    task = NLVR2Task(NLVR2Config(), DataSource(tmp_path, synthetic=False))
    with pytest.raises(DataError, match=r"train.json: entry 2: .*'img1'"):
        task.examples("train")
    with pytest.raises(DataError, match="NLVR2 split 'dev'"):
        task.examples("dev")


def test_sentence_batches_group_the_pairs_of_each_sentence(world: Path):
    shuffled = make_task(world)
    assert shuffled.batch_groups(shuffled.examples("train")) is None
    task = make_task(world, sentence_batches=True)
    groups = task.batch_groups(task.examples("train"))
    assert groups == ["train-0--0", "train-0--0", "train-1--0", "train-1--0"]


@pytest.mark.parametrize("synthetic", [True, False])
def test_sentence_batches_are_the_synthetic_default_only(tmp_path: Path, synthetic: bool):
    data = DataSource(tmp_path, synthetic=synthetic)
    cfg = build_config(LxmertConfig, NLVR2Config(), default_layers(NLVR2Task, data))
    # the synthetic recipe's rate (7e-4) is lowered for NLVR2; real data keeps LXMERT's
    assert cfg.task.sentence_batches is synthetic
    assert cfg.train.lr == (3e-4 if synthetic else 5e-5)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_grouped_epoch_order_keeps_groups_contiguous(seed: int):
    rng = np.random.default_rng(seed)
    groups = [f"g{int(k)}" for k in rng.integers(0, 40, size=150)]  # interleaved, uneven sizes
    order = epoch_order(len(groups), seed, 3, groups)
    assert sorted(order) == list(range(len(groups)))
    runs = [groups[i] for i in order]
    changes = [k for a, k in zip(runs, runs[1:], strict=False) if k != a]
    assert len(changes) + 1 == len(set(groups))  # each group is one contiguous run
    assert order == epoch_order(len(groups), seed, 3, groups)  # (seed, epoch) alone decide
    assert order != epoch_order(len(groups), seed, 4, groups)


def test_a_byte_that_is_not_utf8_is_reported_at_its_line(world: Path):
    path = world / "nlvr2/dev.json"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"sentence", b"sent\xe9nce", 1)
    path.write_bytes(b"".join(lines))
    task = NLVR2Task(NLVR2Config(eval_splits=["dev"]), DataSource(world, synthetic=False))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2:\d+: not UTF-8 text"):
        task.read_split("dev")


def test_stored_predictions_in_lxmert_numbers_are_refused(tmp_path: Path):
    path = tmp_path / "dev.csv"
    path.write_text("dev-0-0-0,True\ndev-0-1-0,1\n")
    task = NLVR2Task(NLVR2Config(), DataSource(tmp_path, synthetic=False))
    with pytest.raises(DataError, match=r"line 2 \(dev-0-1-0\): prediction '1' is not True or False"):
        task.read_predictions(path)
