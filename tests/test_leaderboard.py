"""Leaderboards from run directories written in the run-directory contract's format."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vlbench.cli.results import leaderboard as leaderboard_command
from vlbench.errors import ConfigError, DataError
from vlbench.results.leaderboard import build_leaderboard
from vlbench.results.records import find_runs, read_run, write_json_atomic
from vlbench.results.render import render
from vlbench.results.testing import write_run

scipy_stats = pytest.importorskip("scipy.stats")

OTHER_DATA = "sha256:" + "b" * 64


def _scores(rng: np.random.Generator, accuracy: float, n: int = 200) -> np.ndarray:
    return (rng.random(n) < accuracy).astype(float)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Three lxmert seeds, two 'small' seeds, a single-seed ablation, a real-data run, a VQA
    run, a run still training and a corrupt run.json."""
    rng = np.random.default_rng(0)
    for s in range(3):
        write_run(tmp_path, f"gqa-lxmert-s{s}", seed=s, scores={"testdev": _scores(rng, 0.62)},
                  baselines={"prior": {"testdev": {"accuracy": 21.0}}}, params=2_000_000)
    for s in range(2):
        write_run(tmp_path, f"gqa-small-s{s}", model="small", seed=s, params=300_000,
                  scores={"testdev": _scores(rng, 0.5)}, wall_seconds=40.0)
    write_run(tmp_path, "gqa-nopre-s0", variant="no-pretrain",
              scores={"testdev": _scores(rng, 0.3)})
    write_run(tmp_path, "gqa-real-s0", synthetic=False, fingerprint=OTHER_DATA,
              scores={"testdev": _scores(rng, 0.7)})
    write_run(tmp_path, "vqa-lxmert-s0", task="vqa",
              scores={"minival": rng.choice([0.0, 0.3, 0.6, 1.0], size=120)})
    write_run(tmp_path, "gqa-running", status="running", scores={"testdev": _scores(rng, 0.9)})
    bad = tmp_path / "gqa-corrupt"
    bad.mkdir()
    (bad / "run.json").write_text('{"run_id": "x",\n  "task": \n', encoding="utf-8")
    return tmp_path


def _row(board, model: str, variant: str | None = None, fingerprint: str | None = None):
    for section in board.sections:
        for row in section.rows:
            if row.model == model and (variant is None or row.variant == variant) and (
                    fingerprint is None or row.fingerprint == fingerprint):
                return section, row
    raise AssertionError(f"no row {model}/{variant}")


def test_corrupt_run_is_reported_and_skipped(root: Path) -> None:
    runs, problems = find_runs([root])
    assert len(runs) == 9
    assert len(problems) == 1
    assert problems[0].path == root / "gqa-corrupt" / "run.json"
    assert "line 3" in problems[0].message and "invalid JSON" in problems[0].message


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        find_runs([tmp_path / "nope"])


def test_seeds_grouped_with_t_interval(root: Path) -> None:
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, task="gqa")
    _, row = _row(board, "lxmert", "lxmert", "sha256:" + "a" * 64)
    values = [read_run(root / f"gqa-lxmert-s{s}").metrics["testdev"]["accuracy"] for s in range(3)]
    acc = row.metrics["accuracy"]
    assert row.n_seeds == 3 and sorted(row.seeds) == [0, 1, 2]
    assert acc.mean == pytest.approx(np.mean(values))
    assert acc.std == pytest.approx(np.std(values, ddof=1))
    low, high = scipy_stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (acc.ci_low, acc.ci_high) == pytest.approx((low, high))
    assert acc.method == "t"


def test_different_data_never_averaged_nor_ranked_together(root: Path) -> None:
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, task="gqa")
    synthetic, _ = _row(board, "lxmert", "lxmert", "sha256:" + "a" * 64)
    real, real_row = _row(board, "lxmert", "lxmert", OTHER_DATA)
    assert synthetic is not real
    assert real_row.n_seeds == 1 and not real_row.synthetic
    assert synthetic.title.endswith("(synthetic data)")
    assert "synthetic" not in real.title
    assert board.title == "vlbench leaderboard"  # mixed data: the page title does not claim it


def test_single_run_gets_bootstrap_interval(root: Path) -> None:
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, task="gqa")
    _, row = _row(board, "lxmert", "no-pretrain")
    acc = row.metrics["accuracy"]
    assert acc.method == "bootstrap" and acc.std is None
    assert acc.ci_low < acc.mean < acc.ci_high
    # Binomial standard error of 200 questions: the interval is about +- 2 SE wide.
    se = 100 * np.sqrt(acc.mean / 100 * (1 - acc.mean / 100) / 200)
    assert acc.ci_high - acc.ci_low == pytest.approx(2 * 1.96 * se, rel=0.2)
    # Metrics that are not means over questions get no interval.
    assert row.metrics["validity"].ci_low is None


def test_sorted_by_primary_metric_descending(root: Path) -> None:
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, task="gqa")
    section, _ = _row(board, "small")
    means = [r.metrics["accuracy"].mean for r in section.rows]
    assert means == sorted(means, reverse=True)
    assert [r.label for r in section.rows] == ["lxmert", "small", "lxmert / no-pretrain"]


def test_unfinished_runs_are_skipped_with_a_note(root: Path) -> None:
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, task="gqa")
    assert all("gqa-running" not in str(r.path) for s in board.sections for row in s.rows
               for r in row.runs)
    assert any("running" in n for n in board.notes)


def test_json_rows_name_their_fields(root: Path) -> None:
    runs, problems = find_runs([root])
    data = json.loads(render(build_leaderboard(runs, problems=problems), "json"))
    row = next(r for r in data["rows"] if r["variant"] == "small")
    for key in ("mean", "std", "ci_low", "ci_high", "n_seeds", "params", "train_examples_per_s",
                "wall_seconds", "data_fingerprint", "synthetic"):
        assert key in row
    assert row["n_seeds"] == 2 and row["params"] == 300_000 and row["wall_seconds"] == 40.0
    assert row["metrics"]["accuracy"]["mean"] == row["mean"]
    assert data["problems"][0]["path"].endswith("run.json")
    vqa = next(r for r in data["rows"] if r["task"] == "vqa")
    assert vqa["split"] == "minival" and vqa["ci_method"] == "bootstrap"


def test_filters_group_by_and_breakdowns(root: Path) -> None:
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, filters=["model=small"])
    assert [r.model for s in board.sections for r in s.rows] == ["small"]
    board = build_leaderboard(runs, filters=["task=gqa", "variant!=no-pretrain",
                                             "synthetic=true"])
    assert {r.variant for s in board.sections for r in s.rows} == {"lxmert", "small"}
    with pytest.raises(ConfigError, match="no run has key"):
        build_leaderboard(runs, filters=["colour=red"])
    with pytest.raises(ConfigError, match="key=value"):
        build_leaderboard(runs, filters=["model"])
    # Grouping by a config value only: lxmert and small seeds fall into one row per data.
    board = build_leaderboard(runs, task="gqa", group_by=["config.train.lr"])
    synthetic = next(s for s in board.sections if s.synthetic)
    assert [r.n_seeds for r in synthetic.rows] == [6]
    assert synthetic.rows[0].group == {"config.train.lr": "0.0001"}
    board = build_leaderboard(runs, task="gqa", breakdowns=True)
    assert "per_structural.query" in board.sections[0].metric_names
    assert build_leaderboard(runs, task="gqa", metric="binary").sections[0].metric == "binary"
    board = build_leaderboard(runs, task="vqa", metric="per_answer_type.other")
    assert board.sections[0].metric == "per_answer_type.other"
    board = build_leaderboard(runs, filters=["split=minival"])
    assert [(s.task, s.split) for s in board.sections] == [("vqa", "minival")]


def test_baseline_rows(root: Path) -> None:
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, task="gqa", baselines=True)
    _, row = _row(board, "prior (baseline)")
    assert row.kind == "baseline" and row.value("accuracy") == 21.0
    by_setting = build_leaderboard(runs, task="gqa", baselines=True, group_by=["seed"])
    named = [r.group["seed"] for r in by_setting.sections[0].rows if r.kind == "baseline"]
    assert "prior (baseline)" in named  # named in the first column when rows are not by model


def test_grid_flags_differences_that_survive_holm(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = _scores(rng, 0.6, 400)
    write_run(tmp_path, "ref", variant="full", scores={"testdev": base})
    flip = rng.random(400)
    # Much worse (surely significant), a little worse (not), and identical (p = 1).
    write_run(tmp_path, "worse", variant="no-vision",
              scores={"testdev": np.where(flip < 0.4, 0.0, base)})
    write_run(tmp_path, "close", variant="feat-only",
              scores={"testdev": np.where(flip < 0.01, 1 - base, base)})
    write_run(tmp_path, "same", variant="label-only", scores={"testdev": base})
    runs, _ = find_runs([tmp_path])
    board = build_leaderboard(runs, reference=["variant=full"], alpha=0.05)
    rows = {r.variant: r for r in board.sections[0].rows}
    assert rows["full"].is_reference and rows["full"].versus is None
    raw = [rows[v].versus.p_value for v in ("no-vision", "feat-only", "label-only")]
    assert all(rows[v].versus.test == "mcnemar" for v in ("no-vision", "feat-only"))
    assert raw[2] == 1.0
    from vlbench.results.stats import holm

    expected, _ = holm(raw)
    assert [rows[v].versus.p_holm for v in ("no-vision", "feat-only", "label-only")] == \
        pytest.approx(expected)
    assert rows["no-vision"].versus.significant
    assert not rows["feat-only"].versus.significant
    assert not rows["label-only"].versus.significant
    assert rows["no-vision"].versus.delta < -20
    table = render(board, "md")
    assert "Δ vs ref" in table and "| ref |" in table
    with pytest.raises(ConfigError, match="matches 4 rows"):
        build_leaderboard(runs, reference=["model=lxmert"])


def test_grid_pairs_the_same_seeds_and_uses_welch_otherwise(tmp_path: Path) -> None:
    for s, acc in enumerate([60.0, 61.0, 60.5]):
        write_run(tmp_path, f"a{s}", variant="full", seed=s, metrics={"val": {"accuracy": acc}})
    for s, acc in enumerate([50.0, 51.5, 50.2]):
        write_run(tmp_path, f"b{s}", variant="small", seed=s, metrics={"val": {"accuracy": acc}})
    for s, acc in zip((5, 6, 7), [58.0, 59.5, 57.0], strict=True):
        write_run(tmp_path, f"c{s}", variant="other-seeds", seed=s, metrics={"val": {"accuracy": acc}})
    runs, _ = find_runs([tmp_path])
    board = build_leaderboard(runs, reference=["variant=full"])
    rows = {r.variant: r for r in board.sections[0].rows}
    diffs = [-10.0, -9.5, -10.3]
    paired = scipy_stats.ttest_1samp(diffs, 0.0)
    interval = paired.confidence_interval(0.95)
    small = rows["small"].versus
    assert small.test == "paired-t" and small.p_value == pytest.approx(paired.pvalue, rel=1e-7)
    assert (small.ci_low, small.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-7)
    assert small.significant
    welch = scipy_stats.ttest_ind([58.0, 59.5, 57.0], [60.0, 61.0, 60.5], equal_var=False)
    other = rows["other-seeds"].versus
    assert other.test == "welch-t" and other.ci_low is None
    assert other.p_value == pytest.approx(welch.pvalue, rel=1e-7)
    table = render(board, "md")
    assert f"[{interval.low:+.2f}, {interval.high:+.2f}]" in table
    line = next(r for r in csv.DictReader(io.StringIO(render(board, "csv"))) if r["variant"] == "small")
    assert float(line["delta_ci_low"]) == pytest.approx(interval.low, abs=1e-6)
    assert float(line["ci_low"]) < float(line["mean"])  # the metric's own interval, not the delta's


def test_text_formats(root: Path) -> None:
    runs, _ = find_runs([root])
    board = build_leaderboard(runs, task="gqa", filters=["synthetic=true"])
    md = render(board, "md")
    assert md.startswith("# vlbench leaderboard (synthetic data)")
    assert "| # | Model | Variant | Objectives | Seeds | accuracy | 95% CI |" in md
    assert "± " in md
    rows = list(csv.DictReader(io.StringIO(render(board, "csv"))))
    assert [r["variant"] for r in rows] == ["lxmert", "small", "no-pretrain"]
    assert float(rows[0]["accuracy.ci_low"]) < float(rows[0]["mean"])
    tex = render(board, "latex")
    assert r"\toprule" in tex and r"$\pm$" in tex and r"95\% CI" in tex
    with pytest.raises(ConfigError, match="unknown"):
        render(board, "xlsx")


def test_rescore_updates_history(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_rescore_run(run_dir: Path) -> dict:
        calls.append(Path(run_dir))
        old = read_run(run_dir).metrics
        return {split: {**m, "accuracy": 99.0} for split, m in old.items()}

    scoring = types.ModuleType("vlbench.engine.scoring")
    scoring.rescore_run = fake_rescore_run
    monkeypatch.setitem(sys.modules, "vlbench.engine.scoring", scoring)
    app = typer.Typer()
    app.command()(leaderboard_command)
    result = CliRunner().invoke(app, [str(root), "--task", "gqa", "--rescore",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {r["mean"] for r in data["rows"]} == {99.0}
    record = read_run(root / "gqa-small-s0").record
    assert record["metrics"]["testdev"]["accuracy"] == 99.0
    assert record["rescored"][0]["previous_metrics"]["testdev"]["accuracy"] != 99.0
    # The running run was left alone; the VQA run was rescored too (it is in the paths).
    assert root / "gqa-running" not in calls and root / "vqa-lxmert-s0" in calls


def test_cli_leaderboard(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    app = typer.Typer()
    app.command()(leaderboard_command)
    runner = CliRunner()
    result = runner.invoke(app, [str(root), "--task", "gqa", "--filter", "synthetic=true"])
    assert result.exit_code == 0, result.output
    assert "GQA testdev, data aaaaaaaa (synthetic data)" in result.stdout
    assert "skipped" in result.stderr and "gqa-corrupt" in result.stderr
    out = tmp_path_factory.mktemp("out") / "board.md"
    result = runner.invoke(app, [str(root), "--out", str(out), "--group-by", "model,variant"])
    assert result.exit_code == 0, result.output
    assert "| # | Model | Variant | Seeds |" in out.read_text()
    result = runner.invoke(app, [str(root / "missing")])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "no such file" in result.stderr
    result = runner.invoke(app, [str(root), "--task", "nlvr2"])
    assert result.exit_code == 2 and "no finished run" in result.stderr
    result = runner.invoke(app, [str(root), "--format", "yaml"])
    assert result.exit_code == 2 and "--format yaml" in result.stderr


def _write_records(root: str, worker: int, count: int) -> None:
    """One writer process: its own runs, plus rewrites of a record every writer shares."""
    base = Path(root)
    for i in range(count):
        write_run(base, f"w{worker}-r{i}", seed=i, metrics={"val": {"accuracy": float(i)}})
        shared = json.loads((base / "shared" / "run.json").read_text())
        shared["metrics"] = {"val": {"accuracy": float(worker * 1000 + i)}, "pad": ["x"] * 2000}
        write_json_atomic(base / "shared" / "run.json", shared)


def _read_records(root: str, done, queue: multiprocessing.Queue) -> None:
    """A reader racing the writers until they finish: every read of the shared record parses."""
    reads = bad = 0
    while not done.is_set():
        try:
            read_run(Path(root) / "shared")
        except DataError:
            bad += 1
        reads += 1
    queue.put((reads, bad))


def test_concurrent_writers_lose_no_records(tmp_path: Path) -> None:
    write_run(tmp_path, "shared", metrics={"val": {"accuracy": 0.0}})
    workers, count = 4, 12
    # fork starts workers without re-importing this module; spawn where fork is missing.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    queue, done = ctx.Queue(), ctx.Event()
    # Daemons, stopped in `finally`: a failing writer must not leave the reader spinning.
    reader = ctx.Process(target=_read_records, args=(str(tmp_path), done, queue), daemon=True)
    writers = [ctx.Process(target=_write_records, args=(str(tmp_path), w, count), daemon=True)
               for w in range(workers)]
    try:
        reader.start()
        for p in writers:
            p.start()
        for p in writers:
            p.join(timeout=120)
        assert [p.exitcode for p in writers] == [0] * workers
        done.set()
        reads, bad = queue.get(timeout=60)
    finally:
        done.set()
        for p in [reader, *writers]:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    assert reads > 0 and bad == 0
    runs, problems = find_runs([tmp_path])
    assert problems == []
    assert len(runs) == workers * count + 1
    names = {r.path.name for r in runs}
    assert all(f"w{w}-r{i}" in names for w in range(workers) for i in range(count))
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


def test_single_run_intervals_follow_the_records_metric_units(tmp_path: Path) -> None:
    """A single run's bootstrap interval covers the metrics its record says are means over
    per-question units; a record of an earlier release gets one for accuracy only, and a
    malformed description is a note, not a crash."""
    rng = np.random.default_rng(3)
    units = {"accuracy": {}, "binary": {"where": {"structural": ["!query"]}}}
    write_run(tmp_path / "new", "r", scores={"testdev": _scores(rng, 0.6)}, metric_units=units)
    old = write_run(tmp_path / "old", "r", scores={"testdev": _scores(rng, 0.6)})
    record = json.loads((old / "run.json").read_text())
    del record["metric_units"], record["category_kinds"]
    write_json_atomic(old / "run.json", record)
    for folder, described in (("new", {"accuracy", "binary"}), ("old", {"accuracy"})):
        runs, _ = find_runs([tmp_path / folder])
        row = build_leaderboard(runs, n_resamples=200).sections[0].rows[0]
        with_interval = {n for n, s in row.metrics.items() if s.method == "bootstrap"}
        assert with_interval == described, folder
    record["metric_units"] = {"accuracy": {"over": "sentences"}}
    write_json_atomic(old / "run.json", record)
    runs, _ = find_runs([tmp_path / "old"])
    board = build_leaderboard(runs, n_resamples=200)
    assert board.sections[0].rows[0].metrics["accuracy"].ci_low is None
    assert any("metric_units.accuracy" in n and "'over'" in n for n in board.notes)


def test_unusable_records_are_skipped_with_a_note_not_a_blank_row(root: Path) -> None:
    """A NaN metric, a string seed or bytes that are not UTF-8 used to blank a row or end the
    command with a traceback; now each record is skipped and named, the others still count."""
    rng = np.random.default_rng(1)

    def spoil(name: str, **changes: object) -> Path:
        path = write_run(root, name, seed=9, scores={"testdev": _scores(rng, 0.6)}) / "run.json"
        record = json.loads(path.read_text())
        for key, value in changes.items():
            node = record
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        path.write_text(json.dumps(record))
        return path

    spoil("gqa-lxmert-nan", **{"metrics.testdev.accuracy": float("nan")})
    spoil("gqa-lxmert-seed", seed="9")
    raw = spoil("gqa-lxmert-bytes")
    raw.write_bytes(raw.read_bytes().replace(b'"lxmert"', b'"lxm\xe9rt"', 1))
    runs, problems = find_runs([root])
    messages = {p.path.parent.name: p.message for p in problems}
    assert "'metrics.testdev.accuracy' is not a finite number" in messages["gqa-lxmert-nan"]
    assert "'seed' is '9', expected an integer" in messages["gqa-lxmert-seed"]
    assert "not UTF-8" in messages["gqa-lxmert-bytes"]
    board = build_leaderboard(runs, task="gqa")
    _, row = _row(board, "lxmert", "lxmert", "sha256:" + "a" * 64)
    assert row.n_seeds == 3 and 55 < row.value("accuracy") < 70
    app = typer.Typer()
    app.command()(leaderboard_command)
    result = CliRunner().invoke(app, [str(root), "--task", "gqa"])
    assert result.exit_code == 0, result.output
    for name in messages:
        assert any(f"skipped {root / name / 'run.json'}" in line for line in result.stderr.splitlines())


def test_other_visual_inputs_on_the_same_questions_share_a_section(tmp_path: Path) -> None:
    """Detector regions, grid features and pixels answer the same questions: one section,
    one row each (never averaged together), one set of baselines, compared by seed."""
    rng = np.random.default_rng(1)
    same = "sha256:" + "c" * 64
    inputs = {"regions": ("lxmert", "a", None, 0.62), "grid": ("lxmert", "d", "resnet18", 0.55),
              "pixels": ("vilt", "e", None, 0.45)}
    for name, (model, data, backbone, accuracy) in inputs.items():
        for s in range(2):
            run = write_run(tmp_path, f"{name}-s{s}", model=model, seed=s,
                            fingerprint="sha256:" + data * 64, questions=same,
                            scores={"testdev": _scores(rng, accuracy)},
                            baselines={"prior": {"testdev": {"accuracy": 21.0}}})
            record = read_run(run).record
            record["data"]["features_meta"] = (  # per feature file, as runs record it
                {"/f/grid.tsv": {"backbone": backbone, "weights": "random"}} if backbone else None)
            if model == "vilt":
                record["data"]["images"] = {"folder": "gqa/images", "fingerprint": "sha256:e"}
            write_json_atomic(run / "run.json", record)
    runs, _ = find_runs([tmp_path])
    board = build_leaderboard(runs, baselines=True, reference=["model=vilt"])
    assert len(board.sections) == 1 and board.sections[0].fingerprint == same
    rows = board.sections[0].rows
    assert sorted(r.label for r in rows) == ["lxmert", "lxmert", "prior (baseline)", "vilt"]
    assert all(r.versus is not None for r in rows if r.kind == "runs" and r.model == "lxmert")
    assert any("2 rows named 'lxmert' read different inputs" in n for n in board.notes)
    named = build_leaderboard(runs, group_by=["model", "inputs"])
    assert sorted(r.label for r in named.sections[0].rows) == [
        "lxmert / grid resnet18 (random)", "lxmert / regions", "vilt / pixels"]
    assert not any("read different inputs" in n for n in named.notes)
