"""A run's reuse key covers what it reads beyond the data directory's own files.

``--reuse`` (and ``leaderboards/make.sh``) must not keep a run whose inputs changed under the
same config: the images a pixel model reads can be drawn again (another size, another
renderer) and a feature TSV named by ``data.features`` can be extracted again into the same
path. A run on the world's own region features keeps the key it always had.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlbench.data.synth.images import ensure_images
from vlbench.data.synth.world import generate, read_manifest
from vlbench.engine.session import planned_inputs

TINY = dict(n_images=24, vqa_train_images=12, vqa_val_images=6, vqa_minival_images=3,
            nlvr2_train_sets=4, nlvr2_dev_sets=2, nlvr2_test1_sets=2)


@pytest.fixture()
def world(tmp_path) -> Path:
    root = tmp_path / "world"
    generate(root, seed=3, **TINY)
    return root


def _planned(model: str, world: Path, task: str = "gqa", **overrides: str) -> dict:
    return planned_inputs(model, task, data_dir=str(world), seed=0, overrides=overrides,
                          say=lambda _: None)


def test_region_runs_read_nothing_else(world):
    assert "read" not in _planned("lxmert", world)


def test_a_pixel_run_is_keyed_by_its_images(world):
    first = _planned("vilt", world)
    assert first["read"] == {"images": read_manifest(world).images["gqa"]["fingerprint"]}
    ensure_images(world, ["gqa"], size=96, say=lambda _: None)  # the same scenes, drawn smaller
    again = _planned("vilt", world)
    assert again["read"]["images"] != first["read"]["images"] and again["key"] != first["key"]


def test_a_named_feature_tsv_is_keyed_by_its_content(world, tmp_path):
    tsv = tmp_path / "grid.tsv"
    rows = next((world / "features").glob("*.tsv")).read_text().splitlines(keepends=True)
    tsv.write_text("".join(rows))
    first = _planned("lxmert", world, **{"data.features": str(tsv)})
    assert first["read"]["features"].startswith("sha256:")
    tsv.write_text("".join(rows[:-1]))  # extracted again into the same path: one image fewer
    again = _planned("lxmert", world, **{"data.features": str(tsv)})
    assert again["read"]["features"] != first["read"]["features"]
    assert again["key"] != first["key"]
