"""The native VisualBERT: shapes, masks, boxes, heads, config errors and the family spec."""

from __future__ import annotations

import pytest
import torch

from vlbench.engine.backbone import Backbone, BackboneOutput, DataFacts, model_entry
from vlbench.errors import ConfigError, DataError
from vlbench.models.heads import NLVR2Head
from vlbench.models.lxmert.config import LxmertConfig
from vlbench.models.lxmert.modeling import LxmertModel
from vlbench.models.visualbert.config import VisualBertConfig
from vlbench.models.visualbert.heads import VisualBertForQuestionAnswering
from vlbench.models.visualbert.modeling import VisualBertModel
from vlbench.models.visualbert.spec import SPEC, fit_to_data, pretraining_heads

SMALL = dict(vocab_size=50, visual_embedding_dim=12, max_position_embeddings=32)


def small_config(**overrides) -> VisualBertConfig:
    return VisualBertConfig.from_preset("tiny", **{**SMALL, **overrides})


def small_model(seed: int = 0, **overrides) -> VisualBertModel:
    torch.manual_seed(seed)
    return VisualBertModel(small_config(**overrides)).eval()


def inputs(batch: int, tokens: int, regions: int, feat_dim: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        input_ids=torch.randint(1, 50, (batch, tokens), generator=g),
        attention_mask=torch.ones(batch, tokens, dtype=torch.long),
        token_type_ids=torch.zeros(batch, tokens, dtype=torch.long),
        visual_feats=torch.randn(batch, regions, feat_dim, generator=g),
        visual_pos=torch.rand(batch, regions, 4, generator=g),
        visual_attention_mask=torch.ones(batch, regions, dtype=torch.long),
    )


def test_output_is_the_split_sequence():
    model = small_model()
    assert isinstance(model, Backbone)
    out = model(**inputs(3, 7, 5))
    assert isinstance(out, BackboneOutput)
    assert out.language.shape == (3, 7, 192) and out.vision.shape == (3, 5, 192)
    assert out.pooled.shape == (3, 192) and out.pooled.abs().max() <= 1.0  # tanh pooler
    assert torch.isfinite(out.language).all() and torch.isfinite(out.vision).all()


def test_text_padding_does_not_change_real_positions():
    model = small_model()
    full = inputs(1, 5, 4, seed=1)
    padded = dict(full)
    padded["input_ids"] = torch.cat([full["input_ids"], torch.tensor([[7, 9, 11]])], dim=1)
    padded["attention_mask"] = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    padded["token_type_ids"] = torch.zeros(1, 8, dtype=torch.long)
    with torch.no_grad():
        a, b = model(**full), model(**padded)
    torch.testing.assert_close(b.language[:, :5], a.language, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.vision, a.vision, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.pooled, a.pooled, atol=1e-5, rtol=1e-5)


def test_region_padding_does_not_change_real_positions():
    """Example 1 has 3 real regions padded to 36 with garbage; alone it gives the same."""
    model = small_model()
    batch = inputs(2, 6, 36, seed=2)
    batch["visual_attention_mask"][1, 3:] = 0
    batch["visual_feats"][1, 3:] = 1e3 * torch.randn(33, 12)
    batch["attention_mask"][0, 4:] = 0
    alone = {k: v[1:2].clone() for k, v in batch.items()}
    for key in ("visual_feats", "visual_pos", "visual_attention_mask"):
        alone[key] = alone[key][:, :3]
    with torch.no_grad():
        both, one = model(**batch), model(**alone)
    torch.testing.assert_close(both.vision[1:, :3], one.vision, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.language[1:], one.language, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.pooled[1:], one.pooled, atol=1e-5, rtol=1e-5)


def test_masks_default_to_all_real_token_types_to_zero_and_boxes_are_ignored():
    model = small_model()
    batch = inputs(2, 5, 4)
    with torch.no_grad():
        explicit = model(**batch)
        implicit = model(batch["input_ids"], visual_feats=batch["visual_feats"])
        other_boxes = model(**{**batch, "visual_pos": torch.rand(2, 4, 4)})
    torch.testing.assert_close(implicit.language, explicit.language)
    torch.testing.assert_close(implicit.vision, explicit.vision)
    assert torch.equal(other_boxes.vision, explicit.vision)  # VisualBERT reads no boxes


def test_use_boxes_adds_exactly_the_box_projection():
    plain = set(small_model().state_dict())
    boxed_model = small_model(use_boxes=True)
    boxed = set(boxed_model.state_dict())
    assert boxed - plain == {"embeddings.visual_box_projection.weight",
                             "embeddings.visual_box_projection.bias"}
    assert plain <= boxed
    assert boxed_model.embeddings.visual_box_projection.weight.shape == (192, 4)
    batch = inputs(2, 5, 4)
    with torch.no_grad():
        a = boxed_model(**batch)
        b = boxed_model(**{**batch, "visual_pos": torch.rand(2, 4, 4)})
    assert not torch.allclose(a.vision, b.vision)
    with pytest.raises(ValueError, match="visual_pos"):
        boxed_model(**{**batch, "visual_pos": None})


def test_bert_initialisation_and_special_visual_initialize():
    model = small_model()
    emb = model.embeddings
    assert torch.equal(emb.visual_token_type_embeddings.weight, emb.token_type_embeddings.weight)
    assert torch.equal(emb.visual_position_embeddings.weight, emb.position_embeddings.weight)
    assert torch.count_nonzero(emb.word_embeddings.weight[0]) == 0  # [PAD] row
    assert 0.015 < emb.word_embeddings.weight[1:].std().item() < 0.025
    assert torch.count_nonzero(model.pooler.dense.bias) == 0
    separate = small_model(special_visual_initialize=False).embeddings
    assert not torch.equal(separate.visual_position_embeddings.weight,
                           separate.position_embeddings.weight)


def test_qa_head_reads_the_last_text_token():
    model = small_model()
    head = VisualBertForQuestionAnswering(model.config, 5).eval()
    assert set(head.state_dict()) == {"cls.weight", "cls.bias"}
    batch = inputs(2, 6, 3)
    batch["attention_mask"][0, 4:] = 0  # [CLS] w w [SEP] pad pad: the last word is at 2
    with torch.no_grad():
        out = model(**batch)
        logits = head(out, batch)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits[0], head.cls(out.language[0, 2]))
    torch.testing.assert_close(logits[1], head.cls(out.language[1, 4]))


def test_config_errors_are_one_line():
    cases = [
        (dict(bypass_transformer=True), "bypass_transformer"),
        (dict(hiden_size=64), "did you mean 'hidden_size'"),
        (dict(hidden_size=100), "not a multiple of num_attention_heads"),
        (dict(use_boxes=1), "'use_boxes' must be bool"),
        (dict(num_hidden_layers=2.0), "'num_hidden_layers' must be int"),
        (dict(hidden_dropout_prob=1.0), "'hidden_dropout_prob' must be in"),
        (dict(pad_token_id=50), "'pad_token_id'"),
        (dict(type_vocab_size=1), "'type_vocab_size'"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            small_config(**overrides)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="did you mean 'tiny'") as info:
        VisualBertConfig.from_preset("tiyn")
    assert "\n" not in str(info.value)


def test_presets_and_round_trip():
    base = VisualBertConfig.from_preset("base")
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads,
            base.intermediate_size, base.visual_embedding_dim) == (768, 12, 12, 3072, 2048)
    tiny = VisualBertConfig.from_preset("tiny", hidden_dropout_prob=0)
    assert VisualBertConfig.from_dict(tiny.to_dict()) == tiny
    assert isinstance(tiny.to_dict()["hidden_dropout_prob"], float)
    assert tiny.visual_feat_dim == tiny.visual_embedding_dim  # the name the shared heads read


def test_tiny_is_about_as_large_as_lxmert_tiny_on_the_synthetic_world():
    with torch.device("meta"):
        lxmert = LxmertModel(LxmertConfig.from_preset("tiny", vocab_size=1000, visual_feat_dim=64))
        visualbert = VisualBertModel(
            VisualBertConfig.from_preset("tiny", vocab_size=1000, visual_embedding_dim=64))
    n_lxmert = sum(p.numel() for p in lxmert.parameters())
    n_visualbert = sum(p.numel() for p in visualbert.parameters())
    assert abs(n_visualbert - n_lxmert) <= 0.1 * n_lxmert, (n_visualbert, n_lxmert)


def test_registered_family_names_and_heads():
    for name, preset in (("visualbert", None), ("visualbert_base", "base"),
                         ("visualbert_tiny", "tiny")):
        entry = model_entry(name)
        assert entry.family == "visualbert" and entry.preset == preset
    assert model_entry("visualbert").overrides(synthetic=True)["model.preset"] == "tiny"
    assert model_entry("visualbert").default_config().preset == "base"
    config = small_config()
    qa = SPEC.head("qa", config, default=lambda *a, **k: None, num_answers=4)
    assert isinstance(qa, VisualBertForQuestionAnswering) and qa.num_answers == 4
    shared = SPEC.head("nlvr2", config, default=lambda c: NLVR2Head(c.hidden_size))
    assert isinstance(shared, NLVR2Head)  # VisualBERT has no NLVR2 head of its own


def test_fit_to_data_sizes_regions_and_vocabulary():
    config = small_config()
    fit_to_data(config, DataFacts(vocab_size=1000, feat_dim=64), {})
    assert (config.visual_embedding_dim, config.vocab_size) == (64, 1000)
    config = small_config(visual_embedding_dim=32)
    with pytest.raises(DataError, match="visual_embedding_dim=32"):
        fit_to_data(config, DataFacts(1000, 64), {"model.visual_embedding_dim": 32})


def test_pretraining_heads_tie_the_decoder_and_use_hf_names():
    model = small_model()
    heads = pretraining_heads(model.config, model, ("obj", "attr", "feat"), num_answers=6)
    keys = set(heads.state_dict())
    assert {"cls.predictions.bias", "cls.predictions.transform.dense.weight",
            "cls.seq_relationship.weight", "obj_predict_head.decoder_dict.feat.weight",
            "answer_head.logit_fc.3.weight"} <= keys
    assert not any("decoder.weight" in k and k.startswith("cls.") for k in keys)
    assert heads.cls.predictions.decoder_weight is model.get_input_embeddings().weight
    with torch.no_grad():
        logits = heads(model(**inputs(2, 5, 4)))
    assert logits["lm"].shape == (2, 5, 50) and logits["matched"].shape == (2, 2)
    assert logits["feat"].shape == (2, 4, 12) and logits["qa"].shape == (2, 6)
