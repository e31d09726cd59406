"""Hostile, malformed and original-format inputs: every reader answers with one line.

Each case writes small valid inputs in the official (or LXMERT's) format, breaks them one
way, and checks that the reader refuses them with a one-line :class:`DataError` naming the
file and the field or line (through the CLI: one line and a non-zero exit status, no
traceback), and that no file it was given changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from vlbench.cli import app, main
from vlbench.data.check import check_data
from vlbench.data.features import FeatureStore
from vlbench.data.jsonio import read_json, read_jsonl
from vlbench.data.lxmert_json import read_lxmert_gqa
from vlbench.data.source import DataSource
from vlbench.data.tsv import RegionRecord, format_row, iter_tsv, write_tsv
from vlbench.errors import DataError, VLBenchError
from vlbench.results.records import find_runs, read_history, read_run
from vlbench.results.testing import write_run
from vlbench.tasks.gqa.scoring import score_gqa_files
from vlbench.tasks.gqa.task import GQAConfig, GQATask
from vlbench.tasks.nlvr2.scoring import (
    read_nlvr2_labels,
    read_nlvr2_predictions,
    score_nlvr2_files,
)
from vlbench.tasks.nlvr2.task import NLVR2Config, NLVR2Task
from vlbench.tasks.vqa.scoring import score_vqa_files
from vlbench.tasks.vqa.task import VQAConfig, VQATask

# -- inputs in the official formats ----------------------------------------------------------


def gqa_question(**fields: Any) -> dict[str, Any]:
    """One question of an official GQA questions file; ``fields`` replace or (None) drop keys."""
    q = {"imageId": "n1", "question": "What color is the cup?", "answer": "red",
         "isBalanced": True, "types": {"structural": "query", "semantic": "attr",
                                       "detailed": "colorObject"},
         "groups": {"global": "color", "local": "10q-cup_color"}, "entailed": [],
         "equivalent": ["1"],
         "semantic": [{"operation": "select", "argument": "cup (1)", "dependencies": []},
                      {"operation": "query", "argument": "color", "dependencies": [0]}]}
    q.update(fields)
    return q


def write_gqa(root: Path, questions: dict[str, Any], split: str = "train") -> Path:
    path = root / "gqa" / f"{split}_balanced_questions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(questions), encoding="utf-8")
    return path


def vqa_annotation(qid: int, answers: list[str]) -> dict[str, Any]:
    return {"question_id": qid, "image_id": 7, "question_type": "what color is the",
            "answer_type": "other", "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                        for j, a in enumerate(answers)]}


def write_vqa(root: Path, answers: list[str] | None = None, question: Any = "What color is it?"
              ) -> tuple[Path, Path]:
    """The official train2014 questions and annotations files, one question."""
    folder = root / "vqa"
    folder.mkdir(parents=True, exist_ok=True)
    questions = folder / "v2_OpenEnded_mscoco_train2014_questions.json"
    annotations = folder / "v2_mscoco_train2014_annotations.json"
    questions.write_text(json.dumps({"task_type": "Open-Ended", "data_subtype": "train2014",
                                     "questions": [{"image_id": 7, "question": question,
                                                    "question_id": 70}]}))
    annotations.write_text(json.dumps({"data_subtype": "train2014", "annotations": [
        vqa_annotation(70, answers if answers is not None else ["red"] * 10)]}))
    return questions, annotations


def write_nlvr2(root: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    path = root / "nlvr2" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = rows or [{"identifier": f"train-1-{i}-0", "sentence": "There are two dogs.",
                     "label": "True" if i % 2 else "False"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def region(img_id: str, n: int = 3, w: int = 100, h: int = 80, seed: int = 0) -> RegionRecord:
    rng = np.random.default_rng(seed)
    boxes = np.array([[5 * i, 4 * i, 5 * i + 40, 4 * i + 30] for i in range(n)], np.float32)
    return RegionRecord(img_id=img_id, img_h=h, img_w=w,
                        objects_id=np.arange(n, dtype=np.int64),
                        objects_conf=np.linspace(0.9, 0.5, n, dtype=np.float32),
                        attrs_id=np.arange(n, dtype=np.int64),
                        attrs_conf=np.full(n, 0.5, np.float32), boxes=boxes,
                        features=rng.standard_normal((n, 4)).astype(np.float32))


def write_regions(path: Path, *records: RegionRecord) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tsv(path, records or [region("img0"), region("img1", seed=1), region("img2", seed=2)])
    return path


def replace_bytes(path: Path, old: bytes, new: bytes) -> Path:
    """Replace the first ``old`` in ``path`` by ``new`` (``old`` must be there)."""
    data = path.read_bytes()
    assert old in data, f"{old!r} not in {path}"
    path.write_bytes(data.replace(old, new, 1))
    return path


def non_utf8(path: Path, old: bytes) -> Path:
    """Put a byte that is never UTF-8 (0xff) into ``old``, where it first occurs."""
    return replace_bytes(path, old, old[:1] + b"\xff" + old[1:])


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(root: Path, before: dict[str, str]) -> None:
    after = snapshot(root)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"files changed or removed: {changed}"


def assert_one_line(message: str, *needles: str) -> None:
    assert message and "\n" not in message.strip(), message
    assert "Traceback" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


# -- library readers ---------------------------------------------------------------------------


@dataclass
class Case:
    """``make`` writes broken inputs under a folder and returns the file the message must
    name; ``read`` calls the reader on the folder; ``needles`` name the field or line."""

    id: str
    make: Callable[[Path], Path]
    read: Callable[[Path], Any]
    needles: tuple[str, ...]


def _gqa_task(root: Path) -> GQATask:
    return GQATask(GQAConfig(eval_splits=[]), DataSource(root, synthetic=False))


def _vqa_task(root: Path) -> VQATask:
    return VQATask(VQAConfig(eval_splits=[]), DataSource(root, synthetic=False))


def _nlvr2_task(root: Path) -> NLVR2Task:
    return NLVR2Task(NLVR2Config(eval_splits=[]), DataSource(root, synthetic=False))


def _json(root: Path, name: str, data: Any) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _text(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _run(root: Path, **changes: Any) -> Path:
    """A run directory whose run.json has ``changes`` applied (dotted keys allowed)."""
    run = write_run(root, "run", scores={"testdev": [1.0, 0.0, 1.0, 1.0]})
    record = json.loads((run / "run.json").read_text())
    for key, value in changes.items():
        node = record
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (run / "run.json").write_text(json.dumps(record))
    return run / "run.json"


def _lxmert_gqa(root: Path, label: Any) -> Path:
    return _json(root, "gqa/lxmert/train.json",
                 [{"img_id": "n1", "question_id": "7", "sent": "Is it red?", "label": label}])


def _tsv_lines(root: Path, second_id: str) -> Path:
    """Three rows; the second image id is written raw (no csv quoting)."""
    rows = [format_row(region("img0")), format_row(region("img1", seed=1)),
            format_row(region("img2", seed=2))]
    rows[1][0] = second_id
    path = root / "features" / "f.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _bad_values(root: Path, column: str, value: float, name: str = "f.tsv") -> Path:
    bad = region("img1", seed=1)
    getattr(bad, column)[1, 2 if column == "features" else 3] = value
    return write_regions(root / "features" / name, region("img0"), bad, region("img2", seed=2))


def _box_outside(root: Path, x2: float) -> Path:
    bad = region("img1", seed=1)
    bad.boxes[0, 2] = x2  # the image is 100 px wide
    return write_regions(root / "features" / "f.tsv", region("img0"), bad)


def _store(root: Path) -> FeatureStore:
    return FeatureStore.open(sorted((root / "features").glob("*.tsv")), root / "cache")


def _duplicates_in_two_files(root: Path) -> Path:
    write_regions(root / "features" / "a.tsv", region("img0"), region("shared", seed=1))
    return write_regions(root / "features" / "b.tsv", region("shared", seed=5))


def _many_boxes_slightly_outside(root: Path) -> Path:
    records = [region(f"img{i}", n=4, seed=i) for i in range(10)]
    for r in records[:4]:
        r.boxes[:, 3] = 81.0  # 1 px below the 80 px image: 16 of 40 boxes
    return write_regions(root / "features" / "f.tsv", *records)


LIBRARY: list[Case] = [
    # 1. bytes that are not UTF-8, in every input
    Case("json-not-utf8", lambda r: non_utf8(_json(r, "x.json", {"a": "text"}), b"text"),
         lambda r: read_json(r / "x.json"), ("not UTF-8", ":1:")),
    Case("jsonl-not-utf8", lambda r: non_utf8(_text(r, "x.jsonl", '{"a": 1}\n{"a": "two"}\n'),
                                              b"two"),
         lambda r: read_jsonl(r / "x.jsonl"), ("not UTF-8", ":2:")),
    Case("gqa-questions-not-utf8", lambda r: non_utf8(write_gqa(r, {"1": gqa_question()}), b"cup?"),
         lambda r: _gqa_task(r).read_split("train"), ("not UTF-8",)),
    Case("gqa-lxmert-not-utf8", lambda r: non_utf8(_lxmert_gqa(r, {"yes": 1.0}), b"red"),
         lambda r: read_lxmert_gqa(r / "gqa/lxmert/train.json"), ("not UTF-8",)),
    Case("gqa-predictions-not-utf8",
         lambda r: (write_gqa(r, {"1": gqa_question()}),
                    non_utf8(_json(r, "pred.json", [{"questionId": "1", "prediction": "red"}]),
                             b"red"))[1],
         lambda r: score_gqa_files(r / "gqa/train_balanced_questions.json", r / "pred.json"),
         ("not UTF-8",)),
    Case("vqa-annotations-not-utf8", lambda r: non_utf8(write_vqa(r)[1], b"red"),
         lambda r: _vqa_task(r).read_split("train"), ("not UTF-8",)),
    Case("vqa-questions-not-utf8", lambda r: non_utf8(write_vqa(r)[0], b"What"),
         lambda r: _vqa_task(r).read_split("train"), ("not UTF-8",)),
    Case("vqa-results-not-utf8",
         lambda r: (write_vqa(r), non_utf8(_json(r, "res.json",
                                                 [{"question_id": 70, "answer": "red"}]), b"red"))[1],
         lambda r: score_vqa_files(r / "vqa/v2_mscoco_train2014_annotations.json", None,
                                   r / "res.json"), ("not UTF-8",)),
    Case("nlvr2-labels-not-utf8", lambda r: non_utf8(write_nlvr2(r), b"train-1-1-0"),
         lambda r: _nlvr2_task(r).read_split("train"), ("not UTF-8", ":2:")),
    Case("nlvr2-labels-file-not-utf8", lambda r: non_utf8(write_nlvr2(r), b"train-1-2-0"),
         lambda r: read_nlvr2_labels(r / "nlvr2/train.json"), ("not UTF-8", ":3:")),
    Case("nlvr2-predictions-not-utf8",
         lambda r: non_utf8(_text(r, "pred.csv", "train-1-0-0,False\ntrain-1-1-0,True\n"), b"True"),
         lambda r: read_nlvr2_predictions(r / "pred.csv"), ("not UTF-8", ":2:")),
    Case("nlvr2-lxmert-not-utf8",
         lambda r: non_utf8(_json(r, "nlvr2/lxmert/train.json", [
             {"identifier": "train-1-0-0", "img0": "a", "img1": "b", "sent": "Two dogs.",
              "label": 1}]), b"dogs"),
         lambda r: _nlvr2_task(r).read_split("train"), ("not UTF-8",)),
    Case("tsv-not-utf8", lambda r: non_utf8(write_regions(r / "features" / "f.tsv"), b"img1"),
         lambda r: list(iter_tsv(r / "features/f.tsv")), ("not UTF-8", ":2:")),
    Case("run-record-not-utf8", lambda r: non_utf8(_run(r), b"lxmert"),
         lambda r: read_run(r / "run"), ("not UTF-8", "line")),
    Case("run-history-not-utf8",
         lambda r: (_run(r), non_utf8(_text(r, "run/history.jsonl", '{"a": 1}\n{"b": "x"}\n'),
                                      b'"b"'))[1],
         lambda r: read_history(r / "run"), ("not UTF-8", ":2:")),
    # 2. fields that the official files never hold
    Case("gqa-groups-null", lambda r: write_gqa(r, {"1": gqa_question(groups=None)}),
         lambda r: _gqa_task(r).read_split("train"), ("question '1'", "'groups'", "null")),
    Case("gqa-question-null", lambda r: write_gqa(r, {"1": gqa_question(question=None)}),
         lambda r: _gqa_task(r).read_split("train"), ("question '1'", "'question'", "null")),
    Case("gqa-semantic-string", lambda r: write_gqa(r, {"1": gqa_question(semantic="abc")}),
         lambda r: _gqa_task(r).read_split("train"), ("question '1'", "'semantic'")),
    Case("gqa-semantic-step-lacks-argument",
         lambda r: write_gqa(r, {"1": gqa_question(semantic=[{"operation": "select"}])}),
         lambda r: _gqa_task(r).read_split("train"), ("'semantic[0].argument'", "missing")),
    Case("gqa-no-image-id",
         lambda r: write_gqa(r, {"1": {k: v for k, v in gqa_question().items() if k != "imageId"}}),
         lambda r: _gqa_task(r).read_split("train"), ("question '1'", "'imageId'", "missing")),
    Case("gqa-score-groups-null",
         lambda r: (write_gqa(r, {"1": gqa_question(groups=None)}),
                    _json(r, "pred.json", [{"questionId": "1", "prediction": "red"}]))[0],
         lambda r: score_gqa_files(r / "gqa/train_balanced_questions.json", r / "pred.json"),
         ("'groups'", "null")),
    Case("gqa-dict-predictions-numbers",
         lambda r: (write_gqa(r, {"1": gqa_question(answer="2")}),
                    _json(r, "pred.json", {"1": 2}))[1],
         lambda r: score_gqa_files(r / "gqa/train_balanced_questions.json", r / "pred.json"),
         ("question '1'", "prediction", "a number")),
    Case("gqa-task-predictions-numbers",
         lambda r: _json(r, "pred.json", [{"questionId": "1", "prediction": 2}]),
         lambda r: _gqa_task(r).read_predictions(r / "pred.json"), ("row 0", "'prediction'")),
    Case("gqa-lxmert-label-nan", lambda r: _lxmert_gqa(r, {"yes": math.nan}),
         lambda r: read_lxmert_gqa(r / "gqa/lxmert/train.json"), ("item 0", "'label'")),
    Case("vqa-three-answers", lambda r: write_vqa(r, ["red", "red", "blue"])[1],
         lambda r: _vqa_task(r).read_split("train"),
         ("annotations[0]", "question_id 70", "'answers'", "3 answers")),
    Case("vqa-eleven-answers", lambda r: write_vqa(r, ["red"] * 11)[1],
         lambda r: _vqa_task(r).read_split("train"), ("annotations[0]", "11 answers")),
    Case("vqa-score-three-answers",
         lambda r: (write_vqa(r, ["red", "red", "blue"]),
                    _json(r, "res.json", [{"question_id": 70, "answer": "red"}]))[0][1],
         lambda r: score_vqa_files(r / "vqa/v2_mscoco_train2014_annotations.json", None,
                                   r / "res.json"), ("annotations[0]", "3 answers")),
    Case("vqa-question-null", lambda r: write_vqa(r, question=None)[0],
         lambda r: _vqa_task(r).read_split("train"), ("questions[0]", "'question'")),
    Case("vqa-results-numbers", lambda r: _json(r, "res.json", [{"question_id": 70, "answer": 2}]),
         lambda r: _vqa_task(r).read_predictions(r / "res.json"), ("results[0]", "'answer'")),
    Case("vqa-lxmert-label-nan",
         lambda r: _json(r, "vqa/lxmert/train.json", [{"img_id": "i", "question_id": 1,
                                                       "sent": "Is it?", "label": {"yes": math.inf}}]),
         lambda r: VQATask(VQAConfig(format="lxmert", eval_splits=[]),
                           DataSource(r, synthetic=False)).read_split("train"),
         ("entry 0", "'label'")),
    Case("nlvr2-predictions-one-zero",
         lambda r: _text(r, "pred.csv", "train-1-0-0,0\ntrain-1-1-0,1\n"),
         lambda r: read_nlvr2_predictions(r / "pred.csv"), ("line 1", "'0'", "False")),
    Case("nlvr2-score-one-zero",
         lambda r: (write_nlvr2(r), _text(r, "pred.csv", "train-1-0-0,False\ntrain-1-1-0,1\n"
                                               "train-1-2-0,False\n"))[1],
         lambda r: score_nlvr2_files(r / "nlvr2/train.json", r / "pred.csv"), ("line 2", "'1'")),
    Case("nlvr2-task-predictions-one-zero", lambda r: _text(r, "pred.csv", "train-1-0-0,1\n"),
         lambda r: _nlvr2_task(r).read_predictions(r / "pred.csv"), ("line 1", "True")),
    Case("run-nan-accuracy", lambda r: _run(r, **{"metrics.testdev.accuracy": math.nan}),
         lambda r: read_run(r / "run"), ("'metrics.testdev.accuracy'", "NaN")),
    Case("run-infinite-breakdown",
         lambda r: _run(r, **{"metrics.testdev.per_structural.query": -math.inf}),
         lambda r: read_run(r / "run"), ("'metrics.testdev.per_structural.query'",)),
    Case("run-string-seed", lambda r: _run(r, seed="1"), lambda r: read_run(r / "run"),
         ("'seed'", "integer")),
    # 3. region features
    Case("tsv-id-starting-with-a-quote", lambda r: _tsv_lines(r, '"img1'),
         lambda r: list(iter_tsv(r / "features/f.tsv")), (":2:", "img_id", "quote")),
    Case("tsv-nan-feature", lambda r: _bad_values(r, "features", math.nan),
         lambda r: list(iter_tsv(r / "features/f.tsv")), (":2:", "img1", "column features")),
    Case("tsv-infinite-box", lambda r: _bad_values(r, "boxes", math.inf),
         lambda r: list(iter_tsv(r / "features/f.tsv")), (":2:", "column boxes")),
    Case("store-nan-feature", lambda r: _bad_values(r, "features", math.nan), _store,
         (":2:", "img1", "column features", "NaN")),
    Case("store-box-far-outside", lambda r: _box_outside(r, 130.0), _store,
         (":2:", "img1", "30.0 px outside")),
    Case("store-many-boxes-slightly-outside", _many_boxes_slightly_outside, _store,
         ("16 of 40 boxes",)),
    Case("store-id-in-two-files", _duplicates_in_two_files, _store,
         ("'shared'", "a.tsv:2", "b.tsv:1", "data.duplicate_ids")),
    Case("store-id-twice-in-one-file",
         lambda r: write_regions(r / "features/f.tsv", region("img0"), region("img0", seed=3)),
         _store, ("'img0'", "f.tsv:1", "f.tsv:2")),
]


@pytest.mark.parametrize("case", LIBRARY, ids=[c.id for c in LIBRARY])
def test_library_readers_refuse_in_one_line(case: Case, tmp_path: Path) -> None:
    named = case.make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as err:
        case.read(tmp_path)
    assert_one_line(str(err.value), str(named), *case.needles)
    assert_unchanged(tmp_path, before)


def test_every_reader_has_a_case() -> None:
    """The table reaches every reader (a new reader needs its cases)."""
    called = {name for c in LIBRARY for name in c.read.__code__.co_names}
    for reader in ("read_json", "read_jsonl", "read_lxmert_gqa", "score_gqa_files",
                   "score_vqa_files", "read_nlvr2_labels", "read_nlvr2_predictions",
                   "score_nlvr2_files", "iter_tsv", "read_run", "read_history", "read_split",
                   "read_predictions"):
        assert reader in called, reader
    ids = " ".join(c.id for c in LIBRARY)
    for prefix in ("gqa-", "vqa-", "nlvr2-", "store-", "tsv-", "run-"):
        assert prefix in ids


# -- what still reads, and reads right -------------------------------------------------------


def test_slightly_outside_boxes_are_clipped_with_one_warning(tmp_path: Path) -> None:
    _box_outside(tmp_path, 101.5)
    store = _store(tmp_path)
    (warning,) = store.warnings()
    assert_one_line(warning, "1 of 6 boxes", "1.5 px", "'img1'", "clipped")
    assert store.get("img1").boxes.max() == 1.0


def test_repeated_ids_first_or_last_row_on_request(tmp_path: Path) -> None:
    _duplicates_in_two_files(tmp_path)
    paths = sorted((tmp_path / "features").glob("*.tsv"))
    first = FeatureStore.open(paths, tmp_path / "cache", duplicate_ids="first")
    last = FeatureStore.open(paths, tmp_path / "cache", duplicate_ids="last")
    np.testing.assert_array_equal(first.get("shared").features, region("shared", seed=1).features)
    np.testing.assert_array_equal(last.get("shared").features, region("shared", seed=5).features)
    assert len(first) == len(last) == 2 and first.duplicates == 1
    assert first.fingerprint != last.fingerprint  # other rows, other data
    assert_one_line(last.warnings()[0], "'shared'", "a.tsv:2", "b.tsv:1", "last row")


def test_crowded_images_keep_the_most_confident_regions_on_request(tmp_path: Path) -> None:
    crowded = region("img0", n=5)
    crowded.objects_conf[:] = [0.2, 0.9, 0.1, 0.8, 0.7]
    write_regions(tmp_path / "features/f.tsv", crowded, region("img1", n=2))
    store = _store(tmp_path)
    assert store.crowded(3) == (1, 5)
    by_file, _, _ = store.batch(["img0"], max_boxes=3)
    by_conf, _, _ = store.batch(["img0"], max_boxes=3, order="confidence")
    np.testing.assert_array_equal(by_file[0], crowded.features[:3])
    np.testing.assert_array_equal(by_conf[0], crowded.features[[1, 3, 4]])  # file order kept


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "index-edited", "index-garbled"])
def test_a_damaged_feature_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    write_regions(tmp_path / "features/f.tsv")
    store = _store(tmp_path)
    expected = np.array(store.get("img2").features)
    features, index = store.path / "features.npy", store.path / "index.json"
    if damage == "zeroed":
        features.write_bytes(b"\0" * features.stat().st_size)
    elif damage == "truncated":
        features.write_bytes(features.read_bytes()[:-8])
    elif damage == "index-edited":
        data = json.loads(index.read_text())
        data["num_regions"] += 1
        index.write_text(json.dumps(data))
    else:
        index.write_bytes(b"\0" * 64)
    again = _store(tmp_path)
    assert again.rebuilt, "the damage went unnoticed"
    np.testing.assert_array_equal(again.get("img2").features, expected)
    assert _store(tmp_path).rebuilt is None  # repaired: reused as is


def test_a_quote_in_an_id_written_by_the_csv_writer_reads_back(tmp_path: Path) -> None:
    path = write_regions(tmp_path / "f.tsv", region('"quoted" id'), region("img1"))
    assert [r.img_id for r in iter_tsv(path)] == ['"quoted" id', "img1"]


def test_a_byte_order_mark_is_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"1": gqa_question()}).encode())
    assert read_json(path)["1"]["answer"] == "red"


# -- through the command line ------------------------------------------------------------------


def cli(*args: str) -> tuple[int, str]:
    """``vlbench ARGS`` as the console script runs it (``vlbench.cli.main``): a vlbench error
    becomes ``error: <message>`` and exit status 2. Returns (status, what was printed)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if isinstance(result.exception, VLBenchError):
        return 2, f"error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"traceback: {result.exception!r}"
    return result.exit_code, result.output


@pytest.fixture()
def world(small_world: Path, tmp_path: Path) -> Path:
    """A copy of the small synthetic world, free to break."""
    return Path(shutil.copytree(small_world, tmp_path / "world"))


def _world_gqa(world: Path, split: str, qid_field: tuple[str, Any]) -> Path:
    path = world / "gqa" / f"{split}_balanced_questions.json"
    questions = json.loads(path.read_text())
    qid = sorted(questions)[3]
    questions[qid][qid_field[0]] = qid_field[1]
    path.write_text(json.dumps(questions))
    return path


def _world_tsv(world: Path, edit: Callable[[list[list[str]]], None]) -> Path:
    path = world / "features" / "synthetic_obj36.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    edit(rows)
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    return path


def _nan_in_row(rows: list[list[str]], line: int = 5) -> None:
    feats = np.frombuffer(base64.b64decode(rows[line - 1][9]), np.float32).copy()
    feats[3] = np.nan
    rows[line - 1][9] = base64.b64encode(feats.tobytes()).decode()


@dataclass
class CliCase:
    """``make`` breaks the world (or writes files) and returns (args, file the output names);
    ``status`` is the exit status (``vlbench score`` says 1 for bad input, the others 2 for an
    unreadable file and ``data check`` 1 for problems found)."""

    id: str
    make: Callable[[Path], tuple[list[Any], Path]]
    status: int
    needles: tuple[str, ...]


def _score_gqa(world: Path, questions: Path, predictions: Any) -> tuple[list[Any], Path]:
    pred = _json(world, "pred.json", predictions)
    return ["score", "--task", "gqa", "--questions", questions, "--predictions", pred], pred


def _gqa_answers(world: Path) -> dict[str, str]:
    questions = json.loads((world / "gqa/val_balanced_questions.json").read_text())
    return {qid: q["answer"] for qid, q in questions.items()}


CLI: list[CliCase] = [
    CliCase("score-gqa-groups-null",
            lambda w: (_score_gqa(w, _world_gqa(w, "val", ("groups", None)),
                                  [{"questionId": k, "prediction": v}
                                   for k, v in _gqa_answers(w).items()])[0],
                       w / "gqa/val_balanced_questions.json"), 1, ("'groups'", "null")),
    CliCase("score-gqa-dict-numbers",
            lambda w: _score_gqa(w, w / "gqa/val_balanced_questions.json",
                                 {k: 1 for k in _gqa_answers(w)}), 1, ("prediction", "a number")),
    CliCase("score-gqa-not-utf8",
            lambda w: (_score_gqa(w, non_utf8(w / "gqa/val_balanced_questions.json", b"What"),
                                  [])[0], w / "gqa/val_balanced_questions.json"), 1, ("not UTF-8",)),
    CliCase("score-vqa-three-answers",
            lambda w: (["score", "--task", "vqa", "--annotations", write_vqa(w, ["a", "a", "b"])[1],
                        "--predictions", _json(w, "res.json", [{"question_id": 70, "answer": "a"}])],
                       w / "vqa/v2_mscoco_train2014_annotations.json"), 1, ("3 answers",)),
    CliCase("score-nlvr2-one-zero",
            lambda w: (["score", "--task", "nlvr2", "--annotations", write_nlvr2(w / "x"),
                        "--predictions", _text(w, "p.csv", "train-1-0-0,1\n")], w / "p.csv"),
            1, ("line 1", "'1'")),
    CliCase("check-gqa-semantic-string",
            lambda w: (["data", "check", "--task", "gqa", "--data", w],
                       _world_gqa(w, "testdev", ("semantic", "abc"))), 2, ("'semantic'",)),
    CliCase("check-gqa-not-utf8",
            lambda w: (["data", "check", "--task", "gqa", "--data", w],
                       non_utf8(w / "gqa/train_balanced_questions.json", b"What")), 2, ("not UTF-8",)),
    CliCase("check-vqa-nine-answers",
            lambda w: (["data", "check", "--task", "vqa", "--data", w],
                       _drop_vqa_answer(w)), 2, ("annotations[0]", "9 answers")),
    CliCase("check-nan-feature",
            lambda w: (["data", "check", "--task", "nlvr2", "--data", w],
                       _world_tsv(w, _nan_in_row)), 1, (":5:", "column features")),
    CliCase("check-missing-features",
            lambda w: (["data", "check", "--task", "gqa", "--data", w], _drop_used_image(w)),
            1, ("no features",)),
    CliCase("check-id-in-two-files",
            lambda w: (["data", "check", "--task", "gqa", "--data", w], _second_tsv(w)),
            1, ("synthetic_obj36.tsv:1", "extra.tsv:1", "data.duplicate_ids")),
    CliCase("check-quote-in-id",
            lambda w: (["data", "check", "--task", "gqa", "--data", w],
                       _world_tsv(w, lambda rows: rows[6].__setitem__(0, '"' + rows[6][0]))),
            2, (":7:", "img_id", "quote")),
    CliCase("train-gqa-groups-null",
            lambda w: (["train", "--task", "gqa", "--data", w, "--out", w.parent / "runs"],
                       _world_gqa(w, "val", ("groups", None))), 2, ("'groups'", "null")),
    CliCase("train-tsv-not-utf8",
            lambda w: (["train", "--task", "nlvr2", "--data", w, "--out", w.parent / "runs"],
                       non_utf8(w / "features/synthetic_obj36.tsv", b"\t")), 2, (":1:", "not UTF-8")),
]


def _drop_vqa_answer(world: Path) -> Path:
    path = world / "vqa/v2_mscoco_train2014_annotations.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["answers"].pop()
    path.write_text(json.dumps(data))
    return path


def _drop_used_image(world: Path) -> Path:
    used = json.loads((world / "gqa/val_balanced_questions.json").read_text())
    image = next(iter(used.values()))["imageId"]
    return _world_tsv(world, lambda rows: rows.__setitem__(
        slice(None), [r for r in rows if r[0] != image]))


def _second_tsv(world: Path) -> Path:
    first = (world / "features/synthetic_obj36.tsv").read_text().splitlines()[0]
    (world / "features/extra.tsv").write_text(first + "\n")
    return world / "features/extra.tsv"


@pytest.mark.parametrize("case", CLI, ids=[c.id for c in CLI])
def test_commands_refuse_in_one_line(case: CliCase, world: Path) -> None:
    args, named = case.make(world)
    before = snapshot(world)
    status, output = cli(*args)
    assert status == case.status, output
    assert "Traceback" not in output
    # The finding is one line that names the file and the field (tables may come around it).
    lines = [line for line in output.splitlines() if str(named) in line]
    assert any(all(n in line for n in case.needles) for line in lines), output
    assert_unchanged(world, before)
    assert not (world.parent / "runs").exists() or not any((world.parent / "runs").iterdir())


def test_the_console_script_prints_one_red_line(world: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _world_gqa(world, "train", ("question", None))
    runs = world.parent / "runs"
    monkeypatch.setattr(sys, "argv", ["vlbench", "train", "--task", "gqa", "--data", str(world),
                                      "--out", str(runs)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert str(path) in line and "'question'" in line and "Traceback" not in err
    assert not runs.exists() or not any(runs.iterdir())


def test_data_check_is_clean_on_a_good_world(small_world: Path) -> None:
    report = check_data("gqa", small_world, say=lambda _: None)
    assert report.status == 0, [f.message for f in report.findings]
    assert [s.name for s in report.splits] == ["train", "val", "testdev"]
    assert all(s.examples and s.missing == 0 for s in report.splits)
    assert report.features["feat_dim"] > 0 and report.features["non_finite"] == 0
    assert all(s.coverage is not None and 0 < s.coverage <= 100 for s in report.splits)
    status, output = cli("data", "check", "--task", "nlvr2", "--data", small_world)
    assert status == 0 and "clean" in output and "feature dimension" in output


def test_data_check_flags_crowded_images_and_unknown_settings(small_world: Path) -> None:
    report = check_data("gqa", small_world, overrides={"data.max_boxes": "2"}, say=lambda _: None)
    assert report.status == 0 and report.features["crowded"] > 0
    (note,) = [f.message for f in report.findings if "max_boxes" in f.message]
    assert_one_line(note, "data.max_boxes=2", "data.box_order=file")
    status, output = cli("data", "check", "--task", "gqa", "--data", small_world,
                         "--set", "data.box_order=random")
    assert status == 2 and "data.box_order='random'" in output


def test_leaderboard_skips_unreadable_records_and_names_them(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path, f"ok-s{seed}", seed=seed, scores={"testdev": [1.0, 0.0, 1.0]})
    def edit(key: str, value: Any) -> Callable[[Path], Any]:
        def spoil(path: Path) -> None:
            record = json.loads(path.read_text())
            node = record
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
            path.write_text(json.dumps(record))
        return spoil

    bad = {"not-utf8": lambda p: non_utf8(p, b"lxmert"),
           "nan": edit("metrics.testdev.accuracy", math.nan), "seed": edit("seed", "zero")}
    for name, spoil in bad.items():
        spoil(write_run(tmp_path, f"bad-{name}", scores={"testdev": [1.0, 0.0, 1.0]}) / "run.json")
    before = snapshot(tmp_path)
    runs, problems = find_runs([tmp_path])
    assert len(runs) == 2 and len(problems) == 3
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "lxmert" in result.stdout  # the good runs still make their row
    for name in bad:
        (line,) = [x for x in result.stderr.splitlines() if f"bad-{name}" in x]
        assert "skipped" in line
    assert_unchanged(tmp_path, before)


def test_a_missing_option_is_a_usage_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["vlbench", "data", "synth"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--out" in err and "Usage" in err
