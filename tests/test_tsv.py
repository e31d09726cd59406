"""LXMERT feature TSV: round trip, compatibility with the original reader, malformed rows."""

from __future__ import annotations

import base64
import csv
import sys

import numpy as np
import pytest

from vlbench.data.tsv import FIELDNAMES, RegionRecord, format_row, iter_tsv, write_tsv
from vlbench.errors import DataError


def _record(img_id: str, n: int, dim: int = 8, seed: int = 0) -> RegionRecord:
    rng = np.random.default_rng(seed)
    x1y1 = rng.uniform(0, 200, size=(n, 2))
    boxes = np.concatenate([x1y1, x1y1 + rng.uniform(10, 100, size=(n, 2))], axis=1)
    return RegionRecord(
        img_id=img_id, img_h=480, img_w=640,
        objects_id=rng.integers(0, 1600, size=n), objects_conf=rng.random(n).astype(np.float32),
        attrs_id=rng.integers(0, 400, size=n), attrs_conf=rng.random(n).astype(np.float32),
        boxes=boxes.astype(np.float32), features=rng.standard_normal((n, dim)).astype(np.float32),
    )


def test_fieldnames_are_lxmert_order():
    assert FIELDNAMES == ["img_id", "img_h", "img_w", "objects_id", "objects_conf",
                          "attrs_id", "attrs_conf", "num_boxes", "boxes", "features"]


def test_round_trip(tmp_path):
    records = [_record("COCO_val2014_000000000042", 36, seed=1), _record("n161313", 10, seed=2)]
    path = tmp_path / "feats.tsv"
    assert write_tsv(path, iter(records)) == 2
    back = list(iter_tsv(path))
    assert [r.img_id for r in back] == [r.img_id for r in records]
    for a, b in zip(records, back, strict=True):
        assert (b.img_h, b.img_w, b.num_boxes, b.feat_dim) == (a.img_h, a.img_w, a.num_boxes, 8)
        for name in ("objects_id", "objects_conf", "attrs_id", "attrs_conf", "boxes", "features"):
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
        assert b.objects_id.dtype == np.int64 and b.features.dtype == np.float32
        assert b.boxes.shape == (a.num_boxes, 4)


def test_written_file_reads_with_lxmert_style_dictreader(tmp_path):
    """The file decodes the way LXMERT's load_obj_tsv decodes it (DictReader + frombuffer)."""
    rec = _record("img1", 5)
    path = tmp_path / "f.tsv"
    write_tsv(path, [rec])
    csv.field_size_limit(sys.maxsize)
    with open(path) as f:
        item = next(csv.DictReader(f, FIELDNAMES, delimiter="\t"))
    n = int(item["num_boxes"])
    feats = np.frombuffer(base64.b64decode(item["features"]), dtype=np.float32).reshape(n, -1)
    ids = np.frombuffer(base64.b64decode(item["objects_id"]), dtype=np.int64)
    np.testing.assert_array_equal(feats, rec.features)
    np.testing.assert_array_equal(ids, rec.objects_id)


def test_reads_crlf_rows_and_filters_ids(tmp_path):
    path = tmp_path / "crlf.tsv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\r\n")
        for i in range(3):
            writer.writerow(format_row(_record(f"img{i}", 4, seed=i)))
    assert [r.img_id for r in iter_tsv(path)] == ["img0", "img1", "img2"]
    assert [r.img_id for r in iter_tsv(path, ids={"img2"})] == ["img2"]


def _write_rows(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write("\t".join(row) + "\n")


def _good_row(img_id="img0", n=3, dim=4):
    return format_row(_record(img_id, n, dim))


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r[:7], "expected 10 tab-separated columns"),
        (lambda r: r[:1] + ["tall"] + r[2:], "column img_h is 'tall'"),
        (lambda r: r[:8] + ["@@not base64@@"] + r[9:], "column boxes is not valid base64"),
        (lambda r: r[:7] + ["5"] + r[8:], "column objects_id holds 24 bytes, expected 40"),
        (lambda r: r[:9] + [base64.b64encode(b"\0" * 13).decode()], "column features holds 13 bytes"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, mutate, needle):
    path = tmp_path / "bad.tsv"
    _write_rows(path, [_good_row("ok"), mutate(_good_row("broken"))])
    with pytest.raises(DataError) as err:
        list(iter_tsv(path))
    message = str(err.value)
    assert f"{path}:2:" in message
    assert needle in message


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(iter_tsv(tmp_path / "nope.tsv"))


def test_blank_trailing_line_is_ignored(tmp_path):
    path = tmp_path / "f.tsv"
    write_tsv(path, [_record("a", 2)])
    with open(path, "a") as f:
        f.write("\n")
    assert len(list(iter_tsv(path))) == 1


def test_a_stray_quote_is_reported_at_its_own_line(tmp_path):
    # csv quoting used to swallow every later line and report the error at the file's end.
    rows = [_good_row(f"img{i}") for i in range(5)]
    rows[1][0] = '"img1'
    path = tmp_path / "quote.tsv"
    _write_rows(path, rows)
    with pytest.raises(DataError, match=rf"{path}:2: column img_id holds a double quote"):
        list(iter_tsv(path))


@pytest.mark.parametrize("column", ["features", "boxes", "objects_conf"])
def test_non_finite_values_name_line_and_column(tmp_path, column):
    bad = _record("bad", 3, dim=4)
    getattr(bad, column).reshape(-1)[1] = np.nan
    path = tmp_path / "nan.tsv"
    write_tsv(path, [_record("ok", 3, dim=4), bad])
    with pytest.raises(DataError, match=rf"{path}:2: image 'bad': column {column} holds 1 NaN/inf"):
        list(iter_tsv(path))


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = tmp_path / "latin1.tsv"
    _write_rows(path, [_good_row("ok"), _good_row("caf\xe9")])
    path.write_bytes(path.read_bytes().replace("caf\xe9".encode(), b"caf\xe9"))
    with pytest.raises(DataError, match=rf"{path}:2: not UTF-8 text"):
        list(iter_tsv(path))


def test_ids_that_cannot_be_one_tsv_line_are_refused(tmp_path):
    with pytest.raises(DataError, match="tab or line break"):
        write_tsv(tmp_path / "f.tsv", [_record("two\nlines", 2)])
