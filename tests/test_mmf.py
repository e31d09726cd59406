"""MMF data (imdb .npy + feature LMDB) into vlbench: readers, safety, import, train on it."""

from __future__ import annotations

import collections
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from vlbench.cli import app
from vlbench.data.mmf import (
    LMDBFeatures,
    imdb_questions,
    import_mmf,
    lxmert_label,
    read_imdb,
    region_record,
)
from vlbench.data.tsv import iter_tsv
from vlbench.errors import DataError

lmdb = pytest.importorskip("lmdb")

FEAT_DIM = 2048  # MMF's detectron fc6 / bottom-up features
N_IMAGES = 12
ANSWERS = ["yes", "no", "2", "red"]
VQA_META = {"create_time": "2019-01-01", "dataset_name": "vqa", "version": 1,
            "has_answer": True, "has_gt_layout": False}


# -- builders: files exactly as MMF writes them -----------------------------------------------

def coco_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}"


def features_value(rng: np.random.Generator, n: int = 6, **changes: Any) -> dict[str, Any]:
    """One LMDB value the way MMF's extract_features_vmb.py + lmdb_conversion.py write it."""
    w, h = 640, 480
    x1 = rng.uniform(0, w / 2, n)
    y1 = rng.uniform(0, h / 2, n)
    value = {
        "feature_path": "unused",
        "features": rng.standard_normal((n, FEAT_DIM)).astype(np.float32),
        "bbox": np.stack([x1, y1, x1 + rng.uniform(10, w / 2, n), y1 + rng.uniform(10, h / 2, n)],
                         axis=1).astype(np.float32),
        "num_boxes": n,
        "image_width": w,
        "image_height": h,
        "objects": rng.integers(0, 1600, n),
        "cls_prob": rng.dirichlet(np.ones(1600), n).astype(np.float32),
    }
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None}


def write_lmdb(path: Path, values: dict[bytes, bytes], keys_entry: bool = True) -> Path:
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for key, data in values.items():
            txn.put(key, data)
        if keys_entry:
            txn.put(b"keys", pickle.dumps(list(values)))
    env.close()
    return path


def write_imdb(path: Path, entries: list[Any], meta: dict[str, Any] | None = VQA_META) -> Path:
    items = ([meta] if meta is not None else []) + entries
    np.save(path, np.array(items, dtype=object), allow_pickle=True)
    return path


def vqa_entry(qid: int | None, image: int, answers: list[Any], /, **changes: Any) -> dict[str, Any]:
    """One question as MMF's build_imdb writes it; a change to None drops the field."""
    name = coco_name(image)
    entry = {
        "image_name": name,
        "image_id": image,
        "question_id": qid,
        "feature_path": name + ".npy",
        "question_str": f"what is shown in picture {image} number {qid}?",
        "question_tokens": ["what", "is", "shown"],
        "all_answers": answers,
        "valid_answers": [a for a in answers if a in ANSWERS] or ["<unk>"],
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


@pytest.fixture(scope="module")
def mmf_vqa(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny VQA in MMF's formats: imdb_train/imdb_minival .npy and a COCO feature LMDB."""
    root = tmp_path_factory.mktemp("mmf")
    rng = np.random.default_rng(0)
    image_ids = [9 + 1000 * i for i in range(N_IMAGES)]
    values = {str(i).encode(): features_value(rng) for i in image_ids}  # MMF keys COCO by number
    write_lmdb(root / "trainval.lmdb", {k: pickle.dumps(v) for k, v in values.items()})

    def split(n: int, first_qid: int) -> list[dict[str, Any]]:
        out = []
        for j in range(n):
            image_id = image_ids[j % N_IMAGES]
            majority = ANSWERS[(j // N_IMAGES + image_id) % len(ANSWERS)]
            out.append(vqa_entry(first_qid + j, image_id, [majority] * 7 + ["blue", "two", majority]))
        return out

    train, minival = split(48, 1000), split(16, 5000)
    return {"root": root, "values": values, "train": train, "minival": minival,
            "imdb": {"train": write_imdb(root / "imdb_train2014.npy", train),
                     "minival": write_imdb(root / "imdb_minival2014.npy", minival)},
            "lmdb": root / "trainval.lmdb"}


@pytest.fixture(scope="module")
def imported(mmf_vqa: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "vqa_data"
    result = CliRunner().invoke(app, [
        "data", "import-mmf", "--task", "vqa",
        "--imdb", f"train={mmf_vqa['imdb']['train']}", "--imdb", f"minival={mmf_vqa['imdb']['minival']}",
        "--lmdb", str(mmf_vqa["lmdb"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    return out


# -- import ------------------------------------------------------------------------------------

def test_import_writes_lxmert_tsv_and_json(imported: Path, mmf_vqa: dict[str, Any]):
    rows = {r.img_id: r for r in iter_tsv(imported / "features" / "mmf.tsv")}
    assert set(rows) == {coco_name(int(k)) for k in mmf_vqa["values"]}
    for key, value in mmf_vqa["values"].items():
        rec = rows[coco_name(int(key))]
        assert (rec.img_w, rec.img_h) == (640, 480)
        np.testing.assert_array_equal(rec.features, value["features"])
        np.testing.assert_array_equal(rec.boxes, value["bbox"])  # pixels, as LXMERT's TSV
        np.testing.assert_array_equal(rec.objects_id, value["objects"])
        np.testing.assert_allclose(rec.objects_conf, value["cls_prob"][np.arange(6), value["objects"]])
        assert not rec.attrs_conf.any()

    train = json.loads((imported / "vqa" / "lxmert" / "train.json").read_text())
    first, entry = train[0], mmf_vqa["train"][0]
    assert set(first) == {"question_id", "img_id", "sent", "label"}
    assert first["question_id"] == entry["question_id"] and first["img_id"] == entry["image_name"]
    assert first["sent"] == entry["question_str"]
    majority = entry["all_answers"][0]
    assert first["label"] == {majority: 1.0, "blue": 0.3, "2": 0.3}  # VQA-normalised
    manifest = json.loads((imported / "mmf_import.json").read_text())
    assert manifest["splits"]["minival"]["questions"] == 16 and manifest["features"]["images"] == N_IMAGES


def test_imported_json_is_what_the_vqa_task_reads(imported: Path):
    from vlbench.tasks.vqa.task import read_lxmert_split

    examples = read_lxmert_split(imported / "vqa" / "lxmert" / "minival.json")
    assert len(examples) == 16 and examples[0].img_id.startswith("COCO_train2014_")
    assert max(examples[0].label.values()) == 1.0


def test_train_and_evaluate_on_imported_data(imported: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "train", "--model", "lxmert", "--task", "vqa", "--data", str(imported), "--out", str(runs),
        "--set", "model.preset=tiny", "--set", "train.epochs=1", "--set", "train.train_limit=48",
        "--set", "train.batch_size=16", "--set", "task.min_answer_count=1",
        "--set", "data.vocab_size=200", "--set", "data.max_boxes=6"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    record = json.loads((run / "run.json").read_text())
    assert record["data"]["source"] == str(imported.resolve())
    assert 0 <= record["metrics"]["minival"]["accuracy"] <= 100

    result = CliRunner().invoke(app, ["evaluate", str(run), "--task", "vqa", "--split", "minival",
                                      "--data", str(imported), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["examples"] == 16 and 0 <= out["metrics"]["accuracy"] <= 100


def test_gqa_import_names_splits_as_lxmert(tmp_path: Path):
    rng = np.random.default_rng(1)
    write_lmdb(tmp_path / "gqa.lmdb", {b"2354786": pickle.dumps(features_value(rng, n=3)),
                                       b"n161313": pickle.dumps(features_value(rng, n=4))},
               keys_entry=False)
    entries = [  # MMF's convert_gqa_to_vqa.py: 10 copies of the answer, image_name "<id>jpg"
        {"image_name": f"{img}jpg", "image_id": img, "question_id": qid, "question_str": q,
         "question_tokens": q.split(), "all_answers": [a] * 10, "valid_answers": [a] * 10}
        for img, qid, q, a in [("2354786", "20968379", "Is the sky blue?", "yes"),
                               ("n161313", "07333408", "What is on the table?", "cup")]
    ]
    train = write_imdb(tmp_path / "imdb_train_balanced.npy", entries, meta={"dataset_name": "gqa"})
    val = write_imdb(tmp_path / "imdb_val_balanced.npy", entries[:1], meta={"dataset_name": "gqa"})
    summary = import_mmf("gqa", {"train": train, "val": val}, [tmp_path / "gqa.lmdb"], tmp_path / "out")
    assert summary.splits["val"]["file"] == "gqa/lxmert/valid.json" and summary.images == 2

    from vlbench.data.lxmert_json import read_lxmert_gqa

    rows = read_lxmert_gqa(tmp_path / "out" / "gqa" / "lxmert" / "train.json")
    assert rows[1] == {"img_id": "n161313", "question_id": "07333408",
                       "sent": "What is on the table?", "label": {"cup": 1.0}}
    assert {r.img_id for r in iter_tsv(tmp_path / "out" / "features" / "mmf.tsv")} == {"2354786", "n161313"}


def test_non_empty_out_is_refused_unless_forced(mmf_vqa: dict[str, Any], tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ("vqa", {"minival": mmf_vqa["imdb"]["minival"]}, [mmf_vqa["lmdb"]], out)
    with pytest.raises(DataError, match="not empty.*--force"):
        import_mmf(*args)
    summary = import_mmf(*args, force=True)
    assert summary.splits["minival"]["questions"] == 16 and (out / "notes.txt").read_text() == "mine"


def test_answers_are_keyed_by_the_given_normalisation(tmp_path: Path):
    from vlbench.tasks.vqa.normalize import preprocess_answer  # VQA's official normalisation

    rng = np.random.default_rng(4)
    write_lmdb(tmp_path / "f.lmdb", {b"5": pickle.dumps(features_value(rng, n=2))})
    imdb = write_imdb(tmp_path / "imdb.npy", [vqa_entry(1, 5, ["Two", "2", "two", "2 ", "Three"])])
    import_mmf("vqa", {"train": imdb}, [tmp_path / "f.lmdb"], tmp_path / "out",
               normalise_answer=preprocess_answer)
    [row] = json.loads((tmp_path / "out" / "vqa" / "lxmert" / "train.json").read_text())
    assert row["label"] == {"2": 1.0, "3": 0.3}


def test_cli_rejects_a_malformed_imdb_pair(mmf_vqa: dict[str, Any], tmp_path: Path):
    result = CliRunner().invoke(app, ["data", "import-mmf", "--task", "vqa", "--imdb", "train",
                                      "--lmdb", str(mmf_vqa["lmdb"]), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "SPLIT=FILE.npy" in result.output
    assert not (tmp_path / "o").exists()


def test_older_pickles_and_the_dict_imdb_layout_are_read(tmp_path: Path):
    # protocol 2 (bytes via _codecs.encode, sets as globals), OrderedDict values
    rng = np.random.default_rng(2)
    value = collections.OrderedDict(features_value(rng, n=2, objects=None, cls_prob=None))
    value["extra"] = {1, 2}
    write_lmdb(tmp_path / "old.lmdb", {b"7": pickle.dumps(value, protocol=2)})
    with LMDBFeatures(tmp_path / "old.lmdb") as store:
        assert store.keys() == ["7"]
        rec = store.record("7", "COCO_val2014_000000000007")
    assert rec.num_boxes == 2 and not rec.objects_conf.any()
    # MMF's newer imdb: a 0-d array holding {"metadata", "data"}
    path = tmp_path / "imdb.npy"
    np.save(path, np.array({"metadata": {"version": 2}, "data": [vqa_entry(1, 7, ["yes"] * 10)]},
                           dtype=object), allow_pickle=True)
    imdb = read_imdb(path)
    assert imdb.metadata == {"version": 2}
    [q] = imdb_questions(imdb, "vqa")
    assert q.keys[0] == "7" and lxmert_label(q.answers, "vqa") == {"yes": 1.0}


# -- untrusted pickles -------------------------------------------------------------------------

class TouchFile:
    """A pickle payload that would create ``path`` when unpickled by plain pickle."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux


def test_malicious_lmdb_value_executes_nothing(tmp_path: Path):
    marker = tmp_path / "pwned"
    value = {"features": np.zeros((1, 4), np.float32), "payload": TouchFile(marker)}
    write_lmdb(tmp_path / "evil.lmdb", {b"42": pickle.dumps(value)})
    imdb = write_imdb(tmp_path / "imdb.npy", [vqa_entry(1, 42, ["yes"] * 10)])
    with pytest.raises(DataError) as info:
        import_mmf("vqa", {"train": imdb}, [tmp_path / "evil.lmdb"], tmp_path / "out")
    message = str(info.value)
    assert f"'{SYSTEM}'" in message and "key '42'" in message and "evil.lmdb" in message
    assert "\n" not in message
    assert not marker.exists()
    assert not (tmp_path / "out").exists()  # a failed import leaves no half-filled directory


def test_malicious_imdb_executes_nothing(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = write_imdb(tmp_path / "imdb_evil.npy", [vqa_entry(1, 42, ["yes"] * 10), TouchFile(marker)])
    with pytest.raises(DataError) as info:
        read_imdb(path)
    message = str(info.value)
    assert f"'{SYSTEM}'" in message and "imdb_evil.npy" in message and "\n" not in message
    assert not marker.exists()


# -- bad inputs --------------------------------------------------------------------------------

def _value(**changes: Any) -> dict[str, Any]:
    return features_value(np.random.default_rng(3), n=3, **changes)


BAD_RECORDS = [
    ("missing features", _value(features=None), "'features' is missing"),
    ("features not 2-D", _value(features=np.zeros(3 * FEAT_DIM, np.float32)), "expected 2-D"),
    ("features not numbers", _value(features=np.array([["a"] * 4] * 3)), "expected numbers"),
    ("no regions", _value(features=np.zeros((0, 8), np.float32)), "no regions"),
    ("NaN feature", _value(features=np.full((3, 8), np.nan, np.float32)), "NaN or infinite"),
    ("float64 overflow", _value(features=np.full((3, 8), 1e300)), "NaN or infinite"),
    ("missing boxes", _value(bbox=None), "'bbox' or 'boxes' is missing"),
    ("box count", _value(bbox=np.zeros((2, 4), np.float32)), "has 2 rows but features have 3"),
    ("box width", _value(bbox=np.zeros((3, 5), np.float32)), "expected (3, 4)"),
    ("infinite box", _value(bbox=np.full((3, 4), np.inf, np.float32)), "'bbox' holds NaN"),
    ("missing width", _value(image_width=None), "'image_width' is missing"),
    ("zero height", _value(image_height=0), "'image_height' is 0"),
    ("num_boxes too large", _value(num_boxes=5), "num_boxes is 5 but features hold 3"),
    ("objects shape", _value(objects=np.zeros(2, np.int64)), "'objects' must hold 3"),
    ("cls_prob rows", _value(cls_prob=np.ones((2, 10), np.float32)), "'cls_prob' has 2 rows"),
]


@pytest.mark.parametrize("value,expected", [(v, e) for _, v, e in BAD_RECORDS],
                         ids=[name for name, _, _ in BAD_RECORDS])
def test_bad_feature_records_are_one_line_errors(value: dict[str, Any], expected: str):
    with pytest.raises(DataError) as info:
        region_record(value, "img", "feats.lmdb key 'img'")
    assert expected in str(info.value) and "feats.lmdb key 'img'" in str(info.value)
    assert "\n" not in str(info.value)


def test_boxes_key_is_accepted_and_objects_fall_back_to_cls_prob():
    value = _value(boxes=np.ones((3, 4), np.float32), bbox=None, objects=None)
    rec = region_record(value, "img", "where")
    np.testing.assert_array_equal(rec.objects_id, value["cls_prob"].argmax(1))


BAD_LMDB = [
    ("value not a pickle", {b"1": b"not a pickle at all"}, "not a readable pickle"),
    ("value not a dict", {b"1": pickle.dumps([1, 2, 3])}, "value is list"),
    ("torch tensor global", {b"1": b"ctorch._utils\n_rebuild_tensor_v2\n."},
     "'torch._utils._rebuild_tensor_v2'"),
    ("non-UTF-8 key", {b"\xff\xfe": pickle.dumps(_value())}, "is not UTF-8"),
    ("image not in the LMDB", {b"99": pickle.dumps(_value())}, "missing from the LMDB"),
]


@pytest.mark.parametrize("values,expected", [(v, e) for _, v, e in BAD_LMDB],
                         ids=[name for name, _, _ in BAD_LMDB])
def test_bad_lmdbs_are_one_line_errors(values: dict[bytes, bytes], expected: str, tmp_path: Path):
    write_lmdb(tmp_path / "feats.lmdb", values)
    imdb = write_imdb(tmp_path / "imdb.npy", [vqa_entry(1, 1, ["yes"] * 10)])
    with pytest.raises(DataError) as info:
        import_mmf("vqa", {"train": imdb}, [tmp_path / "feats.lmdb"], tmp_path / "out")
    assert expected in str(info.value) and "feats.lmdb" in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


BAD_IMDBS = [
    ("missing question_id", [vqa_entry(None, 1, ["yes"])], "'question_id' is missing"),
    ("missing text", [vqa_entry(1, 1, ["yes"], question_str=None)], "no question text"),
    ("no image reference", [vqa_entry(1, 1, ["yes"], image_id=None, image_name=None, feature_path=None)],
     "no 'image_id', 'image_name' or 'feature_path'"),
    ("answers not strings", [vqa_entry(1, 1, [3, 4])], "'all_answers' must be a list of answer strings"),
    ("duplicate question", [vqa_entry(1, 1, ["yes"]), vqa_entry(1, 1, ["no"])], "question_id 1 repeats"),
    ("element not a dict", [vqa_entry(1, 1, ["yes"]), ["a", "list"]], "element 2 is list"),
]


@pytest.mark.parametrize("entries,expected", [(v, e) for _, v, e in BAD_IMDBS],
                         ids=[name for name, _, _ in BAD_IMDBS])
def test_bad_imdbs_are_one_line_errors(entries: list[Any], expected: str, tmp_path: Path):
    path = write_imdb(tmp_path / "imdb_bad.npy", entries)
    with pytest.raises(DataError) as info:
        imdb_questions(read_imdb(path), "vqa")
    assert expected in str(info.value) and "imdb_bad.npy" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("make,expected", [
    (lambda p: p.write_bytes(b"hello"), "not a .npy file"),
    (lambda p: np.save(p, np.zeros((3, 4), np.float32)), "not MMF's object array"),
    (lambda p: np.save(p, np.array([[{}, {}]], dtype=object), allow_pickle=True), "expected a 1-d array"),
], ids=["not npy", "plain array", "2-d array"])
def test_files_that_are_not_imdbs_are_refused(make: Any, expected: str, tmp_path: Path):
    path = tmp_path / "imdb.npy"
    make(path)
    with pytest.raises(DataError, match=expected):
        read_imdb(path)
