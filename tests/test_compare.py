"""``vlbench compare``: paired differences, McNemar, categories, flips, refusals."""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import vlbench.results as results_package
from vlbench.cli.results import compare as compare_command
from vlbench.engine.evaluate import write_outputs
from vlbench.engine.run import base_record, finish_record
from vlbench.engine.task import Task
from vlbench.errors import ConfigError, DataError
from vlbench.results.compare import compare_paths
from vlbench.results.questions import COUNTED_KEY
from vlbench.results.records import write_json_atomic
from vlbench.results.stats import sign_flip_test
from vlbench.results.testing import GQA_STRUCTURAL, metrics_for, question_rows, write_run

scipy_stats = pytest.importorskip("scipy.stats")


def _pair(n: int, both: int, a_only: int, b_only: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores with a known McNemar table, shuffled so categories mix."""
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * (n - both - a_only - b_only))
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * (n - both - a_only - b_only))
    order = np.random.default_rng(0).permutation(n)
    return a[order].astype(float), b[order].astype(float)


@pytest.fixture()
def gqa_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    a, b = _pair(300, both=150, a_only=12, b_only=31)
    return (write_run(tmp_path, "a", variant="base", scores={"testdev": a}),
            write_run(tmp_path, "b", variant="better", scores={"testdev": b}), a, b)


def test_delta_interval_and_mcnemar(gqa_pair) -> None:
    a_dir, b_dir, a, b = gqa_pair
    c = compare_paths(a_dir, b_dir, n_resamples=4000)
    head = c.headline
    assert c.metric == "accuracy" and c.n_questions == 300
    assert head.delta == pytest.approx(100 * (b.mean() - a.mean()))  # (31 - 12) / 300
    assert head.p_value == pytest.approx(scipy_stats.binomtest(12, 43, 0.5).pvalue)
    assert c.table == {"both_right": 150, "a_only": 12, "b_only": 31, "both_wrong": 107}
    # The paired bootstrap interval is close to the normal one for the mean difference.
    d = 100 * (b - a)
    se = d.std() / np.sqrt(d.size)
    assert head.ci_low == pytest.approx(d.mean() - 1.96 * se, abs=0.6)
    assert head.ci_high == pytest.approx(d.mean() + 1.96 * se, abs=0.6)
    assert head.ci_low > 0  # B is better beyond chance
    # Metrics without per-question meaning come from the records, without interval.
    validity = next(m for m in c.metrics if m.name == "validity")
    assert validity.source == "run.json" and validity.delta == 0.0 and validity.ci_low is None
    binary = next(m for m in c.metrics if m.name == "binary")
    is_binary = np.array([GQA_STRUCTURAL[i % 5] != "query" for i in range(300)])
    assert binary.delta == pytest.approx(100 * (b[is_binary].mean() - a[is_binary].mean()))


def test_per_category_differences(gqa_pair) -> None:
    a_dir, b_dir, a, b = gqa_pair
    c = compare_paths(a_dir, b_dir, n_resamples=2000)
    kinds = {d.kind for d in c.categories}
    assert kinds == {"structural", "semantic"}
    verify = next(d for d in c.categories if d.kind == "structural" and d.name == "verify")
    mask = np.array([GQA_STRUCTURAL[i % 5] == "verify" for i in range(300)])
    assert verify.n == mask.sum()
    assert verify.delta == pytest.approx(100 * (b[mask].mean() - a[mask].mean()))
    a_only = int(np.sum((a == 1) & (b == 0) & mask))
    b_only = int(np.sum((a == 0) & (b == 1) & mask))
    assert verify.p_value == pytest.approx(scipy_stats.binomtest(
        min(a_only, b_only), a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0)
    structural = [d for d in c.categories if d.kind == "structural"]
    assert all(d.p_holm >= d.p_value for d in structural)


def test_flipped_questions_listed_with_text_and_answers(gqa_pair) -> None:
    a_dir, b_dir, a, b = gqa_pair
    c = compare_paths(a_dir, b_dir, n_resamples=500)
    assert len(c.flips) == 43
    fixed = [f for f in c.flips if f.change == "fixed"]
    assert len(fixed) == 31
    i = int(np.flatnonzero((a == 0) & (b == 1))[0])
    flip = next(f for f in c.flips if f.id == f"q{i:05d}")
    assert flip.change == "fixed" and flip.question == f"question {i}?"
    assert flip.answer == f"answer{i % 7}" and flip.b_prediction == flip.answer
    assert flip.a_prediction != flip.answer


def test_vqa_answer_types_and_soft_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a = rng.choice([0.0, 0.3, 0.6, 1.0], size=240)
    b = np.where(rng.random(240) < 0.2, 1.0, a)
    a_dir = write_run(tmp_path, "a", task="vqa", scores={"minival": a})
    b_dir = write_run(tmp_path, "b", task="vqa", variant="x", scores={"minival": b})
    c = compare_paths(a_dir, b_dir, n_resamples=2000)
    assert c.headline.delta == pytest.approx(100 * (b.mean() - a.mean()))
    assert {d.name for d in c.categories} == {"yes/no", "number", "other"}
    # The p-value tests the soft scores the metric averages, not a threshold on them.
    assert c.headline.test == "sign-flip"
    assert c.headline.p_value == sign_flip_test(b - a, n_resamples=2000, seed=0)
    assert all(d.test == "sign-flip" for d in c.categories)
    assert any("sign-flip permutation test" in n for n in c.notes)
    assert c.to_json()["test"] == "sign-flip"
    # "right" (for the table and the flips) means a score above one half.
    a_only = int(np.sum((a > 0.5) & (b <= 0.5)))
    b_only = int(np.sum((a <= 0.5) & (b > 0.5)))
    assert (c.table["a_only"], c.table["b_only"]) == (a_only, b_only)
    assert len(c.flips) == a_only + b_only
    assert isinstance(c.flips[0].answer, list) and len(c.flips[0].answer) == 10


def test_vqa_gain_below_one_half_is_detected(tmp_path: Path) -> None:
    """Soft scores rising from 0 to 0.3 cross no threshold, but the metric does rise."""
    a = np.array([0.0] * 80 + [1.0] * 80)
    b = np.array([0.3] * 80 + [1.0] * 80)
    a_dir = write_run(tmp_path, "a", task="vqa", scores={"minival": a})
    b_dir = write_run(tmp_path, "b", task="vqa", variant="x", scores={"minival": b})
    c = compare_paths(a_dir, b_dir, n_resamples=999)
    assert c.headline.delta == pytest.approx(15.0)
    assert c.table["a_only"] == c.table["b_only"] == 0  # McNemar would say p = 1
    assert c.headline.p_value == pytest.approx(1 / 1000)


def test_nlvr2_consistency(tmp_path: Path) -> None:
    a = np.array([1, 1, 1, 0] * 20, dtype=float)  # sentence 0 consistent, sentence 1 not
    b = np.ones(80)
    a_dir = write_run(tmp_path, "a", task="nlvr2", scores={"dev": a})
    b_dir = write_run(tmp_path, "b", task="nlvr2", variant="x", scores={"dev": b})
    c = compare_paths(a_dir, b_dir, n_resamples=1000)
    consistency = next(m for m in c.metrics if m.name == "consistency")
    assert consistency.a == 50.0 and consistency.b == 100.0
    assert consistency.delta == pytest.approx(50.0) and consistency.n == 40
    assert consistency.p_value == pytest.approx(2 * 0.5**20)  # 20 sentences fixed, none broken
    assert consistency.test == "mcnemar"
    assert c.categories == []


def test_groups_of_seeds(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = (rng.random(200) < 0.5).astype(float)
    for s in range(3):
        noise = rng.random(200) < 0.05
        write_run(tmp_path / "A", f"s{s}", seed=s,
                  scores={"testdev": np.where(noise, 1 - base, base)})
        write_run(tmp_path / "B", f"s{s}", seed=s, variant="v2",
                  scores={"testdev": np.where(noise, 1.0, base)})
    c = compare_paths(tmp_path / "A", tmp_path / "B", n_resamples=1000)
    assert c.a.to_json()["n_seeds"] == 3 and c.b.to_json()["n_seeds"] == 3
    assert c.headline.delta > 0
    # Means over seeds are not right/wrong: the test runs on them, not on majority votes.
    assert c.headline.test == "sign-flip"
    (tmp_path / "B" / "s0").rename(tmp_path / "A" / "other")
    with pytest.raises(DataError, match="different groups"):
        compare_paths(tmp_path / "A", tmp_path / "B")


def test_refuses_different_data_split_or_task(tmp_path: Path) -> None:
    scores = {"testdev": np.ones(50)}
    a = write_run(tmp_path, "a", scores=scores)
    other_data = write_run(tmp_path, "b", scores=scores, fingerprint="sha256:" + "c" * 64)
    with pytest.raises(DataError, match="ran on questions .* results on different questions"):
        compare_paths(a, other_data)
    # other inputs (grid features, pixels) on the same questions: comparable
    pixels = write_run(tmp_path, "g", scores=scores, fingerprint="sha256:" + "c" * 64,
                       questions="sha256:" + "a" * 64)
    assert compare_paths(a, pixels).headline.delta == 0.0
    other_split = write_run(tmp_path, "c", scores={"val": np.ones(50)})
    with pytest.raises(DataError, match="split"):
        compare_paths(a, other_split)
    with pytest.raises(DataError, match="no results on split 'testdev'"):
        compare_paths(a, other_split, split="testdev")
    other_task = write_run(tmp_path, "d", task="vqa", scores={"testdev": np.ones(50)})
    with pytest.raises(DataError, match="gqa, B is vqa"):
        compare_paths(a, other_task)
    fewer = write_run(tmp_path, "e", scores={"testdev": np.ones(40)})
    with pytest.raises(DataError, match="different questions"):
        compare_paths(a, fewer)
    no_files = write_run(tmp_path, "f", metrics={"testdev": {"accuracy": 50.0}})
    with pytest.raises(DataError, match="no per-question results"):
        compare_paths(a, no_files)


def test_cli_compare(gqa_pair) -> None:
    a_dir, b_dir, _, _ = gqa_pair
    app = typer.Typer()
    app.command()(compare_command)
    runner = CliRunner()
    result = runner.invoke(app, [str(a_dir), str(b_dir), "--json", "--resamples", "500"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("delta", "ci_low", "ci_high", "p_value"):
        assert isinstance(data[key], float)
        assert key in data["metrics"][0] and key in data["categories"][0]
    assert data["metrics"][0]["metric"] == "accuracy"
    assert len(data["flips"]) == 43 and data["synthetic"] is True
    result = runner.invoke(app, [str(a_dir), str(b_dir), "--flips", "5", "--resamples", "500"])
    assert result.exit_code == 0, result.output
    assert "Flipped questions (43)" in result.stdout and "38 more" in result.stdout
    assert "(synthetic data)" in result.stdout
    other = write_run(a_dir.parent, "z", scores={"testdev": np.ones(300)},
                      fingerprint="sha256:" + "d" * 64)
    result = runner.invoke(app, [str(a_dir), str(other)])
    assert result.exit_code == 2 and "cannot compare" in result.stderr


def _gqa_run(root: Path, name: str, scores: np.ndarray, unbalanced: np.ndarray, **kw) -> Path:
    """A GQA run whose records, like the official metrics, count balanced questions only."""
    rows = question_rows("gqa", scores)
    for row, skip in zip(rows, unbalanced, strict=True):
        row[COUNTED_KEY] = not skip
    metrics = metrics_for("gqa", [r for r in rows if r[COUNTED_KEY]])
    run = write_run(root, name, metrics={"testdev": metrics}, **kw)
    (run / "per_question").mkdir()
    (run / "per_question" / "testdev.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return run


def test_gqa_pairs_only_balanced_questions(tmp_path: Path) -> None:
    a, b = _pair(300, both=150, a_only=12, b_only=31)
    unbalanced = np.arange(300) % 10 == 3
    # Unbalanced questions all go A wrong, B right: counting them would inflate the gain.
    a[unbalanced], b[unbalanced] = 0.0, 1.0
    a_dir = _gqa_run(tmp_path, "a", a, unbalanced)
    b_dir = _gqa_run(tmp_path, "b", b, unbalanced, variant="better")
    c = compare_paths(a_dir, b_dir, n_resamples=2000)
    kept = ~unbalanced
    head = c.headline
    assert c.n_questions == head.n == 270
    assert head.delta == pytest.approx(head.b - head.a)
    assert head.delta == pytest.approx(100 * (b[kept].mean() - a[kept].mean()))
    a_only = int(np.sum((a == 1) & (b == 0) & kept))
    b_only = int(np.sum((a == 0) & (b == 1) & kept))
    assert head.p_value == pytest.approx(scipy_stats.binomtest(a_only, a_only + b_only).pvalue)
    assert sum(c.table.values()) == 270 and c.table["b_only"] == b_only
    assert len(c.flips) == a_only + b_only
    assert all(int(f.id[1:]) % 10 != 3 for f in c.flips)
    binary = next(m for m in c.metrics if m.name == "binary")
    assert binary.source == "per_question" and binary.delta == pytest.approx(binary.b - binary.a)
    verify = next(d for d in c.categories if d.kind == "structural" and d.name == "verify")
    mask = np.array([GQA_STRUCTURAL[i % 5] == "verify" for i in range(300)]) & kept
    assert verify.n == mask.sum()
    assert verify.delta == pytest.approx(verify.b - verify.a)
    assert verify.delta == pytest.approx(100 * (b[mask].mean() - a[mask].mean()))
    assert c.notes == []


def test_scores_that_do_not_rebuild_the_records_get_no_interval(tmp_path: Path) -> None:
    """Per-question files that disagree with run.json (here rows that lost their "counted"
    mark) would give an interval and a p-value for another number: none is shown."""
    a, b = _pair(300, both=150, a_only=12, b_only=31)
    unbalanced = np.arange(300) % 10 == 3
    a[unbalanced], b[unbalanced] = 0.0, 1.0
    a_dir = _gqa_run(tmp_path, "a", a, unbalanced)
    b_dir = _gqa_run(tmp_path, "b", b, unbalanced, variant="better")
    for run in (a_dir, b_dir):  # drop the mark, as records written before it
        path = run / "per_question" / "testdev.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != COUNTED_KEY})
                                + "\n" for r in rows))
    c = compare_paths(a_dir, b_dir, n_resamples=500)
    head = c.headline
    assert head.source == "run.json" and head.ci_low is None and head.p_value is None
    assert head.delta == pytest.approx(head.b - head.a)
    note = next(n for n in c.notes if n.startswith("accuracy:"))
    assert "--rescore" in note and "predate" not in note  # the records do carry metric_units
    assert all(d.delta == pytest.approx(d.b - d.a) for d in c.metrics + c.categories)


@pytest.mark.parametrize("option,value,message", [
    ("--resamples", "0", "--resamples 0"), ("--confidence", "1.5", "--confidence 1.5"),
])
def test_cli_refuses_bad_resampling_options(gqa_pair, option: str, value: str,
                                            message: str) -> None:
    a_dir, b_dir, _, _ = gqa_pair
    app = typer.Typer()
    app.command()(compare_command)
    result = CliRunner().invoke(app, [str(a_dir), str(b_dir), option, value])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match=message):
        kwargs = {"n_resamples": 0} if option == "--resamples" else {"confidence": 1.5}
        compare_paths(a_dir, b_dir, **kwargs)


def _strip_description(run: Path) -> None:
    """Make ``run`` a record of an earlier release: no metric_units, no category_kinds, and
    rows that mark counted questions under that release's own key."""
    record = json.loads((run / "run.json").read_text())
    del record["metric_units"], record["category_kinds"]
    (run / "run.json").write_text(json.dumps(record))
    for path in (run / "per_question").glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({("balanced" if k == COUNTED_KEY else k): v
                                            for k, v in r.items()}) + "\n" for r in rows))


def test_older_records_without_metric_units_still_compare_accuracy(tmp_path: Path) -> None:
    a, b = _pair(300, both=150, a_only=12, b_only=31)
    a_dir = write_run(tmp_path, "a", scores={"testdev": a})
    b_dir = write_run(tmp_path, "b", variant="better", scores={"testdev": b})
    for run in (a_dir, b_dir):
        _strip_description(run)
    c = compare_paths(a_dir, b_dir, n_resamples=500)
    head = c.headline
    assert head.source == "per_question" and head.ci_low is not None and head.n == 300
    assert head.delta == pytest.approx(100 * (b.mean() - a.mean()))
    # Nothing says binary is a mean over some rows: it is the records' difference.
    binary = next(m for m in c.metrics if m.name == "binary")
    assert binary.source == "run.json" and binary.ci_low is None
    assert binary.delta == pytest.approx(binary.b - binary.a)
    # Breakdowns stay a rule over the rows' types, every kind present being shown.
    assert {d.kind for d in c.categories} == {"structural", "semantic"}
    assert c.notes == []


def test_older_records_that_counted_fewer_rows_get_a_rescore_note(tmp_path: Path) -> None:
    a, b = _pair(300, both=150, a_only=12, b_only=31)
    unbalanced = np.arange(300) % 10 == 3
    a[unbalanced], b[unbalanced] = 0.0, 1.0
    a_dir = _gqa_run(tmp_path, "a", a, unbalanced)
    b_dir = _gqa_run(tmp_path, "b", b, unbalanced, variant="better")
    _strip_description(a_dir)
    # One side up to date describes both (same questions): still paired, on counted rows.
    c = compare_paths(a_dir, b_dir, n_resamples=500)
    assert c.headline.source == "per_question" and c.headline.n == c.n_questions == 270
    _strip_description(b_dir)
    c = compare_paths(a_dir, b_dir, n_resamples=500)
    assert c.headline.source == "run.json" and c.headline.p_value is None
    note = next(n for n in c.notes if n.startswith("accuracy:"))
    assert "predate metric_units" in note and "--rescore" in note


def test_nlvr2_record_without_groups_leaves_consistency_unpaired(tmp_path: Path) -> None:
    a = np.array([1, 1, 1, 0] * 20, dtype=float)
    a_dir = write_run(tmp_path, "a", task="nlvr2", scores={"dev": a})
    b_dir = write_run(tmp_path, "b", task="nlvr2", variant="x", scores={"dev": np.ones(80)})
    for run in (a_dir, b_dir):
        _strip_description(run)
    c = compare_paths(a_dir, b_dir, n_resamples=200)
    consistency = next(m for m in c.metrics if m.name == "consistency")
    assert consistency.source == "run.json" and consistency.delta == pytest.approx(50.0)
    assert next(m for m in c.metrics if m.name == "accuracy").source == "per_question"


# --- a task vlbench.results has never heard of ---------------------------------------------

class StoryTask(Task):
    """A third-party task: yes/no questions about stories, several per story; warm-up
    questions are scored but not counted, ``hard`` averages the hard questions and ``stories``
    the stories answered right throughout."""

    config_class = dict
    primary_metric = "stories"
    metric_units = {"accuracy": {}, "hard": {"where": {"level": ["hard"]}},
                    "stories": {"over": "group"}}
    category_kinds = ("level",)
    N = 240

    def __init__(self) -> None:
        super().__init__({}, None)

    @property
    def train_split(self) -> str:
        return "train"

    @property
    def eval_splits(self) -> list[str]:
        return ["dev"]

    def examples(self, split: str) -> list[dict[str, Any]]:
        return [{"id": f"{split}{i}", "story": f"story{i // 4}",
                 "level": ("easy", "hard", "medium")[i % 3], "warmup": i % 8 == 7,
                 "answer": "yes" if i % 2 else "no"} for i in range(self.N)]

    def score(self, split: str, predictions: dict[str, Any]
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        records = [{"id": ex["id"], "score": float(predictions[ex["id"]] == ex["answer"]),
                    "prediction": predictions[ex["id"]], "answer": ex["answer"],
                    "question": f"about {ex['story']}?", "types": {"level": ex["level"]},
                    "group": ex["story"], "counted": not ex["warmup"]}
                   for ex in self.examples(split)]
        kept = [r for r in records if r["counted"]]
        stories: dict[str, bool] = {}
        for r in kept:
            stories[r["group"]] = stories.get(r["group"], True) and r["score"] == 1.0
        hard = [r["score"] for r in kept if r["types"]["level"] == "hard"]
        return {"accuracy": 100 * float(np.mean([r["score"] for r in kept])),
                "hard": 100 * float(np.mean(hard)),
                "stories": 100 * float(np.mean(list(stories.values()))),
                "speed": 3.0}, records

    def write_predictions(self, predictions: dict[str, Any], path: Path) -> Path:
        path.write_text(json.dumps(predictions))
        return path

    def read_predictions(self, path: Path) -> dict[str, Any]:
        return json.loads(path.read_text())

    def training_texts(self):  # the rest is never reached by scoring
        raise NotImplementedError

    def setup(self, tokenizer, features, *, max_boxes, state=None):
        raise NotImplementedError

    def collate(self, examples):
        raise NotImplementedError

    def build_model(self, backbone, spec):
        raise NotImplementedError

    def loss(self, logits, batch):
        raise NotImplementedError

    def predict(self, logits, batch):
        raise NotImplementedError


def _story_run(root: Path, name: str, right: np.ndarray, variant: str) -> Path:
    """A run written the way the engine writes one: base record, metrics, per-question rows."""
    task = StoryTask()
    run_dir = root / name
    session = SimpleNamespace(
        task=task, run_dir=run_dir, model_name="m", variant=variant, task_name="story", seed=0,
        extra={}, cfg=SimpleNamespace(to_dict=lambda: {}),
        data=SimpleNamespace(label="synthetic", synthetic=True),
        features=SimpleNamespace(fingerprint="f"), model=torch.nn.Linear(1, 1),
        device=torch.device("cpu"))
    base = base_record(session)
    predictions = {ex["id"]: ex["answer"] if ok else "maybe"
                   for ex, ok in zip(task.examples("dev"), right, strict=True)}
    metrics, records = task.score("dev", predictions)
    state = {"status": "finished", "best_metrics": {"dev": metrics}, "best_epoch": 1, "epoch": 1,
             "step": 1, "train_examples": 0, "train_seconds": 0, "eval_examples": 0,
             "eval_seconds": 0, "wall_seconds": 1.0}
    write_json_atomic(run_dir / "run.json", finish_record(base, state))
    write_outputs(run_dir, task, "dev", predictions, records)
    return run_dir


def test_third_party_task_gets_paired_statistics_from_its_own_units(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a = rng.random(StoryTask.N) < 0.7
    b = np.where(rng.random(StoryTask.N) < 0.2, True, a)
    c = compare_paths(_story_run(tmp_path, "a", a, "base"), _story_run(tmp_path, "b", b, "new"),
                      n_resamples=1000)
    task = StoryTask()
    rows = task.examples("dev")
    counted = np.array([not ex["warmup"] for ex in rows])
    hard = counted & np.array([ex["level"] == "hard" for ex in rows])
    assert c.metric == "stories" and c.n_questions == int(counted.sum())
    by_name = {d.name: d for d in c.metrics}
    for name, mask in (("accuracy", counted), ("hard", hard)):
        d = by_name[name]
        assert d.source == "per_question" and d.n == int(mask.sum()) and d.test == "mcnemar"
        assert d.delta == pytest.approx(100 * (b[mask].mean() - a[mask].mean()))
    stories = by_name["stories"]
    assert stories.source == "per_question" and stories.n == StoryTask.N // 4
    whole = [(a[counted & (np.arange(StoryTask.N) // 4 == s)].all(),
              b[counted & (np.arange(StoryTask.N) // 4 == s)].all())
             for s in range(StoryTask.N // 4)]
    assert c.table["b_only"] == sum(1 for x, y in whole if y and not x)
    assert stories.delta == pytest.approx(100 * np.mean([y for _, y in whole])
                                          - 100 * np.mean([x for x, _ in whole]))
    assert by_name["speed"].source == "run.json"  # not a mean over units
    assert {d.kind for d in c.categories} == {"level"}
    assert all(counted[int(f.id.removeprefix("dev"))] for f in c.flips)


def test_results_code_names_no_task() -> None:
    """The results layer learns everything task-specific from the run records."""
    folder = Path(results_package.__file__).parent
    # Fixture builder for the test-suite, in the built-in tasks' shapes; the results layer
    # never imports it (checked below).
    fixtures = {"testing.py"}
    found = []
    for path in sorted(folder.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if path.name in fixtures:
            continue
        assert "results.testing" not in source, path.name
        docstrings = {(node.body[0].lineno, node.body[0].col_offset)
                      for node in ast.walk(ast.parse(source))
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                    | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)
                      and isinstance(node.body[0].value.value, str)}
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING
                                                and tok.start in docstrings):
                continue
            if re.search(r"gqa|vqa|nlvr2", tok.string, re.IGNORECASE):
                found.append(f"{path.name}:{tok.start[0]}: {tok.string}")
    assert found == []
