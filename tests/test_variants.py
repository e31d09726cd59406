"""The encoder variants: LXMERT's cross-attention switch, late fusion and the blind baselines.

Checks shapes and masks (padding leaves real positions' outputs unchanged), the shared /
per-direction switch (parameters and keys), that a blind model never reads the modality it
lacks, and which pre-training objectives each variant refuses, with its reason.
"""

from __future__ import annotations

import pytest
import torch

from vlbench.engine.backbone import DataFacts, model_entry
from vlbench.errors import ConfigError
from vlbench.registry import OBJECTIVES

VARIANTS = ["lxmert", "lxmert_coattn", "late_fusion", "text_only", "vision_only"]
FACTS = DataFacts(vocab_size=60, feat_dim=12)


def _model(name: str, **config) -> torch.nn.Module:
    entry = model_entry(name)
    cfg = entry.spec.config("tiny", **{**entry.config, "hidden_dropout_prob": 0.0,
                                       "attention_probs_dropout_prob": 0.0, **config})
    entry.spec.fit_to_data(cfg, FACTS, {})
    torch.manual_seed(0)
    return entry.spec.build(cfg).eval()


def _inputs(tokens: int = 7, regions: int = 5, batch: int = 2, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, FACTS.vocab_size, (batch, tokens), generator=g)
    boxes = torch.rand(batch, regions, 4, generator=g).sort(-1).values
    return {"input_ids": ids, "attention_mask": torch.ones(batch, tokens, dtype=torch.long),
            "token_type_ids": torch.zeros(batch, tokens, dtype=torch.long),
            "visual_feats": torch.randn(batch, regions, FACTS.feat_dim, generator=g),
            "visual_pos": boxes, "visual_attention_mask": torch.ones(batch, regions, dtype=torch.long)}


def _pad(inputs: dict, tokens: int, regions: int) -> dict:
    """The same examples with ``tokens`` padding tokens and ``regions`` padding regions."""
    out = {}
    for key, value in inputs.items():
        extra = tokens if key in ("input_ids", "attention_mask", "token_type_ids") else regions
        pad = torch.zeros(value.shape[0], extra, *value.shape[2:], dtype=value.dtype)
        if key in ("visual_feats", "visual_pos"):
            pad = pad + 7.0  # garbage under the mask must not matter
        out[key] = torch.cat([value, pad], dim=1)
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_and_padding_leave_real_positions_unchanged(name: str):
    model = _model(name)
    inputs = _inputs()
    with torch.no_grad():
        plain = model(**inputs)
        padded = model(**_pad(inputs, tokens=3, regions=4))
    assert plain.language.shape == (2, 7, 192) and plain.vision.shape == (2, 5, 192)
    assert plain.pooled.shape == (2, 192)
    assert padded.language.shape == (2, 10, 192) and padded.vision.shape == (2, 9, 192)
    torch.testing.assert_close(padded.pooled, plain.pooled, rtol=0, atol=1e-5)
    torch.testing.assert_close(padded.language[:, :7], plain.language, rtol=0, atol=1e-5)
    torch.testing.assert_close(padded.vision[:, :5], plain.vision, rtol=0, atol=1e-5)


def _attention_block_params(hidden: int = 192) -> int:
    return 4 * (hidden * hidden + hidden) + 2 * hidden  # q, k, v, output dense; LayerNorm


@pytest.mark.parametrize("x_layers", [1, 2])
def test_per_direction_cross_attention_adds_one_attention_block_per_layer(x_layers: int):
    shared = _model("lxmert", x_layers=x_layers)
    per_direction = _model("lxmert_coattn", x_layers=x_layers)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(per_direction) - count(shared) == x_layers * _attention_block_params()
    extra = set(per_direction.state_dict()) - set(shared.state_dict())
    assert extra == {f"encoder.x_layers.{i}.lang_attention.{k}" for i in range(x_layers)
                     for k in ("att.query.weight", "att.query.bias", "att.key.weight",
                               "att.key.bias", "att.value.weight", "att.value.bias",
                               "output.dense.weight", "output.dense.bias",
                               "output.LayerNorm.weight", "output.LayerNorm.bias")}
    assert set(shared.state_dict()) <= set(per_direction.state_dict())


def test_per_direction_cross_attention_uses_its_own_module():
    """Regions attend to words through ``lang_attention``: changing it changes the regions'
    states (and, through the layer's output, nothing of a shared model)."""
    model = _model("lxmert_coattn")
    inputs = _inputs()
    with torch.no_grad():
        before = model(**inputs)
        model.encoder.x_layers[0].lang_attention.att.value.weight.mul_(2.0)
        after = model(**inputs)
    assert not torch.allclose(before.vision, after.vision)
    torch.testing.assert_close(before.language, after.language, rtol=0, atol=0)


def test_cross_attention_switch_is_validated_and_neutral_in_run_identity():
    with pytest.raises(ConfigError, match="cross_attention.*shared, per_direction"):
        model_entry("lxmert").spec.config("tiny", cross_attention="both")
    from vlbench.config import build_config
    from vlbench.registry import TASKS

    task_cfg = TASKS.get("gqa").config_class()
    cfg = build_config(model_entry("lxmert").spec.config_class, task_cfg, [])
    assert "cross_attention" not in cfg.identity()["model"]  # earlier runs keep their key
    cfg = build_config(model_entry("lxmert").spec.config_class, task_cfg,
                       [("model", {"model.cross_attention": "per_direction"})])
    assert cfg.identity()["model"]["cross_attention"] == "per_direction"


def test_text_only_never_reads_the_regions():
    model = _model("text_only")
    inputs = _inputs()
    other = {**inputs, "visual_feats": torch.randn_like(inputs["visual_feats"]) * 5,
             "visual_pos": torch.rand_like(inputs["visual_pos"])}
    with torch.no_grad():
        a, b = model(**inputs), model(**other)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.language, b.language)
    assert not a.vision.any()
    assert not any(".visn_fc." in k or ".r_layers." in k for k in model.state_dict())


def test_vision_only_never_reads_the_text():
    model = _model("vision_only")
    inputs = _inputs()
    other = {**inputs, "input_ids": torch.randint(1, FACTS.vocab_size, inputs["input_ids"].shape),
             "token_type_ids": torch.ones_like(inputs["token_type_ids"])}
    with torch.no_grad():
        a, b = model(**inputs), model(**other)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.vision, b.vision)
    assert not a.language.any()
    assert model.get_input_embeddings() is None
    assert not any(k.startswith("embeddings.") or ".layer." in k for k in model.state_dict())


def test_late_fusion_reads_both_modalities_only_through_its_pooled_state():
    model = _model("late_fusion")
    inputs = _inputs()
    other = {**inputs, "visual_feats": torch.randn_like(inputs["visual_feats"])}
    with torch.no_grad():
        a, b = model(**inputs), model(**other)
    assert torch.equal(a.language, b.language)  # words never attend to regions
    assert not torch.allclose(a.pooled, b.pooled)  # the fused state reads both
    assert not any(".x_layers." in k for k in model.state_dict())
    with pytest.raises(ConfigError, match="x_layers' must be 0 for late fusion.*lxmert"):
        model_entry("late_fusion").spec.config("tiny", x_layers=1)


def test_controlled_presets_hold_parameters_within_ten_percent_of_lxmert():
    counts = {n: sum(p.numel() for p in _model(n).parameters()) for n in VARIANTS}
    counts["visualbert"] = sum(p.numel() for p in _model("visualbert").parameters())
    for name, n in counts.items():
        assert abs(n / counts["lxmert"] - 1) <= 0.10, (name, n, counts["lxmert"])


#: what each variant refuses in pre-training, and a phrase of the reason it gives
REFUSED = {
    "late_fusion": {"matched": "never attend to each other"},
    "text_only": {"mask_obj": "never reads the regions", "matched": "read only the text",
                  "qa": "read only the text"},
    "vision_only": {"mask_lm": "never reads the text", "matched": "read only the regions",
                    "qa": "read only the regions"},
    "lxmert_coattn": {},
}


@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.parametrize("objective", ["mask_lm", "mask_obj", "matched", "qa"])
def test_inapplicable_pretraining_objectives_are_refused_with_the_reason(name: str, objective: str):
    spec = model_entry(name).spec
    needs = OBJECTIVES.get(objective).requires
    reason = REFUSED[name].get(objective)
    if reason is None:
        spec.require(needs, objective)  # applies: nothing raised
        return
    with pytest.raises(ConfigError, match=f"cannot run on {spec.family}: .*{reason}"):
        spec.require(needs, objective)
