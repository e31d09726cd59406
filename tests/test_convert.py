"""Checkpoint loading and export: HF directories, original LXMERT files, vlbench directories."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors.torch import save_file

import vlbench
from vlbench.errors import CheckpointError, ConfigError
from vlbench.models.heads import NLVR2Head, QAHead
from vlbench.models.lxmert.config import LxmertConfig
from vlbench.models.lxmert.convert import (
    detect_format,
    export_hf,
    load_checkpoint,
    save_native,
)
from vlbench.models.lxmert.heads import LxmertPretrainingHeads
from vlbench.models.lxmert.modeling import LxmertModel

TINY = dict(vocab_size=60, hidden_size=32, num_attention_heads=4, intermediate_size=48,
            l_layers=2, r_layers=1, x_layers=2, visual_feat_dim=10, max_position_embeddings=24,
            num_qa_labels=5, num_object_labels=6, num_attr_labels=4)
ANSWERS = ["yes", "no", "2", "red", "cat"]


def tiny_config(**overrides) -> LxmertConfig:
    return LxmertConfig.from_preset("tiny", **{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides) -> LxmertModel:
    torch.manual_seed(seed)
    model = LxmertModel(tiny_config(**overrides)).eval()
    with torch.no_grad():  # non-zero biases and LayerNorms, so a mis-mapped key shows
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def batch(cfg: LxmertConfig, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        input_ids=torch.randint(1, cfg.vocab_size, (2, 6), generator=g),
        attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]),
        visual_feats=torch.randn(2, 4, cfg.visual_feat_dim, generator=g),
        visual_pos=torch.rand(2, 4, 4, generator=g),
        visual_attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
    )


def assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -------------------------------------------------------------------------------- HF ---------


def test_hf_qa_export_loads_in_transformers_and_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_model()
    head = QAHead(32, len(ANSWERS)).eval()
    out = export_hf(model, {"qa": head}, tmp_path / "hf", kind="qa", answers=ANSWERS)
    hf, info = transformers.LxmertForQuestionAnswering.from_pretrained(
        out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    inputs = batch(model.config)
    with torch.no_grad():
        theirs = hf.eval()(**inputs).question_answering_score
        ours = head(model(**inputs).pooled)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

    assert detect_format(out) == "hf"
    loaded = load_checkpoint(out)
    assert loaded.report.clean, str(loaded.report)
    assert loaded.answers == ANSWERS
    assert loaded.config.hidden_size == 32 and loaded.config.x_layers == 2
    assert_same_state(loaded.backbone_state, model.state_dict())
    assert_same_state(loaded.heads_state["qa"], head.state_dict())


@pytest.mark.parametrize(
    ("visual_losses", "qa"), [(("obj", "attr", "feat"), True), (("obj", "feat"), False)]
)
def test_hf_pretraining_export_loads_in_transformers(tmp_path, visual_losses, qa):
    transformers = pytest.importorskip("transformers")
    model = tiny_model()
    heads = LxmertPretrainingHeads(model.config, model.get_input_embeddings(), visual_losses, qa)
    out = export_hf(model, {"pretraining": heads}, tmp_path, kind="pretraining")
    hf, info = transformers.LxmertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.equal(hf.cls.predictions.decoder.weight,
                       model.embeddings.word_embeddings.weight)  # tied on their side too
    loaded = load_checkpoint(out)
    assert loaded.report.clean, str(loaded.report)
    rebuilt = loaded.build_backbone()
    rebuilt_heads = loaded.build_head("pretraining", rebuilt).eval()
    inputs = batch(model.config)
    with torch.no_grad():
        expected, got = heads(model(**inputs)), rebuilt_heads(rebuilt.eval()(**inputs))
    assert set(got) == {"lm", "matched", *visual_losses} | ({"qa"} if qa else set())
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_hf_backbone_export_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_model()
    out = export_hf(model, None, tmp_path, kind="model")
    hf, info = transformers.LxmertModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    inputs = batch(model.config)
    with torch.no_grad():
        theirs, ours = hf.eval()(**inputs), model(**inputs)
    torch.testing.assert_close(ours.language, theirs.language_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.vision, theirs.vision_output, atol=1e-5, rtol=1e-5)


def test_hf_pytorch_model_bin_and_sharded_index(tmp_path):
    model = tiny_model()
    head = QAHead(32, 5)
    export_hf(model, {"qa": head}, tmp_path / "ref", kind="qa")
    config = json.loads((tmp_path / "ref" / "config.json").read_text())
    state = {f"lxmert.{k}": v for k, v in model.state_dict().items()}
    state.update({f"answer_head.{k}": v for k, v in head.state_dict().items()})

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text(json.dumps(config))
    torch.save(state, bin_dir / "pytorch_model.bin")
    loaded = load_checkpoint(bin_dir / "pytorch_model.bin")  # a file inside the directory
    assert loaded.report.fmt == "hf" and loaded.report.clean
    assert_same_state(loaded.backbone_state, model.state_dict())

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(json.dumps(config))
    keys = sorted(state)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: state[k].contiguous() for k in part}, str(sharded / name))
        weight_map.update({k: name for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = load_checkpoint(sharded)
    assert loaded.report.clean
    assert_same_state(loaded.heads_state["qa"], head.state_dict())


def test_hf_config_that_disagrees_with_weights_names_key_and_shapes(tmp_path):
    model = tiny_model()
    out = export_hf(model, None, tmp_path, kind="model")
    config = json.loads((out / "config.json").read_text())
    config["intermediate_size"] = 40
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'encoder\.layer\.0\.intermediate\.dense\.\w+'"
                       r" has shape \(48,.*\) in the checkpoint but \(40,"):
        load_checkpoint(out)


def test_export_refuses_missing_head(tmp_path):
    with pytest.raises(CheckpointError, match=r"heads\['qa'\]"):
        export_hf(tiny_model(), {}, tmp_path, kind="qa")


# ---------------------------------------------------------------------- original release ----


def airsplay_pretrain_state(model: LxmertModel, heads: LxmertPretrainingHeads) -> dict:
    """Keys as LXRTPretraining.state_dict() under DataParallel, as the release saved them."""
    state = {f"module.bert.{k}": v for k, v in model.state_dict().items()}
    state.update({f"module.{k}": v for k, v in heads.state_dict().items()})
    state["module.cls.predictions.decoder.weight"] = model.embeddings.word_embeddings.weight
    return state


def test_original_pretraining_checkpoint(tmp_path):
    model = tiny_model()
    heads = LxmertPretrainingHeads(model.config, model.get_input_embeddings())
    path = tmp_path / "Epoch20_LXRT.pth"
    # The release's files were written by torch 1.0: the legacy (non-zip) format.
    torch.save(airsplay_pretrain_state(model, heads), path, _use_new_zipfile_serialization=False)
    assert detect_format(path) == "airsplay"
    loaded = load_checkpoint(path, num_attention_heads=4)
    assert loaded.report.clean, str(loaded.report)
    cfg = loaded.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.l_layers, cfg.r_layers, cfg.x_layers) == (
        32, 48, 2, 1, 2)
    assert (cfg.num_qa_labels, cfg.num_object_labels, cfg.num_attr_labels) == (5, 6, 4)
    assert (cfg.visual_feat_dim, cfg.vocab_size, cfg.max_position_embeddings) == (10, 60, 24)
    assert_same_state(loaded.backbone_state, model.state_dict())
    assert_same_state(loaded.heads_state["pretraining"], heads.state_dict())
    # Without a config in the file the head count follows BERT's 64-wide heads.
    assert load_checkpoint(path).config.num_attention_heads == 1


def test_original_vqa_best_with_label2ans(tmp_path):
    model = tiny_model()
    head = QAHead(32, len(ANSWERS)).eval()
    state = {f"lxrt_encoder.model.bert.{k}": v for k, v in model.state_dict().items()}
    state.update({f"logit_fc.{k.split('.', 1)[1]}": v for k, v in head.state_dict().items()})
    torch.save(state, tmp_path / "BEST.pth")
    (tmp_path / "trainval_label2ans.json").write_text(json.dumps(ANSWERS))
    loaded = load_checkpoint(tmp_path / "BEST", num_attention_heads=4)  # as the original's --load
    assert loaded.report.fmt == "airsplay" and loaded.report.clean
    assert loaded.answers == ANSWERS
    assert set(loaded.heads_state) == {"qa"}
    backbone, rebuilt = loaded.build_backbone().eval(), loaded.build_head("qa").eval()
    inputs = batch(model.config)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(backbone(**inputs).pooled),
                                   head(model(**inputs).pooled), atol=0, rtol=0)
    with pytest.raises(CheckpointError, match="5 outputs"):
        load_checkpoint(tmp_path / "BEST.pth", answers=ANSWERS[:3])


def test_original_nlvr2_best(tmp_path):
    model = tiny_model()
    head = NLVR2Head(32)
    state = {f"module.lxrt_encoder.model.bert.{k}": v for k, v in model.state_dict().items()}
    state.update({k: v for k, v in head.state_dict().items()})
    torch.save(state, tmp_path / "BEST.pth")
    loaded = load_checkpoint(tmp_path / "BEST.pth", num_attention_heads=4)
    assert set(loaded.heads_state) == {"nlvr2"} and loaded.answers is None
    assert_same_state(loaded.build_head("nlvr2").state_dict(), head.state_dict())


def test_gamma_beta_layer_norm_names_are_read(tmp_path):
    model = tiny_model()
    state = {}
    for k, v in model.state_dict().items():
        if "LayerNorm" in k:
            k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
        state[f"bert.{k}"] = v
    torch.save(state, tmp_path / "model_LXRT.pth")
    loaded = load_checkpoint(tmp_path / "model_LXRT.pth", num_attention_heads=4)
    assert loaded.report.clean
    assert_same_state(loaded.backbone_state, model.state_dict())


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    model = tiny_model()
    state = {f"bert.{k}": v for k, v in model.state_dict().items()}
    del state["bert.pooler.dense.bias"]
    state["bert.encoder.visn_fc.extra"] = torch.zeros(1)
    state["optimizer_step"] = torch.tensor(3)
    torch.save(state, tmp_path / "model_LXRT.pth")
    loaded = load_checkpoint(tmp_path / "model_LXRT.pth", num_attention_heads=4)
    assert loaded.report.missing == ["pooler.dense.bias"]
    assert set(loaded.report.unexpected) == {"encoder.visn_fc.extra", "optimizer_step"}
    assert "pooler.dense.bias" in str(loaded.report)
    with pytest.raises(CheckpointError, match="missing 1 keys"):
        loaded.build_backbone()


# ------------------------------------------------------------------------------- vlbench ----


def test_native_round_trip_and_hf_round_trip_are_exact(tmp_path):
    model = tiny_model()
    qa, nlvr2 = QAHead(32, len(ANSWERS)), NLVR2Head(32)
    gqa = QAHead(32, len(ANSWERS))  # heads may be named freely; config.json records classes
    out = save_native(tmp_path / "native", model, {"qa": qa, "nlvr2": nlvr2, "gqa": gqa},
                      answers=ANSWERS, extra={"run": "r1"})
    meta = json.loads((out / "config.json").read_text())
    assert meta["model"] == "lxmert" and meta["config"]["model"]["hidden_size"] == 32
    assert meta["run"] == "r1"
    assert meta["heads"] == {"qa": "QAHead", "nlvr2": "NLVR2Head", "gqa": "QAHead"}
    assert detect_format(out) == "vlbench"
    loaded = load_checkpoint(out)
    assert loaded.report.clean and loaded.config == model.config and loaded.answers == ANSWERS
    assert_same_state(loaded.backbone_state, model.state_dict())
    assert_same_state(loaded.heads_state["nlvr2"], nlvr2.state_dict())
    assert_same_state(loaded.build_head("gqa").state_dict(), gqa.state_dict())

    # vlbench -> HF -> vlbench
    rebuilt = loaded.build_backbone()
    hf_dir = export_hf(rebuilt, {"qa": loaded.build_head("qa")}, tmp_path / "hf", kind="qa",
                       answers=loaded.answers)
    back = load_checkpoint(hf_dir)
    assert_same_state(back.backbone_state, model.state_dict())
    assert_same_state(back.heads_state["qa"], qa.state_dict())
    assert back.answers == ANSWERS
    assert back.config == LxmertConfig.from_dict(
        {**model.config.to_dict(), "num_qa_labels": len(ANSWERS)})


def test_native_pretraining_heads_save_the_tied_decoder_once(tmp_path):
    model = tiny_model()
    heads = LxmertPretrainingHeads(model.config, model.get_input_embeddings())
    out = save_native(tmp_path, model, {"pretraining": heads})
    loaded = load_checkpoint(out)
    assert not any("decoder.weight" in k for k in loaded.heads_state["pretraining"])
    backbone = loaded.build_backbone()
    rebuilt = loaded.build_head("pretraining", backbone)
    assert rebuilt.cls.predictions.decoder_weight is backbone.embeddings.word_embeddings.weight
    params = {id(p) for p in [*backbone.parameters(), *rebuilt.parameters()]}
    assert len(params) == len(list(backbone.parameters())) + len(list(rebuilt.parameters()))


def test_native_bad_config_names_file_and_key(tmp_path):
    out = save_native(tmp_path, tiny_model())
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["model"]["hiden_size"] = 3
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"config\.json.*'hiden_size'.*hidden_size"):
        load_checkpoint(out)


# ---------------------------------------------------------------------------- safety --------


class _TouchOnLoad:
    """Unpickling this runs ``Path.touch(target)``: a stand-in for arbitrary code."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    flag = tmp_path / "code_ran"
    path = tmp_path / "model_LXRT.pth"
    state = {f"bert.{k}": v for k, v in tiny_model().state_dict().items()}
    torch.save({**state, "payload": _TouchOnLoad(flag)}, path)
    with pytest.raises(CheckpointError, match="refused to load: it references getattr"):
        load_checkpoint(path)
    assert not flag.exists()
    # The file really is dangerous: an unrestricted unpickler runs the payload.
    torch.load(path, weights_only=False)
    assert flag.exists()


def test_unreadable_and_unknown_inputs(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "garbage.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"resnet.conv1.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no LXMERT backbone weights.*understood"):
        load_checkpoint(tmp_path / "other.pth")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(CheckpointError, match="unknown checkpoint layout; understood"):
        detect_format(tmp_path / "weights.txt")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not an LXMERT config"):
        load_checkpoint(odd)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_checkpoint(odd, fmt="onnx")


def test_native_pretraining_heads_keep_their_stored_label_counts(tmp_path):
    # Pre-training sizes the QA head to its answer list (and the visual decoders to the
    # world's labels), not to the backbone config's num_qa_labels / num_object_labels.
    import dataclasses

    from vlbench.models.lxmert.spec import pretraining_heads

    model = tiny_model()
    config = dataclasses.replace(model.config, num_object_labels=7, num_attr_labels=3)
    heads = pretraining_heads(config, model, ("obj", "attr", "feat"), num_answers=3)
    out = save_native(tmp_path, model, {"pretraining": heads}, answers=ANSWERS[:3])
    loaded = load_checkpoint(out)
    assert loaded.report.clean, str(loaded.report)
    backbone = loaded.build_backbone()
    rebuilt = loaded.build_head("pretraining", backbone)
    assert rebuilt.answer_head.num_answers == 3
    assert rebuilt.obj_predict_head.decoder_dict["obj"].out_features == 7
    assert rebuilt.obj_predict_head.decoder_dict["attr"].out_features == 3
    assert_same_state(rebuilt.state_dict(), heads.state_dict())


def test_a_sharded_index_may_not_point_outside_its_directory(tmp_path):
    from vlbench.models.common.checkpoint import read_hf_weights

    (tmp_path / "hf").mkdir()
    (tmp_path / "secret.safetensors").write_bytes(b"")
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../secret.safetensors"}}))
    with pytest.raises(CheckpointError, match="points outside"):
        read_hf_weights(tmp_path / "hf")


def test_a_multi_gpu_best_pth_loads_and_an_unpublished_width_needs_its_head_count(tmp_path):
    # The released fine-tuning code wraps the encoder in DataParallel: lxrt_encoder.model.module.bert.*
    model = tiny_model(hidden_size=128, num_attention_heads=4, intermediate_size=256)
    head = QAHead(128, len(ANSWERS)).eval()
    state = {f"lxrt_encoder.model.module.bert.{k}": v for k, v in model.state_dict().items()}
    state.update({f"logit_fc.{k.split('.', 1)[1]}": v for k, v in head.state_dict().items()})
    torch.save(state, tmp_path / "BEST.pth")
    guessed = load_checkpoint(tmp_path / "BEST.pth")
    assert guessed.report.clean and guessed.config.num_attention_heads == 2  # 128 / 64
    assert any(n.startswith("WARNING: hidden size 128") and "--set model.num_attention_heads"
               in n for n in guessed.report.notes)
    told = vlbench.load_model(str(tmp_path / "BEST.pth"),
                              overrides={"model.num_attention_heads": "4"})
    inputs = batch(model.config)
    with torch.no_grad():
        torch.testing.assert_close(told(**inputs).pooled, model(**inputs).pooled, atol=0, rtol=0)
    with pytest.raises(ConfigError, match="takes only model.num_attention_heads"):
        vlbench.load_model(str(tmp_path / "BEST.pth"), overrides={"model.hidden_size": "64"})
