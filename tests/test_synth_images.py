"""The synthetic world drawn as images: boxes, layouts, determinism, and an unchanged world.

The pictures are kept out of the world's fingerprint, so the region features, questions and
the fingerprint that committed runs are keyed on stay as they were before images existed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.images import ensure_images
from vlbench.data.synth.render import FLOOR, draw_scene, scale
from vlbench.data.synth.world import build_parts, generate, read_manifest
from vlbench.data.tsv import iter_tsv

#: a world of about a hundred images, generated in a fraction of a second
TINY = dict(n_images=24, vqa_train_images=12, vqa_val_images=6, vqa_minival_images=3,
            nlvr2_train_sets=4, nlvr2_dev_sets=2, nlvr2_test1_sets=2)
#: the fingerprint of ``generate(DIR, seed=3, **TINY)`` computed before the world had images
TINY_FINGERPRINT = "sha256:9b0400f8ab29d7ba3a4e5202ac79291690ab88bcb1d6b805098845ebb320a22c"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drawn") / "world"
    generate(root, seed=3, image_size=128, **TINY)
    return root


def _files(root: Path, pattern: str = "*") -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern))
            if p.is_file() and not p.name.endswith(".lock")}


def test_fingerprint_and_cache_name_are_those_of_the_world_without_images(drawn, tmp_path):
    from vlbench.data.source import generator_stamp

    manifest = read_manifest(drawn)
    assert manifest.fingerprint == TINY_FINGERPRINT
    # the embedded world's cache directory (world-seed0-<stamp>) keys the committed runs
    assert generator_stamp() == "c289724e9f"
    plain = generate(tmp_path / "plain", seed=3, **TINY)
    assert plain.images == {} and plain.fingerprint == TINY_FINGERPRINT
    without_images = {k: v for k, v in _files(drawn).items()
                      if "/images/" not in k and k != "manifest.json"}
    assert without_images == {k: v for k, v in _files(tmp_path / "plain").items()
                              if k != "manifest.json"}  # features and questions: same bytes
    ours = json.loads((drawn / "manifest.json").read_text())
    assert {k: v for k, v in ours.items() if k != "images"} == json.loads(
        (tmp_path / "plain" / "manifest.json").read_text())


def test_each_objects_pixels_lie_inside_its_tsv_box(drawn):
    rows = {r.img_id: r for r in iter_tsv(drawn / "features" / "synthetic_obj36.tsv")}
    checked = 0
    for _, data in build_parts(WorldConfig.from_overrides(**TINY), 3):
        for scene in data.scenes()[:12]:
            s, boxes = scale(scene, 128), rows[scene.image_id].boxes
            for i, obj in enumerate(scene.objects):
                alone = np.asarray(draw_scene(dataclasses.replace(scene, objects=[obj]), 128))
                ys, xs = np.nonzero((alone != np.array(FLOOR, dtype=np.uint8)).any(-1))
                assert len(xs), f"{obj} is not drawn"
                x1, y1, x2, y2 = boxes[i]  # pixel [x, x + 1) in TSV units is [x / s, (x + 1) / s)
                assert xs.min() / s >= x1 and (xs.max() + 1) / s <= x2, (scene.image_id, obj)
                assert ys.min() / s >= y1 and (ys.max() + 1) / s <= y2, (scene.image_id, obj)
                checked += 1
    assert checked > 100


def test_objects_are_drawn_where_the_scene_graph_puts_them(drawn):
    """In the full picture an object's box (less the others') holds its colour."""
    scene = build_parts(WorldConfig.from_overrides(**TINY), 3)[0][1].scenes()[0]
    picture = np.asarray(Image.open(drawn / "gqa" / "images" / f"{scene.image_id}.png"))
    s = scale(scene, 128)
    assert max(picture.shape[:2]) == 128
    assert picture.shape[:2] == (round(scene.height * s), round(scene.width * s))
    floor = (picture == np.array(FLOOR, dtype=np.uint8)).all(-1)
    covered = np.zeros_like(floor)
    for obj in scene.objects:
        x1, y1, x2, y2 = (round(v * s) for v in obj.box)
        covered[y1:y2, x1:x2] = True
        assert not floor[y1:y2, x1:x2].all(), obj  # something is drawn in every box
    assert floor[~covered].all()  # and nothing outside the boxes


def test_layouts_are_each_tasks_own(drawn):
    manifest = read_manifest(drawn)
    assert {k: v["folder"] for k, v in manifest.images.items()} == {
        "gqa": "gqa/images", "vqa": "vqa/images", "nlvr2": "nlvr2/images"}
    names = {str(p.relative_to(drawn)) for p in drawn.rglob("*.png")}
    assert len(names) == manifest.n_images
    assert sum(e["count"] for e in manifest.images.values()) == manifest.n_images
    gqa = json.loads((drawn / "gqa" / "train_balanced_questions.json").read_text())
    assert {f"gqa/images/{q['imageId']}.png" for q in gqa.values()} <= names
    vqa = json.loads((drawn / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    assert {f"vqa/images/val2014/COCO_val2014_{q['image_id']:012d}.png"
            for q in vqa["questions"]} <= names
    for split in ("train", "dev"):
        for line in (drawn / "nlvr2" / f"{split}.json").read_text().splitlines():
            row = json.loads(line)
            pair = row["identifier"].rsplit("-", 1)[0]
            folder = f"{split}/{row['directory']}" if split == "train" else split
            assert {f"nlvr2/images/{folder}/{pair}-img{side}.png" for side in (0, 1)} <= names


def test_two_generations_give_the_same_bytes(drawn, tmp_path):
    again = generate(tmp_path / "again", seed=3, image_size=128, **TINY)
    assert _files(tmp_path / "again") == _files(drawn)
    assert again.images == read_manifest(drawn).images
    other = generate(tmp_path / "other", seed=4, image_size=128, **TINY)
    assert other.images["gqa"]["fingerprint"] != again.images["gqa"]["fingerprint"]


def test_a_world_without_images_is_drawn_on_first_need(drawn, tmp_path):
    root = tmp_path / "late"
    generate(root, seed=3, **TINY)
    before = _files(root)
    manifest = ensure_images(root, ["gqa"])
    assert list(manifest.images) == ["gqa"] and manifest.fingerprint == TINY_FINGERPRINT
    assert _files(root / "gqa" / "images") == _files(drawn / "gqa" / "images")
    assert not (root / "vqa" / "images").exists()
    stamp = (root / "manifest.json").stat().st_mtime_ns
    ensure_images(root, ["gqa"])  # already there: nothing drawn, nothing rewritten
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    manifest = ensure_images(root)
    assert manifest.images == read_manifest(drawn).images
    assert {k: v for k, v in _files(root).items() if "/images/" not in k
            and k != "manifest.json"} == {k: v for k, v in before.items() if k != "manifest.json"}
    smaller = ensure_images(root, ["nlvr2"], size=96)  # another size: drawn again
    assert smaller.images["nlvr2"]["size"] == 96 and smaller.images["gqa"]["size"] == 128
    picture = Image.open(next((root / "nlvr2" / "images").rglob("*.png")))
    assert max(picture.size) == 96


def test_cli_draws_a_world_with_its_image_size(tmp_path):
    from typer.testing import CliRunner

    from vlbench.cli import app

    root = tmp_path / "w"
    generate(root, seed=3, **TINY)
    res = CliRunner().invoke(app, ["data", "images", "--data", str(root), "--image-size", "96"])
    assert res.exit_code == 0, res.output
    assert str(root) in res.output.splitlines()
    assert {e["size"] for e in read_manifest(root).images.values()} == {96}
