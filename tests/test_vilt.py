"""ViLT, the third model family: parity with HF transformers, heads, checkpoints, timm ViT
initialisation, and its place in the engine (registered, refused where it cannot serve).

Random HF models (every parameter perturbed, so a swapped weight or bias cannot hide behind
zero initialisation) are written with ``save_pretrained`` and read back through the ViLT
checkpoint format; hidden states and head logits must agree within 1e-5 in fp32 on batches
with padded text and padded images (``pixel_mask``). Exports go the other way and must load in
transformers without a missing or unexpected key.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import vlbench
from vlbench.engine.backbone import DataFacts, model_entry
from vlbench.errors import ConfigError
from vlbench.models.vilt.config import ViltConfig
from vlbench.models.vilt.convert import (
    export_hf,
    from_hf_state_dict,
    load_checkpoint,
    save_native,
)
from vlbench.models.vilt.heads import ViltForImagesAndTextClassification, ViltForQuestionAnswering
from vlbench.models.vilt.modeling import ViltModel
from vlbench.models.vilt.spec import MODALITY_TABLE, SPEC, fit_checkpoint
from vlbench.models.vilt.timm_vit import load_timm_vit_file
from vlbench.registry import CHECKPOINT_FORMATS

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
SMALL = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, image_size=64, patch_size=16, max_position_embeddings=20)
ANSWERS = ["yes", "no", "2", "red", "cat"]
PATCH = SMALL["patch_size"]


def hf_config(**overrides) -> transformers.ViltConfig:
    return transformers.ViltConfig(**{**SMALL, **overrides})


def perturbed(model: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter (LayerNorms and biases included) non-trivial random values."""
    g = torch.Generator().manual_seed(seed)
    norms = {id(p): n for m in model.modules() if isinstance(m, torch.nn.LayerNorm)
             for n, p in m.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            if id(p) in norms:
                p.copy_(1.0 + 0.1 * noise if norms[id(p)] == "weight" else 0.1 * noise)
            else:
                p.copy_(std * noise)
    return model.eval()


def saved(model: torch.nn.Module, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def padded_batch(batch: int, tokens: int, seed: int, size: tuple[int, int] = (80, 96)
                 ) -> dict[str, torch.Tensor]:
    """Backbone inputs with padding in the text of example 0 and in the images of the others
    (valid extents of 3x3 and 5x2 patches in a 5x6 grid: the position table is resized to
    each, and the batch's full image sets the sequence length)."""
    g = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(batch, tokens, dtype=torch.long)
    attention_mask[0, tokens // 2:] = 0
    pixel_mask = torch.ones(batch, *size, dtype=torch.long)
    if batch > 1:
        pixel_mask[1, 40:, :] = 0
        pixel_mask[1, :, 48:] = 0
    if batch > 2:
        pixel_mask[2, :, 24:] = 0
    return dict(
        input_ids=torch.randint(1, SMALL["vocab_size"], (batch, tokens), generator=g),
        attention_mask=attention_mask,
        token_type_ids=torch.randint(0, 2, (batch, tokens), generator=g),
        pixel_values=torch.randn(batch, 3, *size, generator=g),
        pixel_mask=pixel_mask,
    )


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, what
    diff = (ours - theirs).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs difference {diff:.2e} > {ATOL}"


def grid_ids(index: torch.Tensor, width: int) -> torch.Tensor:
    """HF's (row, column) patch indices as raster positions."""
    return index[..., 0] * width + index[..., 1]


def test_transformers_still_provides_vilt():
    """Canary: conversion and these parity tests rely on these classes existing."""
    from transformers import (  # noqa: F401
        ViltConfig,
        ViltForImagesAndTextClassification,
        ViltForMaskedLM,
        ViltForQuestionAnswering,
        ViltModel,
    )


def test_backbone_parity_with_padding_through_the_format_reader(tmp_path, monkeypatch):
    torch.manual_seed(0)
    hf = perturbed(transformers.ViltModel(hf_config()), seed=1)
    directory = saved(hf, tmp_path / "hf")
    reader = CHECKPOINT_FORMATS.get("vilt")
    assert reader.detect(directory)
    backbone, report = reader.load_backbone(directory)
    assert "no missing keys; no unexpected keys" in report["report"]
    assert isinstance(backbone, ViltModel)

    # HF orders the fullest image's patches at random even in eval mode (its sampler draws
    # every patch without replacement) and pads with random masked patches: compare patch by
    # patch through the indices both sides chose.
    chosen = {}
    visual_embed = hf.embeddings.visual_embed

    def spy(*args, **kwargs):
        out = visual_embed(*args, **kwargs)
        chosen["hf_mask"], chosen["hf"] = out[1], out[2][0]
        return out

    monkeypatch.setattr(hf.embeddings, "visual_embed", spy)
    backbone.embeddings.register_forward_hook(lambda m, i, out: chosen.update(ours=out[2]))
    batch = padded_batch(3, 9, seed=2)
    with torch.no_grad():
        ours = backbone.eval()(**batch)
        theirs = hf(**batch)
    tokens = batch["input_ids"].shape[1]
    assert_close(ours.language, theirs.last_hidden_state[:, :tokens], "language")
    assert_close(ours.pooled, theirs.pooler_output, "pooled")
    vision = theirs.last_hidden_state[:, tokens:]
    assert ours.vision.shape == vision.shape  # image [CLS] + the largest image's 30 patches
    assert_close(ours.vision[:, 0], vision[:, 0], "image [CLS]")
    width = batch["pixel_values"].shape[-1] // PATCH
    for row in range(3):
        where = {int(g): j for j, g in enumerate(chosen["ours"][row])}
        for j, g in enumerate(grid_ids(chosen["hf"][row], width).tolist()):
            if chosen["hf_mask"][row, 1 + j]:
                assert g in where, f"valid patch {g} of image {row} missing"
            if g in where:
                assert_close(ours.vision[row, 1 + where[g]], vision[row, 1 + j],
                             f"patch {g} of image {row}")
    # our order: valid patches in raster order, then the masked ones
    assert chosen["ours"][1, :9].tolist() == [0, 1, 2, 6, 7, 8, 12, 13, 14]


def test_eval_without_pixel_mask_is_deterministic_and_keeps_every_patch():
    torch.manual_seed(0)
    model = ViltModel(ViltConfig.from_dict(SMALL)).eval()
    batch = padded_batch(2, 5, seed=3, size=(64, 64))
    del batch["pixel_mask"]
    with torch.no_grad():
        first, second = model(**batch), model(**batch)
    assert torch.equal(first.vision, second.vision)
    assert first.vision.shape[1] == 1 + 16


def test_state_dict_keys_and_shapes_equal_hf():
    for preset, overrides in (("tiny", {}), ("base", {}), ("tiny", {"qkv_bias": False})):
        config = ViltConfig.from_preset(preset, **overrides)
        values = {k: v for k, v in config.to_dict().items()
                  if k in transformers.ViltConfig().to_dict() and k != "preset"}
        with torch.device("meta"):
            ours = ViltModel(config).state_dict()
            theirs = transformers.ViltModel(transformers.ViltConfig(**values)).state_dict()
        assert list(ours) == list(theirs)
        for key in ours:
            assert ours[key].shape == theirs[key].shape, key


def test_question_answering_parity(tmp_path):
    torch.manual_seed(0)
    config = hf_config(num_labels=len(ANSWERS), id2label=dict(enumerate(ANSWERS)))
    hf = perturbed(transformers.ViltForQuestionAnswering(config), seed=3)
    loaded = load_checkpoint(saved(hf, tmp_path / "hf"))
    assert loaded.report.clean, str(loaded.report)
    assert set(loaded.heads_state) == {"qa"} and loaded.answers == ANSWERS
    backbone, head = loaded.build_backbone().eval(), loaded.build_head("qa").eval()
    assert isinstance(head, ViltForQuestionAnswering)
    assert {f"classifier.{k}" for k in head.classifier.state_dict()} == {
        k for k in hf.state_dict() if k.startswith("classifier.")}
    batch = padded_batch(3, 8, seed=4)
    with torch.no_grad():
        assert_close(head(backbone(**batch), batch), hf(**batch).logits, "QA logits")


def test_gradient_parity_in_training_mode():
    """Same loss and same gradients for one QA step (training mode, no dropout, padded text
    and images): the sequence HF trains on is ours, its patches merely in another order."""
    torch.manual_seed(0)
    config = hf_config(num_labels=len(ANSWERS))
    hf = perturbed(transformers.ViltForQuestionAnswering(config), seed=15).train()
    loaded = from_hf_state_dict(hf.state_dict(), config.to_dict())
    backbone, head = loaded.build_backbone().train(), loaded.build_head("qa").train()
    batch = padded_batch(3, 8, seed=16)
    target = torch.rand(3, len(ANSWERS))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    hf_loss = bce(hf(**batch).logits, target)
    loss = bce(head(backbone(**batch), batch), target)
    hf_loss.backward()
    loss.backward()
    assert abs(loss.item() - hf_loss.item()) < ATOL
    hf_grads = {k.removeprefix("vilt."): p.grad for k, p in hf.named_parameters()}
    for name, p in [*backbone.named_parameters(), *head.named_parameters()]:
        assert_close(p.grad, hf_grads[name], f"gradient of {name}")


def test_nlvr2_parity_with_the_two_images_in_adjacent_rows(tmp_path):
    torch.manual_seed(0)
    config = hf_config(num_images=2, modality_type_vocab_size=3, num_labels=2,
                       id2label={0: "False", 1: "True"})
    hf = perturbed(transformers.ViltForImagesAndTextClassification(config), seed=5)
    loaded = load_checkpoint(saved(hf, tmp_path / "hf"))
    assert loaded.report.clean, str(loaded.report)
    assert set(loaded.heads_state) == {"nlvr2"} and loaded.answers is None
    backbone, head = loaded.build_backbone().eval(), loaded.build_head("nlvr2").eval()
    assert isinstance(head, ViltForImagesAndTextClassification)
    rows = padded_batch(6, 7, seed=6)  # 3 examples x 2 images, vlbench's NLVR2 layout
    rows["input_ids"] = rows["input_ids"][::2].repeat_interleave(2, dim=0)
    rows["attention_mask"] = rows["attention_mask"][::2].repeat_interleave(2, dim=0)
    rows["token_type_ids"] = rows["token_type_ids"][::2].repeat_interleave(2, dim=0)
    pairs = dict(input_ids=rows["input_ids"][::2], attention_mask=rows["attention_mask"][::2],
                 token_type_ids=rows["token_type_ids"][::2],
                 pixel_values=rows["pixel_values"].reshape(3, 2, 3, 80, 96),
                 pixel_mask=rows["pixel_mask"].reshape(3, 2, 80, 96))
    with torch.no_grad():
        assert_close(head(backbone(**rows), rows), hf(**pairs).logits, "NLVR2 logits")


def test_masked_lm_parity(tmp_path):
    torch.manual_seed(0)
    hf = perturbed(transformers.ViltForMaskedLM(hf_config()), seed=7)
    hf.tie_weights()
    loaded = load_checkpoint(saved(hf, tmp_path / "hf"))
    assert loaded.report.clean, str(loaded.report)
    backbone = loaded.build_backbone().eval()
    heads = loaded.build_head("pretraining", backbone).eval()
    assert heads.mlm_score.decoder.weight is backbone.get_input_embeddings().weight
    assert heads.itm_score is None and heads.vqa_classifier is None  # HF has neither
    batch = padded_batch(2, 8, seed=8)
    with torch.no_grad():
        assert_close(heads(backbone(**batch))["lm"], hf(**batch).logits, "masked-LM logits")


def our_model(seed: int = 0, **overrides) -> ViltModel:
    torch.manual_seed(seed)
    model = ViltModel(ViltConfig.from_dict({**SMALL, **overrides})).eval()
    with torch.no_grad():  # non-zero biases and LayerNorms, so a mis-mapped key shows
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kind", ["model", "qa", "nlvr2", "pretraining"])
def test_export_loads_in_transformers_with_equal_outputs(kind, tmp_path):
    overrides = dict(num_images=2, modality_type_vocab_size=3) if kind == "nlvr2" else {}
    model = our_model(**overrides)
    heads = {"qa": ViltForQuestionAnswering(model.config, len(ANSWERS)),
             "nlvr2": ViltForImagesAndTextClassification(model.config),
             "pretraining": SPEC.pretraining_heads(model.config, model, [], 4)}
    for head in heads.values():
        perturbed(head, seed=9)
    said: list[str] = []
    out = export_hf(model, heads, tmp_path / "hf", kind=kind, answers=ANSWERS, say=said.append)
    hf_class = getattr(transformers, {"model": "ViltModel", "qa": "ViltForQuestionAnswering",
                                      "nlvr2": "ViltForImagesAndTextClassification",
                                      "pretraining": "ViltForMaskedLM"}[kind])
    hf, info = hf_class.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf.eval()
    batch = padded_batch(4, 6, seed=10)
    with torch.no_grad():
        ours = model(**batch)
        if kind == "model":
            theirs = hf(**batch)
            assert_close(ours.pooled, theirs.pooler_output, "pooled")
            assert_close(ours.language, theirs.last_hidden_state[:, :6], "language")
        elif kind == "qa":
            assert hf.config.id2label[2] == ANSWERS[2]
            assert_close(heads["qa"](ours, batch), hf(**batch).logits, "QA logits")
        elif kind == "nlvr2":
            pairs = {k: v[::2] for k, v in batch.items() if not k.startswith("pixel")}
            pairs["pixel_values"] = batch["pixel_values"].reshape(2, 2, 3, 80, 96)
            pairs["pixel_mask"] = batch["pixel_mask"].reshape(2, 2, 80, 96)
            batch.update({k: v.repeat_interleave(2, dim=0) for k, v in pairs.items()
                          if not k.startswith("pixel")})
            ours = model(**batch)
            assert_close(heads["nlvr2"](ours, batch), hf(**pairs).logits, "NLVR2 logits")
        else:
            assert_close(heads["pretraining"](ours)["lm"], hf(**batch).logits, "LM logits")
            assert any("itm_score" in line for line in said)


def test_native_round_trip_and_load_model(tmp_path):
    model = our_model()
    qa = perturbed(ViltForQuestionAnswering(model.config, len(ANSWERS)), seed=11)
    save_native(tmp_path / "ckpt", model, {"qa": qa}, ANSWERS)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.report.fmt == "vlbench" and loaded.report.clean and loaded.answers == ANSWERS
    backbone, head = loaded.build_backbone().eval(), loaded.build_head("qa").eval()
    batch = padded_batch(2, 5, seed=12)
    with torch.no_grad():
        assert torch.equal(head(backbone(**batch)), qa(model(**batch)))
    export_hf(model, None, tmp_path / "hf")
    for path in (tmp_path / "ckpt", tmp_path / "hf"):  # the engine's loader reads both
        again = vlbench.load_model(str(path))
        assert isinstance(again, ViltModel)
        with torch.no_grad():
            assert torch.equal(again(**batch).pooled, model(**batch).pooled)


def test_region_inputs_are_refused_with_one_line():
    model = our_model()
    batch = padded_batch(1, 4, seed=13)
    with pytest.raises(ValueError, match=r"ViLT reads images \(pixel_values, pixel_mask\)"):
        model(**batch, visual_feats=torch.zeros(1, 3, 8))
    model(**batch, visual_feats=None, visual_pos=None, visual_attention_mask=None)


def test_patch_sampling_in_training_matches_hf_statistically():
    """``max_image_length`` while training: an image with enough valid patches keeps that many,
    drawn uniformly in random order; a smaller one keeps all, in raster order, padded with
    masked patches drawn with replacement. Frequencies agree with HF's sampler."""
    torch.manual_seed(0)
    hf = transformers.ViltModel(hf_config(max_image_length=6))
    ours = ViltModel(ViltConfig.from_dict({**SMALL, "max_image_length": 6}))
    pixels = torch.randn(2, 3, 64, 64)
    mask = torch.ones(2, 64, 64, dtype=torch.long)
    mask[1, 32:, :] = 0
    mask[1, :, 32:] = 0  # 2x2 valid patches of 4x4
    modality = torch.ones(2, dtype=torch.long)
    draws = 400
    counts = {side: [Counter(), Counter(), Counter()] for side in ("hf", "ours")}
    ours.train()
    with torch.no_grad():
        for _ in range(draws):
            hf_index = grid_ids(hf.embeddings.visual_embed(pixels, mask, 6)[2][0], 4)
            _, our_mask, our_index = ours.embeddings.visual_embed(pixels, mask, modality)
            for side, index in (("hf", hf_index), ("ours", our_index)):
                assert index.shape == (2, 6)
                assert len(set(index[0].tolist())) == 6  # without replacement
                assert index[1, :4].tolist() == [0, 1, 4, 5]  # every valid patch, in order
                counts[side][0].update(index[0].tolist())
                counts[side][1][index[0, 0].item()] += 1
                counts[side][2].update(index[1, 4:].tolist())
            assert our_mask[1].tolist() == [1] * 5 + [0] * 2
    for which, (positions, expected) in enumerate([(range(16), 6 / 16), (range(16), 1 / 16),
                                                   (set(range(16)) - {0, 1, 4, 5}, 2 / 12)]):
        for p in positions:
            for side in ("hf", "ours"):
                share = counts[side][which][p] / draws
                assert abs(share - expected) < 0.1, (side, which, p, share, expected)
    ours.eval()
    with torch.no_grad():
        assert ours.embeddings.visual_embed(pixels, mask, modality)[2].shape == (2, 16)


def timm_vit_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=96)
    state = {k: v.clone() for k, v in perturbed(vit, seed=14).state_dict().items()}
    path = tmp_path / "vit_tiny.pth"
    torch.save(state, path)
    return path, state


#: a ViLT at vit_tiny's widths (192, FFN 768): 4 of its 12 blocks, a 4x4 grid of its 6x6
VIT_TINY = dict(hidden_size=192, num_attention_heads=3, intermediate_size=768,
                num_hidden_layers=4, image_size=64, patch_size=16, vocab_size=50)


def test_timm_vit_fills_the_trunk(tmp_path):
    from timm.layers import resample_abs_pos_embed

    path, vit = timm_vit_file(tmp_path)
    model = ViltModel(ViltConfig.from_dict(VIT_TINY))
    report = load_timm_vit_file(model, path)
    assert report.missing == [], str(report)
    assert {"head.weight", "head.bias", "blocks.4.attn.qkv.weight"} <= set(report.unexpected)
    assert not any(k.startswith(("blocks.0.", "blocks.3.")) for k in report.unexpected)
    own = model.state_dict()
    assert torch.equal(own["embeddings.patch_embeddings.projection.weight"],
                       vit["patch_embed.proj.weight"])
    assert torch.equal(own["embeddings.cls_token"], vit["cls_token"])
    query, key, value = vit["blocks.0.attn.qkv.weight"].chunk(3)
    layer = "encoder.layer.0."
    assert torch.equal(own[layer + "attention.attention.query.weight"], query)
    assert torch.equal(own[layer + "attention.attention.key.weight"], key)
    assert torch.equal(own[layer + "attention.attention.value.weight"], value)
    assert torch.equal(own[layer + "layernorm_before.weight"], vit["blocks.0.norm1.weight"])
    assert torch.equal(own[layer + "output.dense.weight"], vit["blocks.0.mlp.fc2.weight"])
    assert torch.equal(own["layernorm.weight"], vit["norm.weight"])
    resized = resample_abs_pos_embed(vit["pos_embed"], [4, 4], [6, 6], num_prefix_tokens=1)
    assert torch.equal(own["embeddings.position_embeddings"], resized)


def test_init_vit_config_switch(tmp_path):
    path, vit = timm_vit_file(tmp_path)
    config = SPEC.config("tiny", **VIT_TINY, init_vit=str(path))
    model = SPEC.build(config)
    assert model.vit_init_report is not None and model.vit_init_report.missing == []
    assert torch.equal(model.state_dict()["layernorm.bias"], vit["norm.bias"])
    facts = DataFacts(vocab_size=50, feat_dim=64)
    SPEC.fit_to_data(config, facts, {"model.init_vit": str(path)})
    config.init_vit = str(tmp_path / "gone.pth")
    with pytest.raises(ConfigError, match="--set model.init_vit=.*gone.pth: no such file"):
        SPEC.fit_to_data(config, facts, {"model.init_vit": config.init_vit})
    with warnings.catch_warnings(record=True) as caught:  # a stored run's file has gone
        warnings.simplefilter("always")
        assert SPEC.build(config).vit_init_report is None
    assert any("gone.pth: no such file" in str(w.message) for w in caught)
    with torch.device("meta"):  # checkpoint loads check shapes on the meta device: no read
        SPEC.build(dataclasses.replace(config, init_vit=str(path)))


def test_a_masked_region_objective_is_refused_before_training(small_world, tmp_path):
    from vlbench.engine.run import train

    # pre-training feeds ViLT the images, but masked object prediction needs region states
    with pytest.raises(ConfigError, match=r"pre-training objective 'mask_obj' .* cannot run on "
                                          r"vilt: a masked-region objective does not apply to "
                                          r"patches") as info:
        train("vilt", "pretrain", data_dir=str(small_world), out=tmp_path / "runs")
    assert "\n" not in str(info.value)
    assert not any((tmp_path / "runs").glob("*"))


def test_listed_and_sized():
    from vlbench.cli import app

    listing = CliRunner().invoke(app, ["list", "models"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0, listing.output
    for name in ("vilt", "vilt_base", "vilt_tiny"):
        assert name in listing.output
    config = SPEC.config("tiny")
    SPEC.fit_to_data(config, DataFacts(vocab_size=1000, feat_dim=64), {})
    assert config.vocab_size == 1000
    with torch.device("meta"):
        count = sum(p.numel() for p in SPEC.build(config).parameters())
    assert count == 2_611_200  # LXMERT tiny: 2.72M at 1000 words and 64-d regions
    assert model_entry("vilt").parameter_count() > 100_000_000  # ViLT-B/32


def test_a_one_image_checkpoint_fits_nlvr2s_modality_table_as_vilt_grows_it():
    """ViLT's NLVR2 fine-tuning gives the second image a modality row copied from the first
    image's; a run with fewer image types keeps the checkpoint's first rows."""
    table = torch.randn(2, 8)
    other = torch.randn(3, 3)
    grown = fit_checkpoint({MODALITY_TABLE: table, "other": other},
                           ViltConfig.from_preset("tiny", num_images=2, modality_type_vocab_size=3))
    assert grown["other"] is other and grown[MODALITY_TABLE].shape == (3, 8)
    assert torch.equal(grown[MODALITY_TABLE][:2], table)
    assert torch.equal(grown[MODALITY_TABLE][2], table[1])
    cut = fit_checkpoint({MODALITY_TABLE: grown[MODALITY_TABLE]}, ViltConfig.from_preset("tiny"))
    assert torch.equal(cut[MODALITY_TABLE], table)
