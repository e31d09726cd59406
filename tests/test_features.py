"""FeatureStore: normalised boxes, padding, missing ids, cache reuse and invalidation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vlbench.data.features import FeatureStore, content_fingerprint
from vlbench.data.tsv import RegionRecord, write_tsv
from vlbench.errors import DataError

DIM = 6


def _record(img_id: str, n: int, w: int = 640, h: int = 480, seed: int = 0) -> RegionRecord:
    rng = np.random.default_rng(seed)
    boxes = np.array([[10 * i, 5 * i, 10 * i + 100, 5 * i + 50] for i in range(n)], np.float32)
    return RegionRecord(
        img_id=img_id, img_h=h, img_w=w,
        objects_id=np.arange(n, dtype=np.int64), objects_conf=np.full(n, 0.9, np.float32),
        attrs_id=np.arange(n, dtype=np.int64) + 7, attrs_conf=np.full(n, 0.5, np.float32),
        boxes=boxes, features=rng.standard_normal((n, DIM)).astype(np.float32),
    )


@pytest.fixture
def tsvs(tmp_path):
    a = [_record("a0", 3, seed=1), _record("a1", 5, seed=2)]
    # A box past the image edge by detector rounding (2 px) must come out clipped to 1.
    wide = _record("b0", 2, w=100, h=100, seed=3)
    wide.boxes[1] = [20, 10, 102, 60]
    paths = [tmp_path / "a.tsv", tmp_path / "b.tsv"]
    write_tsv(paths[0], a)
    write_tsv(paths[1], [wide])
    return paths, {r.img_id: r for r in [*a, wide]}


def test_get_returns_features_and_normalised_boxes(tsvs, tmp_path):
    paths, records = tsvs
    store = FeatureStore.open(paths, tmp_path / "cache")
    assert store.ids == ["a0", "a1", "b0"] and len(store) == 3
    assert store.feat_dim == DIM and store.max_boxes == 5
    assert "a1" in store and "zz" not in store
    r = store.get("a1")
    np.testing.assert_array_equal(r.features, records["a1"].features)
    expected = records["a1"].boxes / np.array([640, 480, 640, 480], np.float32)
    np.testing.assert_allclose(r.boxes, expected, rtol=1e-6)
    assert r.num_boxes == 5 and (r.img_h, r.img_w) == (480, 640)
    np.testing.assert_array_equal(r.attrs_id, np.arange(5) + 7)
    b = store.get("b0")
    np.testing.assert_allclose(b.boxes[1], [0.2, 0.1, 1.0, 0.6], rtol=1e-6)
    assert b.boxes.min() >= 0 and b.boxes.max() <= 1


def test_batch_pads_with_zeros_and_mask(tsvs, tmp_path):
    paths, records = tsvs
    store = FeatureStore.open(paths, tmp_path / "cache")
    feats, boxes, mask = store.batch(["a0", "a1"])
    assert feats.shape == (2, 5, DIM) and boxes.shape == (2, 5, 4) and mask.shape == (2, 5)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(feats[0, :3], records["a0"].features)
    assert not feats[0, 3:].any() and not boxes[0, 3:].any()
    feats4, _, mask4 = store.batch(["a1"], max_boxes=4)  # truncation keeps the first regions
    assert feats4.shape == (1, 4, DIM) and mask4.sum() == 4
    np.testing.assert_array_equal(feats4[0], records["a1"].features[:4])


def test_missing_id_says_which_id_and_store(tsvs, tmp_path):
    paths, _ = tsvs
    store = FeatureStore.open(paths, tmp_path / "cache")
    with pytest.raises(DataError) as err:
        store.batch(["a0", "COCO_val2014_000000000001"])
    message = str(err.value)
    assert "COCO_val2014_000000000001" in message and "a.tsv" in message
    assert "add the TSV" in message


def test_cache_is_reused_then_rebuilt_when_a_tsv_changes(tsvs, tmp_path):
    paths, _ = tsvs
    cache = tmp_path / "cache"
    first = FeatureStore.open(paths, cache)
    index = first.path / "index.json"
    stamp = index.stat().st_mtime_ns
    os.utime(index, ns=(stamp - 10**9, stamp - 10**9))  # mark the build
    again = FeatureStore.open(paths, cache)
    assert again.path == first.path
    assert index.stat().st_mtime_ns == stamp - 10**9  # not rebuilt
    assert again.fingerprint == first.fingerprint == content_fingerprint(paths)
    assert first.fingerprint.startswith("sha256:")

    write_tsv(paths[1], [_record("b0", 2, seed=99)])  # new content, size or mtime change
    st = paths[1].stat()
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rebuilt = FeatureStore.open(paths, cache)
    assert rebuilt.fingerprint != first.fingerprint
    np.testing.assert_array_equal(rebuilt.get("b0").features, _record("b0", 2, seed=99).features)


def test_cache_files_are_npy_memmaps_with_an_index(tsvs, tmp_path):
    paths, _ = tsvs
    store = FeatureStore.open(paths, tmp_path / "cache")
    feats = np.load(store.path / "features.npy", mmap_mode="r")
    assert isinstance(feats, np.memmap) and feats.shape == (10, DIM)
    with open(store.path / "index.json") as f:
        index = json.load(f)
    assert index["ids"] == ["a0", "a1", "b0"] and index["num_regions"] == 10


@pytest.mark.filterwarnings("error")  # a failed build must not leak open cache files
def test_mixed_feature_dims_are_rejected(tmp_path):
    path = tmp_path / "mixed.tsv"
    odd = _record("x1", 2)
    odd.features = np.zeros((2, DIM + 1), np.float32)
    write_tsv(path, [_record("x0", 2), odd])
    with pytest.raises(DataError, match=r"mixed.tsv:2: .*7-d features"):
        FeatureStore.open(path, tmp_path / "cache")


def test_duplicate_ids_keep_the_first_row(tmp_path):
    path = tmp_path / "dup.tsv"
    write_tsv(path, [_record("x", 2, seed=1), _record("x", 3, seed=2)])
    store = FeatureStore.open(path, tmp_path / "cache", duplicate_ids="first")
    assert store.ids == ["x"] and store.num_boxes("x") == 2 and store.duplicates == 1


def test_duplicate_ids_are_an_error_naming_both_rows_unless_a_row_is_chosen(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    write_tsv(a, [_record("x", 2, seed=1)])
    write_tsv(b, [_record("y", 2), _record("x", 3, seed=2)])
    with pytest.raises(DataError, match=r"image id 'x' is given by .*a\.tsv:1 and again by .*b\.tsv:2"):
        FeatureStore.open([a, b], tmp_path / "cache")
    last = FeatureStore.open([a, b], tmp_path / "cache", duplicate_ids="last")
    assert last.num_boxes("x") == 3 and last.ids == ["x", "y"]  # LXMERT's dict keeps the last


def test_boxes_beyond_the_tolerance_are_an_error(tmp_path):
    path = tmp_path / "far.tsv"
    far = _record("far", 2, w=100, h=100)
    far.boxes[:] = [[20, 10, 110, 60], [10, 5, 60, 55]]  # the first 10 px past the right edge
    write_tsv(path, [far])
    with pytest.raises(DataError, match=r"far\.tsv:1: image 'far' \(100x100 px\) has a box 10\.0 px"):
        FeatureStore.open(path, tmp_path / "cache")
    store = FeatureStore.open(path, tmp_path / "cache", validate=False)  # what data check reads
    assert store.audit["boxes_outside"]["count"] == 1 and len(store.errors()) == 1


def test_a_zeroed_cache_file_is_rebuilt_not_read(tsvs, tmp_path):
    paths, records = tsvs
    first = FeatureStore.open(paths, tmp_path / "cache")
    target = first.path / "features.npy"
    target.write_bytes(b"\0" * target.stat().st_size)
    again = FeatureStore.open(paths, tmp_path / "cache")
    assert "features.npy" in again.rebuilt
    np.testing.assert_array_equal(again.get("a1").features, records["a1"].features)


def test_confidence_order_keeps_the_most_confident_regions(tmp_path):
    rec = _record("c", 4)
    rec.objects_conf[:] = [0.1, 0.9, 0.3, 0.8]
    write_tsv(tmp_path / "c.tsv", [rec])
    store = FeatureStore.open(tmp_path / "c.tsv", tmp_path / "cache", box_order="confidence")
    feats, _, mask = store.batch(["c"], max_boxes=2)
    np.testing.assert_array_equal(feats[0], rec.features[[1, 3]])
    assert store.crowded(2) == (1, 4) and mask.sum() == 2
