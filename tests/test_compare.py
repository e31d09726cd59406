"""``vlbench compare``: paired differences, McNemar, categories, flips, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vlbench.cli.results import compare as compare_command
from vlbench.errors import ConfigError, DataError
from vlbench.results.compare import compare_paths
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
    with pytest.raises(DataError, match="different data"):
        compare_paths(a, other_data)
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
        row["balanced"] = not skip
    metrics = metrics_for("gqa", [r for r in rows if r["balanced"]])
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
    """Per-question files that disagree with run.json (e.g. GQA rows without the balanced
    mark) would give an interval and a p-value for another number: none is shown."""
    a, b = _pair(300, both=150, a_only=12, b_only=31)
    unbalanced = np.arange(300) % 10 == 3
    a[unbalanced], b[unbalanced] = 0.0, 1.0
    a_dir = _gqa_run(tmp_path, "a", a, unbalanced)
    b_dir = _gqa_run(tmp_path, "b", b, unbalanced, variant="better")
    for run in (a_dir, b_dir):  # drop the mark, as records written before it
        path = run / "per_question" / "testdev.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "balanced"})
                                + "\n" for r in rows))
    c = compare_paths(a_dir, b_dir, n_resamples=500)
    head = c.headline
    assert head.source == "run.json" and head.ci_low is None and head.p_value is None
    assert head.delta == pytest.approx(head.b - head.a)
    assert any(n.startswith("accuracy:") and "do not mark balanced" in n for n in c.notes)
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
