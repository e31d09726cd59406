"""Numerical parity of the native LXMERT with HF transformers' implementation.

Random HF models (every parameter perturbed, so a swapped weight or bias cannot hide behind
zero initialisation) are converted with ``from_hf_state_dict`` and must give the same hidden
states and head logits within 1e-5 in fp32, on batches with padded tokens and padded regions.
"""

from __future__ import annotations

import pytest
import torch

from vlbench.models.lxmert.convert import from_hf_state_dict

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
SMALL = dict(
    vocab_size=120, hidden_size=32, num_attention_heads=4, intermediate_size=64,
    l_layers=2, r_layers=2, x_layers=2, visual_feat_dim=24, max_position_embeddings=40,
    num_qa_labels=17, num_object_labels=13, num_attr_labels=7,
)


def test_transformers_still_provides_lxmert():
    """Canary: conversion and these parity tests rely on these classes existing."""
    from transformers import (  # noqa: F401
        LxmertConfig,
        LxmertForPreTraining,
        LxmertForQuestionAnswering,
        LxmertModel,
    )


def perturbed(model: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter (LayerNorms and biases included) non-trivial random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("logit_fc.2.weight"):
                p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            else:
                p.copy_(std * noise)
    return model.eval()


def padded_batch(batch: int, tokens: int, regions: int, feat_dim: int, vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(batch, tokens, dtype=torch.long)
    attention_mask[0, tokens // 2:] = 0
    visual_attention_mask = torch.ones(batch, regions, dtype=torch.long)
    visual_attention_mask[-1, 3:] = 0  # many padded regions in the last example
    return dict(
        input_ids=torch.randint(1, vocab, (batch, tokens), generator=g),
        attention_mask=attention_mask,
        token_type_ids=torch.randint(0, 2, (batch, tokens), generator=g),
        visual_feats=torch.randn(batch, regions, feat_dim, generator=g),
        visual_pos=torch.rand(batch, regions, 4, generator=g),
        visual_attention_mask=visual_attention_mask,
    )


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    diff = (ours - theirs).abs().max().item()
    assert ours.shape == theirs.shape, what
    assert diff <= ATOL, f"{what}: max abs difference {diff:.2e} > {ATOL}"


def check_pretraining_parity(hf_config, batch, std: float = 0.05) -> None:
    hf = perturbed(transformers.LxmertForPreTraining(hf_config), seed=1, std=std)
    loaded = from_hf_state_dict(hf.state_dict(), hf_config.to_dict())
    assert loaded.report.clean, str(loaded.report)
    backbone = loaded.build_backbone().eval()
    heads = loaded.build_head("pretraining", backbone).eval()
    with torch.no_grad():
        hf_base = hf.lxmert(**batch)
        hf_all = hf(**batch)
        hf_visual = hf.obj_predict_head(hf_base.vision_output)
        out = backbone(**batch)
        logits = heads(out)
    assert_close(out.language, hf_base.language_output, "language")
    assert_close(out.vision, hf_base.vision_output, "vision")
    assert_close(out.pooled, hf_base.pooled_output, "pooled")
    assert_close(logits["lm"], hf_all.prediction_logits, "masked-LM logits")
    assert_close(logits["matched"], hf_all.cross_relationship_score, "matching logits")
    assert_close(logits["qa"], hf_all.question_answering_score, "pre-training QA logits")
    for name in ("obj", "attr", "feat"):
        assert_close(logits[name], hf_visual[name], f"{name} logits")


def test_small_pretraining_parity_with_padding():
    torch.manual_seed(0)
    cfg = transformers.LxmertConfig(**SMALL)
    check_pretraining_parity(cfg, padded_batch(3, 9, 7, 24, 120, seed=2))


def test_small_question_answering_parity():
    torch.manual_seed(0)
    cfg = transformers.LxmertConfig(**SMALL)
    hf = perturbed(transformers.LxmertForQuestionAnswering(cfg), seed=3)
    loaded = from_hf_state_dict(hf.state_dict(), cfg.to_dict())
    assert loaded.report.clean, str(loaded.report)
    assert set(loaded.heads_state) == {"qa"}
    backbone = loaded.build_backbone().eval()
    head = loaded.build_head("qa").eval()
    batch = padded_batch(4, 8, 10, 24, 120, seed=4)
    with torch.no_grad():
        theirs = hf(**batch).question_answering_score
        ours = head(backbone(**batch).pooled)
    assert_close(ours, theirs, "QA logits")


def test_small_gradient_parity_without_dropout():
    """Same loss and same gradients (padding_idx rows included) for one training step."""
    torch.manual_seed(0)
    cfg = transformers.LxmertConfig(**{**SMALL, "hidden_dropout_prob": 0.0,
                                       "attention_probs_dropout_prob": 0.0})
    hf = perturbed(transformers.LxmertForQuestionAnswering(cfg), seed=5).train()
    loaded = from_hf_state_dict(hf.state_dict(), cfg.to_dict())
    backbone = loaded.build_backbone().train()
    head = loaded.build_head("qa").train()
    batch = padded_batch(3, 8, 6, 24, 120, seed=6)
    batch["input_ids"][:, -1] = 0  # a [PAD] id: its embedding row must get no gradient
    labels = torch.tensor([1, 5, 16])
    hf_loss = torch.nn.functional.cross_entropy(hf(**batch).question_answering_score, labels)
    loss = torch.nn.functional.cross_entropy(head(backbone(**batch).pooled), labels)
    hf_loss.backward()
    loss.backward()
    assert abs(loss.item() - hf_loss.item()) < ATOL
    hf_grads = {k.removeprefix("lxmert."): p.grad for k, p in hf.named_parameters()}
    for name, p in backbone.named_parameters():
        if p.grad is None:  # the last layer's vision branch does not reach the pooled output
            assert hf_grads[name] is None, name
            continue
        assert_close(p.grad, hf_grads[name], f"gradient of {name}")
    assert torch.count_nonzero(backbone.embeddings.word_embeddings.weight.grad[0]) == 0
    for name, p in head.named_parameters():
        assert_close(p.grad, hf_grads[f"answer_head.{name}"], f"gradient of {name}")


@pytest.mark.slow
def test_base_config_pretraining_parity():
    """The published 9/5/5 BERT-base-width model, fp32, batch 2, 20 tokens, 36 regions."""
    torch.manual_seed(0)
    cfg = transformers.LxmertConfig()  # HF defaults are the published sizes
    assert (cfg.hidden_size, cfg.l_layers, cfg.r_layers, cfg.x_layers) == (768, 9, 5, 5)
    # BERT's initialisation scale (0.02) keeps activations at the size of a trained model's.
    check_pretraining_parity(cfg, padded_batch(2, 20, 36, 2048, 30522, seed=7), std=0.02)
