"""Tasks feed pixels to a model that reads them (ViLT) and regions to the others.

GQA, VQA and NLVR2 load the rendered images of a synthetic world (drawn on first need) with
ViLT's preprocessing into ``pixel_values``/``pixel_mask``; runs record which images they
read; what still cannot work is refused with one line.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlbench.data.images import MEAN, STD, load_pixels
from vlbench.data.synth.images import ensure_images
from vlbench.data.synth.world import generate, read_manifest
from vlbench.engine.backbone import LANGUAGE_STATES, model_entry
from vlbench.engine.session import new_session
from vlbench.errors import ConfigError, DataError

#: a world of about a hundred images, generated in a fraction of a second
TINY = dict(n_images=24, vqa_train_images=12, vqa_val_images=6, vqa_minival_images=3,
            nlvr2_train_sets=4, nlvr2_dev_sets=2, nlvr2_test1_sets=2)
QUICK = {"train.epochs": "1", "train.batch_size": "8", "train.train_limit": "32",
         "train.eval_limit": "8"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A world written without images: the first pixel run draws them."""
    root = tmp_path_factory.mktemp("pixels") / "world"
    generate(root, seed=3, **TINY)
    return root


def _session(model: str, task: str, world: Path, tmp_path: Path):
    return new_session(model, task, data_dir=str(world), out=tmp_path / "runs", overrides=QUICK,
                       say=lambda _: None)


def _check_image_rows(batch: dict, files: list[Path], size: int = 128) -> None:
    values, mask = batch["pixel_values"], batch["pixel_mask"]
    assert values.shape == (len(files), 3, size, size) and values.dtype == torch.float32
    assert mask.shape == (len(files), size, size) and mask.dtype == torch.long
    for row, path in enumerate(files):
        w, h = Image.open(path).size
        assert max(w, h) == size  # drawn at the model's size: read as it is
        assert mask[row, :h, :w].all() and mask[row].sum() == h * w  # 1 on the image only
        assert (values[row, :, h:, :] == 0).all() and (values[row, :, :, w:] == 0).all()
        expected = (np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255 - MEAN) / STD
        assert torch.allclose(values[row, :, :h, :w], torch.from_numpy(expected).permute(2, 0, 1))


@pytest.mark.parametrize("task", ["gqa", "vqa"])
def test_qa_batches_hold_each_questions_image(task, world, tmp_path):
    session = _session("vilt", task, world, tmp_path)
    examples = session.task.examples(session.task.train_split)[:5]
    batch = session.task.collate(examples)
    assert not {"visual_feats", "visual_pos", "visual_attention_mask"} & set(batch)
    folder = world / read_manifest(world).images[task]["folder"]
    files = [next(folder.rglob(f"{ex.img_id}.png")) for ex in examples]
    _check_image_rows(batch, files)
    assert batch["input_ids"].shape[0] == len(examples) == batch["target"].shape[0]


def test_nlvr2_batches_hold_both_images_in_adjacent_rows(world, tmp_path):
    session = _session("vilt", "nlvr2", world, tmp_path)
    examples = session.task.examples("dev")[:3]
    batch = session.task.collate(examples)
    folder = world / "nlvr2" / "images" / "dev"
    _check_image_rows(batch, [folder / f"{img}.png" for ex in examples for img in (ex.img0, ex.img1)])
    assert batch["input_ids"].shape[0] == 2 * len(examples) and batch["target"].shape == (3,)
    logits = session.model(batch)  # ViltForImagesAndTextClassification: (B, 2)
    assert logits.shape == (3, 2)
    # HF's NLVR2 ViLT: the left image is modality type 1, the right one type 2
    config = session.cfg.model
    assert (config.num_images, config.modality_type_vocab_size) == (2, 3)
    modality = session.model.backbone.image_modalities(6, None, torch.device("cpu"))
    assert modality.tolist() == [1, 2, 1, 2, 1, 2]


def test_one_image_tasks_keep_hfs_two_modality_types(world, tmp_path):
    config = _session("vilt", "gqa", world, tmp_path).cfg.model
    assert (config.num_images, config.modality_type_vocab_size) == (-1, 2)


def test_region_models_still_get_regions_and_record_no_images(world, tmp_path):
    session = _session("lxmert", "gqa", world, tmp_path)
    batch = session.task.collate(session.task.examples("train")[:4])
    assert "visual_feats" in batch and "pixel_values" not in batch
    assert session.task.data_record() == {}


def test_images_of_another_size_are_resized_to_the_models(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (200, 100), (255, 0, 0)).save(path)
    pixels, h, w = load_pixels(path, 64)
    assert (h, w) == (32, 64) and pixels.shape == (3, 64, 64)
    assert torch.allclose(pixels[0, :h, :w], torch.tensor(1.0))  # red: (1 - 0.5) / 0.5
    assert torch.allclose(pixels[1, :h, :w], torch.tensor(-1.0)) and (pixels[:, h:] == 0).all()


def test_vilt_trains_on_pixels_and_records_the_images(world, tmp_path):
    from vlbench.engine.run import train

    run = train("vilt", "gqa", data_dir=str(world), out=tmp_path / "runs",
                overrides={**QUICK, "train.log_every": "1"})
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished", record.get("failure")
    images = read_manifest(world).images["gqa"]
    assert record["data"]["images"] == {k: images[k] for k in ("folder", "size", "count",
                                                               "fingerprint")}
    losses = [json.loads(line)["loss"] for line in (run / "history.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert set(record["metrics"]) >= {"val", "testdev"}


def test_a_real_directory_without_images_is_refused_with_the_folders(world, tmp_path):
    import shutil

    real = tmp_path / "real"
    shutil.copytree(world, real, ignore=shutil.ignore_patterns("manifest.json*", "images"))
    with pytest.raises(DataError, match=r"needs the images: none of gqa/images, images is a "
                                        r"folder under") as info:
        _session("vilt", "gqa", real, tmp_path)
    assert "\n" not in str(info.value)
    (real / "gqa" / "images").mkdir()
    Image.new("RGB", (8, 8)).save(real / "gqa" / "images" / "elsewhere.png")
    with pytest.raises(DataError, match=r"image id\(s\) used by the questions have no image "
                                        r"file under"):
        _session("vilt", "gqa", real, tmp_path)


def test_a_real_directory_of_images_needs_no_feature_file_for_vilt(world, tmp_path):
    """Questions and images alone (no detector TSV): a pixel model trains, resumes and keys
    its reuse on them; a region model is told the features are missing."""
    import shutil

    from vlbench.engine.run import resume, train
    from vlbench.engine.session import planned_inputs

    real = tmp_path / "real"
    shutil.copytree(world, real, ignore=shutil.ignore_patterns("manifest.json*", "features"))
    ensure_images(world, ["gqa"], say=lambda _: None)
    shutil.copytree(world / "gqa" / "images", real / "gqa" / "images", dirs_exist_ok=True)
    assert not list(real.rglob("*.tsv"))
    run = train("vilt", "gqa", data_dir=str(real), out=tmp_path / "runs", overrides=QUICK)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["data"]["features_meta"] is None
    assert record["data"]["images"]["folder"] == "gqa/images"
    assert resume(run) == run  # reopens without a feature file
    key = planned_inputs("vilt", "gqa", data_dir=str(real), seed=0, overrides=QUICK,
                         say=lambda _: None)
    assert set(key["read"]) == {"images"} and key["key"] == record["inputs"]["key"]
    with pytest.raises(DataError, match="no feature TSV under"):
        _session("lxmert", "gqa", real, tmp_path)


def test_a_family_that_reads_no_images_is_refused_with_its_reason(world, tmp_path):
    session = _session("lxmert", "vqa", world, tmp_path)
    spec = dataclasses.replace(model_entry("lxmert").spec, family="deaf",
                               provides=frozenset({LANGUAGE_STATES}),
                               refusals={"region_inputs": "it reads text alone"})
    with pytest.raises(ConfigError, match="task 'vqa' cannot run on deaf: it reads text alone"):
        session.task.build_model(session.model.backbone, spec)


def test_vilt_pretrains_on_the_corpus_images_then_fine_tunes_from_it(world, tmp_path):
    """Masked LM, matching and QA over the pictures of the scenes the corpus describes; a
    masked-region objective is refused with the family's reason; NLVR2 starts from it."""
    from vlbench.engine.run import train
    from vlbench.tasks.pretrain.task import PretrainTask

    with pytest.raises(ConfigError, match="'mask_obj'.* cannot run on vilt: a masked-region "
                                          "objective does not apply to patches"):
        _session("vilt", "pretrain", world, tmp_path)
    settings = {**QUICK, "train.log_every": "1",
                **PretrainTask.objective_overrides(drop=["mask_obj"])}
    run = train("vilt", "pretrain", data_dir=str(world), out=tmp_path / "pre", overrides=settings)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished", record.get("failure")
    assert record["data"]["images"]["folder"] == "gqa/images,vqa/images"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    losses = [h["losses"] for h in history if "losses" in h]
    assert losses and set(losses[0]) == {"mask_lm", "matched", "qa"}
    assert all(np.isfinite(v) for step in losses for v in step.values())
    tuned = train("vilt", "nlvr2", data_dir=str(world), out=tmp_path / "runs", overrides=QUICK,
                  init=run / "checkpoints" / "best")
    init = json.loads((tuned / "run.json").read_text())["init"]
    assert init and init.get("objectives") == ["mask_lm", "matched", "qa"]
