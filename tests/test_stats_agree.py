"""Paired statistics are about the official metrics: delta == B - A on the committed records,
and leaderboard intervals and grid tests count the questions the metric counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vlbench.errors import ConfigError
from vlbench.results.compare import Difference, compare_paths
from vlbench.results.leaderboard import build_leaderboard
from vlbench.results.questions import COUNTED_KEY
from vlbench.results.records import find_runs
from vlbench.results.stats import bootstrap_interval, mcnemar_exact
from vlbench.results.testing import metrics_for, question_rows, write_run

pytest.importorskip("scipy.stats")

COMMITTED = Path(__file__).resolve().parents[1] / "leaderboards"
# (task, split) pairs the committed runs were evaluated on.
SPLITS = [("gqa", "val"), ("gqa", "testdev"), ("vqa", "minival"), ("nlvr2", "dev"),
          ("nlvr2", "test1")]
# Metrics that are means over per-question units, so compare must pair them.
PAIRED = {"gqa": {"accuracy", "binary", "open"}, "vqa": {"accuracy"},
          "nlvr2": {"accuracy", "consistency"}}


@pytest.fixture(scope="module", autouse=True)
def _rescored_copy(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The committed LXMERT runs and two ablation cells, copied and rescored: per-question
    files are not committed, `--rescore` recomputes them from the predictions."""
    from vlbench.results.rescore import rescore_runs

    global BOARDS, EMBEDDED
    BOARDS = tmp_path_factory.mktemp("boards")
    EMBEDDED = BOARDS / "embedded"
    tasks = dict.fromkeys(task for task, _ in SPLITS)
    runs = [d for task in tasks for d in (COMMITTED / "embedded" / task).glob(f"{task}-lxmert-s*")]
    runs += sorted((COMMITTED / "ablation" / "cells").glob("finetune-*/gqa-lxmert-s0-*"))[:2]
    for run in runs:
        shutil.copytree(run, BOARDS / run.relative_to(COMMITTED),
                        ignore=shutil.ignore_patterns("per_question"))  # as in a clean clone
    found, _ = find_runs([BOARDS])
    rescore_runs(found)


def _seed_dir(task: str, seed: int) -> Path:
    return next((EMBEDDED / task).glob(f"{task}-lxmert-s{seed}-*"))


def _assert_delta_is_b_minus_a(differences: list[Difference]) -> None:
    for d in differences:
        if d.a is None or d.b is None:
            continue
        assert d.delta == pytest.approx(d.b - d.a, rel=1e-12, abs=1e-12), (
            f"{d.kind or 'metric'} {d.name}: delta {d.delta} but B - A = {d.b - d.a}")
        if d.ci_low is not None:  # the interval is about the same difference
            assert d.ci_low <= d.delta <= d.ci_high, d.name


@pytest.mark.parametrize("task,split", SPLITS)
@pytest.mark.parametrize("seeds", [(0, 1), (2, 1)])
def test_committed_records_delta_is_b_minus_a(task: str, split: str, seeds: tuple[int, int]
                                              ) -> None:
    a, b = (_seed_dir(task, s) for s in seeds)
    c = compare_paths(a, b, split=split, n_resamples=200)
    _assert_delta_is_b_minus_a(c.metrics + c.categories)
    assert all(d.source == "per_question" for d in c.categories)


@pytest.mark.parametrize("split", ["val", "testdev"])
def test_committed_ablation_cells_delta_is_b_minus_a(split: str) -> None:
    cells = sorted((BOARDS / "ablation" / "cells").glob("finetune-*/gqa-lxmert-s0-*"))
    assert len(cells) >= 2
    c = compare_paths(cells[0], cells[1], split=split, n_resamples=200)
    _assert_delta_is_b_minus_a(c.metrics + c.categories)


@pytest.mark.parametrize("task,split", SPLITS)
def test_committed_records_are_paired_on_every_mean_metric(task: str, split: str) -> None:
    c = compare_paths(_seed_dir(task, 0), _seed_dir(task, 1), split=split, n_resamples=200)
    for d in c.metrics:
        if d.name in PAIRED[task]:
            assert d.source == "per_question" and d.ci_low is not None, d.name
            assert d.test == ("sign-flip" if task == "vqa" else "mcnemar"), d.name
    assert c.categories or task == "nlvr2"


def _gqa_run(root: Path, name: str, scores: np.ndarray, unbalanced: np.ndarray, **kw) -> Path:
    """A GQA run whose records count balanced questions only, as the official metrics do."""
    rows = question_rows("gqa", scores)
    for row, skip in zip(rows, unbalanced, strict=True):
        row[COUNTED_KEY] = not skip
    metrics = metrics_for("gqa", [r for r in rows if r[COUNTED_KEY]])
    run = write_run(root, name, metrics={"testdev": metrics}, **kw)
    (run / "per_question").mkdir()
    (run / "per_question" / "testdev.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return run


@pytest.fixture()
def gqa_balanced(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A reference run and a worse one; every tenth question is unbalanced and always
    answered right by the reference and wrong by the other."""
    rng = np.random.default_rng(7)
    ref = (rng.random(400) < 0.6).astype(float)
    worse = np.where(rng.random(400) < 0.15, 0.0, ref)
    unbalanced = np.arange(400) % 10 == 0
    ref[unbalanced], worse[unbalanced] = 1.0, 0.0
    _gqa_run(tmp_path, "ref", ref, unbalanced, variant="full")
    _gqa_run(tmp_path, "worse", worse, unbalanced, variant="ablated")
    return tmp_path, ref, worse, unbalanced


def test_single_run_interval_counts_balanced_questions(gqa_balanced) -> None:
    root, ref, _, unbalanced = gqa_balanced
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, n_resamples=500, seed=3)
    row = next(r for r in board.sections[0].rows if r.variant == "full")
    acc = row.metrics["accuracy"]
    mean, low, high = bootstrap_interval(ref[~unbalanced], n_resamples=500, seed=3)
    assert acc.mean == pytest.approx(100 * mean)
    assert (acc.ci_low, acc.ci_high) == pytest.approx((100 * low, 100 * high))


def test_single_run_interval_refused_when_scores_disagree_with_record(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", scores={"testdev": np.array([1.0, 0.0] * 50)})
    record = json.loads((run / "run.json").read_text())
    record["metrics"]["testdev"]["accuracy"] = 60.0  # rescored since the per-question file
    (run / "run.json").write_text(json.dumps(record))
    runs, _ = find_runs([tmp_path])
    board = build_leaderboard(runs, n_resamples=200)
    acc = board.sections[0].rows[0].metrics["accuracy"]
    assert acc.mean == 60.0 and acc.ci_low is None
    assert any("do not give the run record's value" in n for n in board.notes)


def test_grid_mcnemar_counts_balanced_questions(gqa_balanced) -> None:
    root, ref, worse, unbalanced = gqa_balanced
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, reference=["variant=full"], n_resamples=500)
    row = next(r for r in board.sections[0].rows if r.variant == "ablated")
    kept = ~unbalanced
    a_only = int(np.sum((ref == 1) & (worse == 0) & kept))
    b_only = int(np.sum((ref == 0) & (worse == 1) & kept))
    assert row.versus.test == "mcnemar"
    assert row.versus.p_value == pytest.approx(mcnemar_exact(a_only, b_only))
    assert row.versus.delta == pytest.approx(100 * (worse[kept].mean() - ref[kept].mean()))


def test_grid_tests_soft_scores_with_sign_flips(tmp_path: Path) -> None:
    a = np.array([0.0] * 60 + [1.0] * 60)
    write_run(tmp_path, "ref", task="vqa", variant="full", scores={"minival": a})
    write_run(tmp_path, "up", task="vqa", variant="up",
              scores={"minival": np.where(a == 0.0, 0.3, 1.0)})
    runs, _ = find_runs([tmp_path])
    board = build_leaderboard(runs, reference=["variant=full"], n_resamples=999)
    row = next(r for r in board.sections[0].rows if r.variant == "up")
    assert row.versus.test == "sign-flip" and row.versus.p_value == pytest.approx(1 / 1000)


@pytest.mark.parametrize("kwargs,message", [({"n_resamples": 0}, "--resamples 0"),
                                            ({"confidence": 1.5}, "--confidence 1.5")])
def test_leaderboard_refuses_bad_resampling_options(tmp_path: Path, kwargs, message) -> None:
    write_run(tmp_path, "r", scores={"testdev": np.ones(10)})
    runs, _ = find_runs([tmp_path])
    with pytest.raises(ConfigError, match=message):
        build_leaderboard(runs, **kwargs)
