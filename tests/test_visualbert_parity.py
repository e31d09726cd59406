"""Numerical parity of the native VisualBERT with HF transformers' implementation.

Random HF models (every parameter perturbed, so a swapped weight or bias cannot hide behind
zero initialisation) are written with ``save_pretrained`` and read back through the
VisualBERT checkpoint format; hidden states and head logits must agree within 1e-5 in fp32 on
batches with padded tokens and padded regions. Exports go the other way and must load in
transformers without a missing or unexpected key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlbench.models.visualbert.config import VisualBertConfig
from vlbench.models.visualbert.convert import (
    detect_format,
    export_hf,
    from_hf_state_dict,
    load_checkpoint,
    save_native,
)
from vlbench.models.visualbert.heads import VisualBertForQuestionAnswering
from vlbench.models.visualbert.modeling import VisualBertModel
from vlbench.registry import CHECKPOINT_FORMATS

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
SMALL = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
             intermediate_size=64, visual_embedding_dim=24, max_position_embeddings=40)
ANSWERS = ["yes", "no", "2", "red", "cat", "dog", "blue"]


def test_transformers_still_provides_visual_bert():
    """Canary: conversion and these parity tests rely on these classes existing."""
    from transformers import (  # noqa: F401
        VisualBertConfig,
        VisualBertForPreTraining,
        VisualBertForQuestionAnswering,
        VisualBertModel,
    )


def hf_config(**overrides) -> transformers.VisualBertConfig:
    return transformers.VisualBertConfig(**{**SMALL, **overrides})


def perturbed(model: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter (LayerNorms and biases included) non-trivial random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "LayerNorm" in name:
                p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            else:
                p.copy_(std * noise)
    return model.eval()


def saved(model: torch.nn.Module, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def padded_batch(batch: int, tokens: int, regions: int, seed: int) -> dict[str, torch.Tensor]:
    """vlbench's backbone inputs, with padding in the text of example 0 and in the regions of
    the last example."""
    g = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(batch, tokens, dtype=torch.long)
    attention_mask[0, tokens // 2:] = 0
    visual_attention_mask = torch.ones(batch, regions, dtype=torch.long)
    visual_attention_mask[-1, 3:] = 0
    return dict(
        input_ids=torch.randint(1, SMALL["vocab_size"], (batch, tokens), generator=g),
        attention_mask=attention_mask,
        token_type_ids=torch.randint(0, 2, (batch, tokens), generator=g),
        visual_feats=torch.randn(batch, regions, SMALL["visual_embedding_dim"], generator=g),
        visual_pos=torch.rand(batch, regions, 4, generator=g),
        visual_attention_mask=visual_attention_mask,
    )


def hf_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch under HF's names (VisualBERT reads no boxes)."""
    names = {"visual_feats": "visual_embeds"}
    return {names.get(k, k): v for k, v in batch.items() if k != "visual_pos"}


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, what
    diff = (ours - theirs).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs difference {diff:.2e} > {ATOL}"


def test_backbone_parity_with_padding_through_the_format_reader(tmp_path):
    torch.manual_seed(0)
    hf = perturbed(transformers.VisualBertModel(hf_config()), seed=1)
    directory = saved(hf, tmp_path / "hf")
    reader = CHECKPOINT_FORMATS.get("visualbert")
    assert reader.detect(directory)
    backbone, report = reader.load_backbone(directory)
    assert "no missing keys; no unexpected keys" in report["report"]
    batch = padded_batch(3, 9, 7, seed=2)
    with torch.no_grad():
        ours = backbone.eval()(**batch)
        theirs = hf(**hf_inputs(batch))
    tokens = batch["input_ids"].shape[1]
    assert_close(ours.language, theirs.last_hidden_state[:, :tokens], "language")
    assert_close(ours.vision, theirs.last_hidden_state[:, tokens:], "vision")
    assert_close(ours.pooled, theirs.pooler_output, "pooled")


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_state_dict_keys_and_shapes_equal_hf(preset):
    config = VisualBertConfig.from_preset(preset)
    values = {k: v for k, v in config.to_dict().items()
              if k in transformers.VisualBertConfig().to_dict() and k != "preset"}
    with torch.device("meta"):
        ours = VisualBertModel(config).state_dict()
        theirs = transformers.VisualBertModel(transformers.VisualBertConfig(**values)).state_dict()
    theirs.pop("embeddings.position_ids", None)  # a derived buffer some versions save
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key


def test_question_answering_parity(tmp_path):
    torch.manual_seed(0)
    hf = perturbed(transformers.VisualBertForQuestionAnswering(hf_config(num_labels=7)), seed=3)
    loaded = load_checkpoint(saved(hf, tmp_path / "hf"))
    assert loaded.report.clean, str(loaded.report)
    assert set(loaded.heads_state) == {"qa"}
    backbone = loaded.build_backbone().eval()
    head = loaded.build_head("qa").eval()
    assert isinstance(head, VisualBertForQuestionAnswering)
    batch = padded_batch(4, 8, 10, seed=4)
    with torch.no_grad():
        theirs = hf(**hf_inputs(batch)).logits
        ours = head(backbone(**batch), batch)
    assert_close(ours, theirs, "QA logits")


def test_pretraining_parity(tmp_path):
    torch.manual_seed(0)
    hf = perturbed(transformers.VisualBertForPreTraining(hf_config()), seed=5)
    loaded = load_checkpoint(saved(hf, tmp_path / "hf"))
    assert loaded.report.clean, str(loaded.report)
    backbone = loaded.build_backbone().eval()
    heads = loaded.build_head("pretraining", backbone).eval()
    assert heads.cls.predictions.decoder_weight is backbone.get_input_embeddings().weight
    batch = padded_batch(3, 8, 6, seed=6)
    with torch.no_grad():
        theirs = hf(**hf_inputs(batch))
        logits = heads(backbone(**batch))
    assert set(logits) == {"lm", "matched"}  # HF's VisualBERT has no object or QA heads
    assert_close(logits["lm"], theirs.prediction_logits[:, :8], "masked-LM logits")
    assert_close(logits["matched"], theirs.seq_relationship_logits, "matching logits")


def test_gradient_parity_without_dropout():
    """Same loss and same gradients for one QA step (the padding row of the words included)."""
    torch.manual_seed(0)
    cfg = hf_config(num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = perturbed(transformers.VisualBertForQuestionAnswering(cfg), seed=7).train()
    loaded = from_hf_state_dict(hf.state_dict(), cfg.to_dict())
    assert loaded.config.pad_token_id == cfg.pad_token_id
    backbone, head = loaded.build_backbone().train(), loaded.build_head("qa").train()
    batch = padded_batch(3, 8, 6, seed=8)
    batch["input_ids"][:, 2] = cfg.pad_token_id  # its embedding row must get no gradient
    labels = torch.tensor([1, 4, 0])
    hf_loss = torch.nn.functional.cross_entropy(hf(**hf_inputs(batch)).logits, labels)
    loss = torch.nn.functional.cross_entropy(head(backbone(**batch), batch), labels)
    hf_loss.backward()
    loss.backward()
    assert abs(loss.item() - hf_loss.item()) < ATOL
    hf_grads = {k.removeprefix("visual_bert."): p.grad for k, p in hf.named_parameters()}
    for name, p in [*backbone.named_parameters(), *head.named_parameters()]:
        if p.grad is None:  # the pooler does not reach the last-token QA head
            assert hf_grads[name] is None, name
            continue
        assert_close(p.grad, hf_grads[name], f"gradient of {name}")
    assert torch.count_nonzero(backbone.get_input_embeddings().weight.grad[cfg.pad_token_id]) == 0


def our_model(seed: int = 0) -> VisualBertModel:
    torch.manual_seed(seed)
    model = VisualBertModel(VisualBertConfig.from_preset("tiny", **SMALL)).eval()
    with torch.no_grad():  # non-zero biases and LayerNorms, so a mis-mapped key shows
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_backbone_export_loads_in_transformers_with_equal_outputs(tmp_path):
    model = our_model()
    out = export_hf(model, None, tmp_path / "hf", kind="model")
    hf, info = transformers.VisualBertModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = padded_batch(2, 6, 5, seed=9)
    with torch.no_grad():
        ours, theirs = model(**batch), hf.eval()(**hf_inputs(batch))
    assert_close(ours.language, theirs.last_hidden_state[:, :6], "language")
    assert_close(ours.vision, theirs.last_hidden_state[:, 6:], "vision")
    assert_close(ours.pooled, theirs.pooler_output, "pooled")


def test_qa_export_loads_in_transformers_and_round_trips(tmp_path):
    model = our_model()
    head = VisualBertForQuestionAnswering(model.config, len(ANSWERS)).eval()
    out = export_hf(model, {"qa": head}, tmp_path / "hf", kind="qa", answers=ANSWERS)
    hf, info = transformers.VisualBertForQuestionAnswering.from_pretrained(
        out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = padded_batch(3, 7, 4, seed=10)
    with torch.no_grad():
        theirs = hf.eval()(**hf_inputs(batch)).logits
        ours = head(model(**batch), batch)
    assert_close(ours, theirs, "QA logits")
    loaded = load_checkpoint(out)
    assert loaded.report.clean and loaded.answers == ANSWERS
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.backbone_state[key], value), key


def test_pretraining_export_loads_in_transformers(tmp_path):
    from vlbench.models.visualbert.spec import pretraining_heads

    model = our_model()
    heads = pretraining_heads(model.config, model, ("obj", "feat"), num_answers=4).eval()
    said: list[str] = []
    out = export_hf(model, {"pretraining": heads}, tmp_path, kind="pretraining", say=said.append)
    assert said and "obj_predict_head" in said[0]  # HF has no place for vlbench's extra heads
    hf, info = transformers.VisualBertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.equal(hf.cls.predictions.decoder.weight, model.get_input_embeddings().weight)
    batch = padded_batch(2, 6, 5, seed=11)
    with torch.no_grad():
        theirs = hf.eval()(**hf_inputs(batch))
        ours = heads(model(**batch))
    assert_close(ours["lm"], theirs.prediction_logits[:, :6], "masked-LM logits")
    assert_close(ours["matched"], theirs.seq_relationship_logits, "matching logits")


def test_pytorch_model_bin_is_read(tmp_path):
    torch.manual_seed(0)
    hf = perturbed(transformers.VisualBertModel(hf_config()), seed=12)
    directory = saved(hf, tmp_path / "hf")
    state = transformers.VisualBertModel.from_pretrained(directory).state_dict()
    (directory / "model.safetensors").unlink()
    torch.save(dict(state), directory / "pytorch_model.bin")
    loaded = load_checkpoint(directory)
    assert loaded.report.clean, str(loaded.report)
    for key, value in state.items():
        assert torch.equal(loaded.backbone_state[key], value), key


def test_native_round_trip_is_exact_and_not_claimed_by_the_hf_reader(tmp_path):
    model = our_model()
    head = VisualBertForQuestionAnswering(model.config, len(ANSWERS))
    out = save_native(tmp_path / "native", model, {"qa": head}, answers=ANSWERS)
    assert detect_format(out) == "vlbench"
    assert not CHECKPOINT_FORMATS.get("visualbert").detect(out)  # the engine reads these
    loaded = load_checkpoint(out)
    assert loaded.report.clean and loaded.config == model.config and loaded.answers == ANSWERS
    rebuilt, rebuilt_head = loaded.build_backbone().eval(), loaded.build_head("qa").eval()
    batch = padded_batch(2, 6, 5, seed=13)
    with torch.no_grad():
        expected = head.eval()(model(**batch), batch)
        got = rebuilt_head(rebuilt(**batch), batch)
    assert torch.equal(expected, got)


def test_lxmert_directories_are_not_claimed_and_lxmert_does_not_claim_ours(tmp_path):
    torch.manual_seed(0)
    lxmert = transformers.LxmertModel(transformers.LxmertConfig(
        vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=32, l_layers=1,
        r_layers=1, x_layers=1, visual_feat_dim=8, num_qa_labels=3, num_object_labels=3,
        num_attr_labels=3))
    ours = CHECKPOINT_FORMATS.get("visualbert")
    assert not ours.detect(saved(lxmert, tmp_path / "lxmert"))
    visual_bert = saved(transformers.VisualBertModel(hf_config()), tmp_path / "visual_bert")
    assert ours.detect(visual_bert)
    assert not CHECKPOINT_FORMATS.get("lxmert").detect(visual_bert)
