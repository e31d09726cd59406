"""`vlbench probe`: linear probes of frozen states, on the small synthetic world."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vlbench.cli.probe import probe as probe_command
from vlbench.data.features import FeatureStore
from vlbench.data.source import cache_root
from vlbench.data.synth.vocab import OBJECT_IDS
from vlbench.results.probe import (
    SCENE,
    collect,
    image_folds,
    match_regions,
    run_probe,
)
from vlbench.tasks.gqa.scene_graphs import scene_objects

QUICK = ["--set", "train.epochs=2", "--set", "train.train_limit=384", "--set", "train.eval_limit=64"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The probe command on an app of its own (the test does not depend on its registration)."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(lambda: None)  # keep `probe` a subcommand, as in `vlbench probe`
    app.command("probe")(probe_command)
    return app


@pytest.fixture(scope="module")
def store(small_world: Path) -> FeatureStore:
    return FeatureStore.open(sorted((small_world / "features").glob("*.tsv")),
                             cache_root() / "features")


@pytest.fixture(scope="module")
def quick_run(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlbench.cli import app as vlbench_app

    out = tmp_path_factory.mktemp("probe-runs")
    result = CliRunner().invoke(vlbench_app, ["pretrain", "--model", "lxmert", "--data", str(small_world),
                                              "--out", str(out), *QUICK])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def test_regions_are_the_scene_objects_in_order(small_world: Path, store: FeatureStore):
    graphs = scene_objects(small_world, store, 10_000)
    assert len(graphs) > 100
    agree = total = 0
    for img_id, (boxes, objects) in graphs.items():
        regions = store.get(img_id)
        assert regions.num_boxes == len(objects)
        assert np.array_equal(match_regions(np.asarray(regions.boxes), boxes), np.arange(len(objects)))
        agree += sum(OBJECT_IDS[o["category"]] == i
                     for o, i in zip(objects, regions.objects_id, strict=True))
        total += len(objects)
    assert agree / total > 0.9  # the detector's label noise is 5%


def test_match_regions_pairs_by_overlap_not_order():
    objects = np.array([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9], [0.3, 0.0, 0.4, 0.1]])
    regions = np.array([[0.51, 0.5, 0.9, 0.88], [0.6, 0.1, 0.7, 0.2], [0.0, 0.01, 0.2, 0.21]])
    assert match_regions(regions, objects).tolist() == [1, -1, 0]


def test_folds_keep_an_image_on_one_side():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), rng.integers(3, 9, size=60))
    labels = rng.integers(0, 4, size=groups.size).astype(str)
    folds = image_folds(labels, groups, k=5, seed=0)
    assert len(folds) == 5
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    tested = np.sort(np.concatenate([test for _, test in folds]))
    assert np.array_equal(tested, np.arange(groups.size))  # every region tested exactly once
    again = image_folds(labels, groups, k=5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_collect_reads_scene_properties(small_world: Path, store: FeatureStore):
    from vlbench.data.source import resolve_data

    data = collect(resolve_data(small_world, quiet=True), store, 50)
    assert len(data.img_ids) == 50 and data.annotated_by == "gqa" and data.matched == 1.0
    names = {t.name: t for t in data.targets}
    assert {"object label", "attribute label", "category", "color", "material", "size",
            "objects in the image"} <= set(names)
    assert names["category"].source == SCENE and names["category"].labels.size == data.num_regions
    assert names["objects in the image"].labels.size == 50
    assert data.mask.sum() == data.num_regions


def test_random_backbone_reads_labels_beyond_majority(small_world: Path):
    # Region features are a noisy projection of the object's properties, so even random
    # layers keep them linearly readable.
    report = run_probe([], random_models=["lxmert"], data_dir=small_world, images=80)
    rows = {p.name: p for p in report.properties}
    for name in ("object label", "category", "color"):
        row = rows[name]
        assert row.scores["random lxmert"].interval.ci_low > row.majority.interval.ci_high + 20, name
    assert report.data["images"] == 80 and report.subjects[0]["kind"] == "random"


def test_cli_compares_a_run_with_random_init(app: typer.Typer, quick_run: Path, tmp_path: Path):
    stem = tmp_path / "probe"
    result = CliRunner().invoke(app, ["probe", str(quick_run), "--random", "lxmert", "--images", "80",
                                      "--label", "quick", "--label", "random", "--out", str(stem)])
    assert result.exit_code == 0, result.output
    plots = importlib.util.find_spec("matplotlib") is not None  # the plot is an optional extra
    for suffix in (".md", ".csv", ".json", ".png")[:4 if plots else 3]:
        assert (tmp_path / f"probe{suffix}").stat().st_size > 0, suffix
    report = json.loads((tmp_path / "probe.json").read_text())
    assert [s["label"] for s in report["subjects"]] == ["quick", "random"]
    assert report["subjects"][0]["kind"] == "run" and report["subjects"][0]["command"]
    category = next(p for p in report["properties"] if p["name"] == "category")
    assert category["scores"]["quick"]["interval"]["mean"] > category["majority"]["interval"]["ci_high"]
    md = (tmp_path / "probe.md").read_text()
    assert "| Property | Level | Classes | Majority | quick | random |" in md
    assert f"Regenerate: `vlbench probe {quick_run} --random lxmert" in md
    header = (tmp_path / "probe.csv").read_text().splitlines()[0]
    assert header.startswith("property,source,level,classes,rows,majority,")


def test_bad_path_is_a_one_line_error(app: typer.Typer, tmp_path: Path):
    result = CliRunner().invoke(app, ["probe", str(tmp_path / "missing")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such file or directory" in lines[0]


def test_label_count_must_match(app: typer.Typer):
    result = CliRunner().invoke(app, ["probe", "--random", "lxmert", "--label", "a", "--label", "b"])
    assert result.exit_code == 2 and "--label" in result.stderr


def test_data_without_scene_graphs_is_probed_on_detector_labels(small_world: Path, tmp_path: Path):
    (tmp_path / "features").mkdir()
    for tsv in (small_world / "features").glob("*.tsv"):
        (tmp_path / "features" / tsv.name).symlink_to(tsv)
    report = run_probe([], random_models=["lxmert_tiny"], data_dir=tmp_path, images=60)
    assert not report.data["annotations"]
    assert {p.source for p in report.properties} == {"detector"}
    names = [p.name for p in report.properties]
    assert names[:2] == ["object label", "attribute label"] and "category" not in names
    assert any(n.startswith("has label ") for n in names)
