"""The native LXMERT backbone and the shared task heads: shapes, masks, names, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from vlbench.errors import ConfigError
from vlbench.models.heads import NLVR2Head, QAHead
from vlbench.models.lxmert.config import PRESETS, LxmertConfig
from vlbench.models.lxmert.modeling import LxmertModel

SMALL = dict(vocab_size=50, visual_feat_dim=12, max_position_embeddings=32)


def small_config(**overrides) -> LxmertConfig:
    return LxmertConfig.from_preset("tiny", **{**SMALL, **overrides})


def inputs(batch: int, tokens: int, regions: int, feat_dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        input_ids=torch.randint(1, 50, (batch, tokens), generator=g),
        attention_mask=torch.ones(batch, tokens, dtype=torch.long),
        token_type_ids=torch.zeros(batch, tokens, dtype=torch.long),
        visual_feats=torch.randn(batch, regions, feat_dim, generator=g),
        visual_pos=torch.rand(batch, regions, 4, generator=g),
        visual_attention_mask=torch.ones(batch, regions, dtype=torch.long),
    )


def test_tiny_output_shapes():
    torch.manual_seed(0)
    cfg = small_config()
    model = LxmertModel(cfg).eval()
    out = model(**inputs(3, 7, 5, cfg.visual_feat_dim))
    assert out.language.shape == (3, 7, cfg.hidden_size)
    assert out.vision.shape == (3, 5, cfg.hidden_size)
    assert out.pooled.shape == (3, cfg.hidden_size)
    assert torch.isfinite(out.language).all() and torch.isfinite(out.vision).all()
    assert out.pooled.abs().max() <= 1.0  # tanh pooler


def test_base_output_shapes_and_size():
    torch.manual_seed(0)
    cfg = LxmertConfig.from_preset("base")
    assert (cfg.hidden_size, cfg.l_layers, cfg.r_layers, cfg.x_layers) == (768, 9, 5, 5)
    model = LxmertModel(cfg).eval()
    with torch.no_grad():
        out = model(**inputs(1, 4, 3, cfg.visual_feat_dim))
    assert out.language.shape == (1, 4, 768)
    assert out.vision.shape == (1, 3, 768)
    assert out.pooled.shape == (1, 768)
    # 9/5/5 with BERT-base widths: about 208M parameters (excluding heads).
    n = sum(p.numel() for p in model.parameters())
    assert 200e6 < n < 215e6


def test_text_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    cfg = small_config()
    model = LxmertModel(cfg).eval()
    full = inputs(1, 5, 4, cfg.visual_feat_dim, seed=1)
    padded = {k: v.clone() for k, v in full.items()}
    padded["input_ids"] = torch.cat([full["input_ids"], torch.tensor([[7, 9, 11]])], dim=1)
    padded["attention_mask"] = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    padded["token_type_ids"] = torch.zeros(1, 8, dtype=torch.long)
    with torch.no_grad():
        a, b = model(**full), model(**padded)
    torch.testing.assert_close(b.language[:, :5], a.language, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.vision, a.vision, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.pooled, a.pooled, atol=1e-5, rtol=1e-5)


def test_region_padding_variable_boxes_in_one_batch():
    """Example 0 has 36 regions, example 1 only 3 real ones padded to 36 with garbage."""
    torch.manual_seed(0)
    cfg = small_config()
    model = LxmertModel(cfg).eval()
    batch = inputs(2, 6, 36, cfg.visual_feat_dim, seed=2)
    batch["visual_attention_mask"][1, 3:] = 0
    batch["visual_feats"][1, 3:] = 1e3 * torch.randn(33, cfg.visual_feat_dim)
    batch["attention_mask"][0, 4:] = 0
    alone = {k: v[1:2].clone() for k, v in batch.items()}
    alone["visual_feats"] = alone["visual_feats"][:, :3]
    alone["visual_pos"] = alone["visual_pos"][:, :3]
    alone["visual_attention_mask"] = alone["visual_attention_mask"][:, :3]
    first = {k: v[0:1].clone() for k, v in batch.items()}
    with torch.no_grad():
        both, one, zero = model(**batch), model(**alone), model(**first)
    torch.testing.assert_close(both.vision[1:, :3], one.vision, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.language[1:], one.language, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.pooled[1:], one.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.pooled[:1], zero.pooled, atol=1e-5, rtol=1e-5)


def test_masks_default_to_all_real_and_token_types_to_zero():
    torch.manual_seed(0)
    cfg = small_config()
    model = LxmertModel(cfg).eval()
    batch = inputs(2, 5, 4, cfg.visual_feat_dim)
    with torch.no_grad():
        explicit = model(**batch)
        implicit = model(batch["input_ids"], visual_feats=batch["visual_feats"],
                         visual_pos=batch["visual_pos"])
    torch.testing.assert_close(implicit.language, explicit.language)
    torch.testing.assert_close(implicit.vision, explicit.vision)


def test_fully_padded_regions_stay_finite():
    torch.manual_seed(0)
    cfg = small_config()
    model = LxmertModel(cfg).eval()
    batch = inputs(2, 5, 4, cfg.visual_feat_dim)
    batch["visual_attention_mask"][0] = 0
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.language).all() and torch.isfinite(out.vision).all()


def test_deterministic_given_seed_and_dropout_only_in_training():
    cfg = small_config()
    torch.manual_seed(3)
    a = LxmertModel(cfg)
    torch.manual_seed(3)
    b = LxmertModel(cfg)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    batch = inputs(2, 5, 4, cfg.visual_feat_dim)
    torch.manual_seed(4)
    train_a = a.train()(**batch).pooled
    torch.manual_seed(4)
    train_b = b.train()(**batch).pooled
    assert torch.equal(train_a, train_b)
    with torch.no_grad():
        eval_a = a.eval()(**batch).pooled
        assert torch.equal(eval_a, a(**batch).pooled)
    assert not torch.allclose(eval_a, train_a)  # dropout is active in training mode


def test_bert_initialisation():
    torch.manual_seed(0)
    cfg = small_config(hidden_size=64, num_attention_heads=4, intermediate_size=128)
    model = LxmertModel(cfg)
    sd = model.state_dict()
    assert torch.equal(sd["embeddings.LayerNorm.weight"], torch.ones(64))
    assert torch.equal(sd["encoder.x_layers.0.visual_attention.att.query.bias"], torch.zeros(64))
    assert torch.equal(sd["embeddings.word_embeddings.weight"][0], torch.zeros(64))
    std = sd["encoder.visn_fc.visn_fc.weight"].std().item()
    assert abs(std - cfg.initializer_range) < 0.002


def test_state_dict_keys_follow_released_names():
    cfg = small_config(l_layers=2, r_layers=1, x_layers=1)
    keys = set(LxmertModel(cfg).state_dict())
    for key in (
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "encoder.visn_fc.visn_fc.weight",
        "encoder.visn_fc.visn_layer_norm.bias",
        "encoder.visn_fc.box_fc.weight",
        "encoder.visn_fc.box_layer_norm.weight",
        "encoder.layer.1.attention.self.query.weight",
        "encoder.layer.1.attention.output.LayerNorm.bias",
        "encoder.layer.1.intermediate.dense.weight",
        "encoder.layer.1.output.dense.weight",
        "encoder.r_layers.0.attention.self.value.bias",
        "encoder.x_layers.0.visual_attention.att.key.weight",
        "encoder.x_layers.0.visual_attention.output.dense.weight",
        "encoder.x_layers.0.lang_self_att.self.query.weight",
        "encoder.x_layers.0.visn_self_att.output.LayerNorm.weight",
        "encoder.x_layers.0.lang_inter.dense.weight",
        "encoder.x_layers.0.lang_output.LayerNorm.weight",
        "encoder.x_layers.0.visn_inter.dense.bias",
        "encoder.x_layers.0.visn_output.dense.weight",
        "pooler.dense.weight",
    ):
        assert key in keys, key
    # One cross-attention module serves both directions.
    assert not any("lang_att" in k or "visn_att." in k for k in keys)


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_keys_and_shapes_equal_hf(preset):
    transformers = pytest.importorskip("transformers")
    cfg = LxmertConfig.from_preset(preset)
    hf_cfg = transformers.LxmertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
        l_layers=cfg.l_layers, r_layers=cfg.r_layers, x_layers=cfg.x_layers,
        visual_feat_dim=cfg.visual_feat_dim, visual_pos_dim=cfg.visual_pos_dim,
        max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
    )
    with torch.device("meta"):  # shapes and names only: no memory, no initialisation time
        ours = LxmertModel(cfg).state_dict()
        theirs = transformers.LxmertModel(hf_cfg).state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key


def test_config_presets_overrides_and_errors():
    tiny = LxmertConfig.from_preset("tiny", hidden_dropout_prob=0)
    assert tiny.preset == "tiny" and tiny.hidden_dropout_prob == 0.0
    assert isinstance(tiny.hidden_dropout_prob, float)
    assert LxmertConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny
    assert set(PRESETS) >= {"tiny", "base"}
    with pytest.raises(ConfigError, match="did you mean 'base'"):
        LxmertConfig.from_preset("bsae")
    with pytest.raises(ConfigError, match="l_layers"):
        LxmertConfig.from_preset("tiny", l_layer=3)
    with pytest.raises(ConfigError, match="multiple"):
        LxmertConfig.from_preset("tiny", hidden_size=130)
    with pytest.raises(ConfigError, match="x_layers"):
        LxmertConfig.from_preset("tiny", x_layers="2")


def test_registered_as_lxmert():
    from vlbench.registry import MODELS

    assert MODELS.get("lxmert").spec.backbone_class is LxmertModel
    assert "9/5/5" in MODELS.entry("lxmert").description


def test_qa_head_names_shapes_init():
    torch.manual_seed(0)
    head = QAHead(32, 7)
    assert [k for k in head.state_dict() if k.endswith("weight")] == [
        "logit_fc.0.weight", "logit_fc.2.weight", "logit_fc.3.weight"
    ]
    assert head.logit_fc[0].weight.shape == (64, 32)
    assert head.logit_fc[3].weight.shape == (7, 64)
    assert torch.equal(head.logit_fc[2].weight, torch.ones(64))
    assert torch.equal(head.logit_fc[3].bias, torch.zeros(7))
    assert head(torch.randn(5, 32)).shape == (5, 7)


def test_nlvr2_head_pairs_adjacent_pooled_states():
    torch.manual_seed(0)
    head = NLVR2Head(16).eval()
    assert head.logit_fc[0].weight.shape == (32, 32)
    assert head.logit_fc[3].weight.shape == (2, 32)
    pooled = torch.randn(3, 2, 16)  # (example, image, hidden)
    flat = pooled.reshape(6, 16)  # released layout: the two images of an example adjacent
    out = head(flat)
    assert out.shape == (3, 2)
    torch.testing.assert_close(out, head(pooled))
    torch.testing.assert_close(out[1], head(pooled[1:2].reshape(1, 32))[0])


def test_layout_aware_bf16_linear_matches_standard():
    """The CPU bf16 GEMM path gives the standard results and gradients (fp32 masters)."""
    from vlbench.models.common.linear import Linear, _LinearATB

    torch.manual_seed(0)
    x = torch.randn(10, 24, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(16, 24, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(16, dtype=torch.bfloat16, requires_grad=True)
    ours = _LinearATB.apply(x, w, b)
    theirs = torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(ours, theirs, atol=2e-2, rtol=1e-2)
    g = torch.randn(10, 16, dtype=torch.bfloat16)
    grads_ours = torch.autograd.grad(ours, (x, w, b), g)
    grads_theirs = torch.autograd.grad(theirs, (x, w, b), g)
    for a, c in zip(grads_ours, grads_theirs, strict=True):
        torch.testing.assert_close(a, c, atol=5e-2, rtol=1e-2)

    layer = Linear(24, 16)
    reference = torch.nn.Linear(24, 16)
    reference.load_state_dict(layer.state_dict())
    inp = torch.randn(2, 5, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = layer(inp), reference(inp)
    assert out.dtype == ref.dtype == torch.bfloat16 and out.shape == (2, 5, 16)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=1e-2)
    out.float().sum().backward()
    ref.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad, atol=5e-2, rtol=1e-2)
    torch.testing.assert_close(layer(inp), reference(inp))  # fp32: plain nn.Linear
