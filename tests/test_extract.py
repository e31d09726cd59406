"""`vlbench features extract`: grid region features from a timm backbone, read back by the
project's readers, resumable, with the weights' origin on record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import typer
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from vlbench.cli import app
from vlbench.cli import features as features_cli
from vlbench.data.extract import (
    META_SUFFIX,
    build_backbone,
    cell_boxes,
    extract_features,
    find_cached_pretrained,
    image_id,
    read_meta,
)
from vlbench.data.features import FeatureStore
from vlbench.data.tsv import iter_tsv
from vlbench.errors import CheckpointError, ConfigError, DataError

W, H = 64, 48
#: resnet18 has stride 32: a 96 px input gives a 3x3 map, the largest grid it can fill
RESNET = dict(backbone="resnet18", image_size=96, grid=3, batch_size=4, workers=0)


def _draw(path: Path, i: int, size: tuple[int, int] = (W, H)) -> None:
    img = Image.new("RGB", size, (20 * i % 256, 90, 200 - 10 * i))
    ImageDraw.Draw(img).rectangle([4 + i, 6, 30 + i, 40 - i], fill=(250, 15 * i % 256, 30))
    img.save(path)


@pytest.fixture(scope="module", autouse=True)
def _no_cached_weights(tmp_path_factory: pytest.TempPathFactory):
    """Empty weight caches, so "random" does not depend on what this machine has downloaded."""
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-hub")))
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
        yield


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images named like COCO (PNG) and GQA (JPEG) files, plus a file that is no image."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        _draw(folder / f"COCO_val2014_{i:012d}.png", i)
        _draw(folder / f"n{1000 + i}.jpg", i + 6)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _quiet(messages: list[str]):
    return messages.append


@pytest.fixture(scope="module")
def extracted(image_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    messages: list[str] = []
    out = tmp_path_factory.mktemp("out") / "grid.tsv"
    result = extract_features(image_dir, out, say=_quiet(messages), **RESNET)
    return result, messages


def test_random_weights_are_warned_about_and_recorded(extracted):
    result, messages = extracted
    warnings = [m for m in messages if m.startswith("warning")]
    assert len(warnings) == 1 and "RANDOM" in warnings[0] and "\n" not in warnings[0]
    meta = json.loads(result.meta_path.read_text())
    assert meta["weights"] == "random" and meta["weights_detail"] == {"seed": 0}
    assert meta == read_meta(result.path)
    assert meta["backbone"] == "resnet18" and meta["grid"] == 3 and meta["image_size"] == [96, 96]
    assert meta["data_config"]["crop_mode"] == "squash" and meta["data_config"]["input_size"] == [3, 96, 96]
    assert meta["images"] == 12 and meta["feat_dim"] == 512 and meta["feature_map"] == [3, 3]


def test_tsv_reads_back_as_grid_regions(extracted, image_dir: Path, tmp_path: Path):
    result, _ = extracted
    rows = list(iter_tsv(result.path))
    assert [r.img_id for r in rows] == sorted(image_id(p) for p in image_dir.iterdir() if p.suffix != ".txt")
    assert "COCO_val2014_000000000003" in {r.img_id for r in rows} and "n1002" in {r.img_id for r in rows}
    for r in rows:
        assert (r.img_w, r.img_h, r.num_boxes) == (W, H, 9)
        assert r.features.shape == (9, 512) and np.isfinite(r.features).all()
        assert (r.objects_id == -1).all() and (r.attrs_id == -1).all()
        assert (r.objects_conf == 0).all() and (r.attrs_conf == 0).all()
        # The cells tile the image: they cover it, in pixels, without overlapping.
        b = r.boxes.astype(np.float64)
        assert b[:, [0, 1]].min() == 0 and b[:, 2].max() == W and b[:, 3].max() == H
        assert np.isclose(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum(), W * H)
        np.testing.assert_array_equal(r.boxes, cell_boxes(3, W, H))
    assert not np.allclose(rows[0].features, rows[7].features)  # different images, different features
    store = FeatureStore.open(result.path, tmp_path / "cache")
    assert store.fingerprint == result.meta["fingerprint"] and store.feat_dim == 512
    assert store.get("n1000").boxes.max() == 1.0


def test_vit_patch_tokens_become_the_grid(image_dir: Path, tmp_path: Path):
    messages: list[str] = []
    result = extract_features(image_dir, tmp_path / "vit.tsv", backbone="vit_tiny_patch16_224",
                              image_size=64, grid=2, workers=2, limit=5, say=_quiet(messages))
    meta = result.meta
    assert meta["feature_map"] == [4, 4] and meta["feat_dim"] == 192 and meta["images"] == 5
    rows = list(iter_tsv(result.path))
    assert len(rows) == 5 and all(r.features.shape == (4, 192) for r in rows)
    assert all(np.isfinite(r.features).all() for r in rows)


def test_an_interrupted_extraction_resumes_to_the_same_bytes(extracted, image_dir: Path, tmp_path: Path):
    full, _ = extracted
    out = tmp_path / "grid.tsv"

    def stop_after_5(written: int) -> None:
        if written == 5:
            raise KeyboardInterrupt

    messages: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        extract_features(image_dir, out, say=_quiet(messages), after_image=stop_after_5, **RESNET)
    assert not out.exists() and out.with_name("grid.tsv.part").is_file()
    assert "5 of 12 images are saved" in messages[-1]
    with open(out.with_name("grid.tsv.part"), "ab") as f:
        f.write(b"n1000\t48\t64\tAAAA")  # a row cut short by a crash: computed again

    with pytest.raises(DataError, match="other settings"):
        extract_features(image_dir, out, say=_quiet([]), **{**RESNET, "grid": 2})
    result = extract_features(image_dir, out, say=_quiet(messages), **RESNET)
    assert (result.resumed, result.computed, result.images) == (5, 7, 12)
    assert out.read_bytes() == full.path.read_bytes()
    assert result.meta["fingerprint"] == full.meta["fingerprint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.tsv", "grid.tsv" + META_SUFFIX]
    with pytest.raises(DataError, match="already exists"):
        extract_features(image_dir, out, say=_quiet([]), **RESNET)


def test_a_weights_file_loads_and_changes_the_features(extracted, image_dir: Path, tmp_path: Path):
    full, _ = extracted
    torch.manual_seed(7)
    state = timm.create_model("resnet18").state_dict()  # with its classifier, as people save them
    weights = tmp_path / "resnet18.pth"
    torch.save(state, weights)
    messages: list[str] = []
    result = extract_features(image_dir, tmp_path / "w.tsv", weights=weights, say=_quiet(messages),
                              **RESNET)
    meta = result.meta
    assert meta["weights"].startswith("sha256:") and len(meta["weights"]) == 71
    assert meta["weights_detail"]["missing"] == [] and meta["weights_detail"]["unexpected"] == []
    assert sorted(meta["weights_detail"]["dropped_classifier"]) == ["fc.bias", "fc.weight"]
    assert not any(m.startswith("warning") for m in messages)
    loaded = {r.img_id: r.features for r in iter_tsv(result.path)}
    random = {r.img_id: r.features for r in iter_tsv(full.path)}
    assert not np.allclose(loaded["n1000"], random["n1000"])

    from safetensors.torch import save_file

    save_file(state, tmp_path / "resnet18.safetensors")
    net = build_backbone("resnet18", weights=tmp_path / "resnet18.safetensors", say=_quiet([]))
    assert torch.equal(net.model.state_dict()["conv1.weight"], state["conv1.weight"])
    with pytest.raises(CheckpointError, match="none of its"):
        torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
        build_backbone("resnet18", weights=tmp_path / "other.pth", say=_quiet([]))


class _Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_with_code_is_refused(tmp_path: Path):
    marker = tmp_path / "ran"
    weights = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, weights)
    with pytest.raises(CheckpointError, match="refused to load") as err:
        build_backbone("resnet18", weights=weights, say=_quiet([]))
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_pretrained_weights_come_from_the_local_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = timm.create_model("resnet18", num_classes=0)
    assert find_cached_pretrained(model) is None  # an empty cache: no download is tried
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    torch.manual_seed(3)
    state = timm.create_model("resnet18").state_dict()
    save_file(state, snapshot / "model.safetensors")
    assert find_cached_pretrained(model) == snapshot / "model.safetensors"

    messages: list[str] = []
    net = build_backbone("resnet18", say=_quiet(messages))
    assert net.weights == "timm-pretrained" and net.weights_detail["hf_hub_id"] == "timm/resnet18.a1_in1k"
    assert torch.equal(net.model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert not any(m.startswith("warning") for m in messages)
    assert constants.HF_HUB_OFFLINE is False  # the offline switch is put back


@pytest.mark.parametrize("case, error, message", [
    ("missing folder", DataError, "no such directory"),
    ("no images", DataError, "holds no image files"),
    ("unknown backbone", ConfigError, "did you mean resnet18"),
    ("grid too large", ConfigError, "larger than resnet18's 2x2 feature map at 64 px"),
])
def test_bad_input_is_one_line(case: str, error: type, message: str, image_dir: Path, tmp_path: Path):
    args = {**RESNET}
    images = image_dir
    if case == "missing folder":
        images = tmp_path / "nowhere"
    elif case == "no images":
        images = tmp_path / "empty"
        images.mkdir()
    elif case == "unknown backbone":
        args["backbone"] = "resnet18x"
    else:
        args.update(image_size=64, grid=3)
    with pytest.raises(error, match=message) as err:
        extract_features(images, tmp_path / "f.tsv", say=_quiet([]), **args)
    assert "\n" not in str(err.value)


def test_images_in_subfolders_are_read_and_a_repeated_id_is_refused(tmp_path: Path):
    """NLVR2 keeps its training images in numbered subfolders, COCO in train2014/ val2014/."""
    from vlbench.data.extract import list_images

    images = tmp_path / "train"
    for i, sub in enumerate(["0", "0", "1", "10", ".cache"]):
        (images / sub).mkdir(parents=True, exist_ok=True)
        _draw(images / sub / f"train-{i}-img0.png", i)
    assert [p.relative_to(images).as_posix() for p in list_images(images)] == [
        "0/train-0-img0.png", "0/train-1-img0.png", "1/train-2-img0.png", "10/train-3-img0.png"]
    _draw(images / "train-2-img0.jpg", 9)
    with pytest.raises(DataError, match=r"1/train-2-img0.png and train-2-img0.jpg both give "
                                        r"image id 'train-2-img0'"):
        list_images(images)


def test_an_unreadable_image_is_named_and_the_rest_resumes(image_dir: Path, tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "c.png"):
        (images / name).write_bytes((image_dir / "COCO_val2014_000000000001.png").read_bytes())
    (images / "b.jpg").write_bytes(b"not a jpeg")
    args = dict(backbone="resnet18", image_size=64, grid=2, batch_size=1, workers=0)
    with pytest.raises(DataError, match=r"b\.jpg: cannot be read as an image") as err:
        extract_features(images, tmp_path / "f.tsv", say=_quiet([]), **args)
    assert "\n" not in str(err.value)
    (images / "b.jpg").unlink()
    result = extract_features(images, tmp_path / "f.tsv", say=_quiet([]), **args)
    assert (result.resumed, result.computed) == (1, 1)
    assert [r.img_id for r in iter_tsv(result.path)] == ["a", "c"]


def test_cli_extract_and_list_backbones(image_dir: Path, tmp_path: Path):
    root = typer.Typer()
    root.add_typer(features_cli.app, name="features")  # as `vlbench features` registers it
    out = tmp_path / "cli.tsv"
    args = ["features", "extract", "--backbone", "resnet18", "--images", str(image_dir), "--out", str(out),
            "--image-size", "64", "--grid", "2", "--limit", "3", "--workers", "0", "--no-progress"]
    result = CliRunner().invoke(root, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert "RANDOM" in result.stderr and "data.features=" in result.stderr
    assert json.loads(Path(str(out) + META_SUFFIX).read_text())["images"] == 3
    again = CliRunner().invoke(root, args)
    assert isinstance(again.exception, DataError) and "--force" in str(again.exception)

    listing = CliRunner().invoke(app, ["list", "backbones", "resnet1*"])
    assert listing.exit_code == 0, listing.output
    assert "resnet18" in listing.stdout.split() and "vit_tiny_patch16_224" not in listing.stdout


def test_lxmert_trains_on_extracted_features(small_world: Path, tmp_path: Path):
    ids = set()
    for path in (small_world / "gqa").glob("*_balanced_questions.json"):
        ids |= {q["imageId"] for q in json.loads(path.read_text()).values()}
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for img_id in sorted(ids):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(images / f"{img_id}.png")
    tsv = extract_features(images, tmp_path / "gqa_grid.tsv", backbone="resnet18", image_size=64, grid=2,
                           batch_size=64, workers=0, say=_quiet([])).path

    result = CliRunner().invoke(app, [
        "train", "--model", "lxmert", "--task", "gqa", "--data", str(small_world), "--out", str(tmp_path / "runs"),
        "--set", f"data.features={tsv}", "--set", "train.epochs=1", "--set", "train.train_limit=64",
        "--set", "train.eval_limit=16"])
    assert result.exit_code == 0, result.output
    record = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["data"]["features"] == str(tsv)
    assert record["config"]["model"]["visual_feat_dim"] == 512
    # the run says which backbone and which weights its regions came from
    (meta,) = record["data"]["features_meta"].values()
    assert meta["backbone"] == "resnet18" and meta["weights"] == "random"
