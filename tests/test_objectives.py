"""LXMERT pre-training objectives: masking statistics, targets, losses, switching."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch

from vlbench.engine.session import new_session
from vlbench.errors import ConfigError
from vlbench.models.lxmert.modeling import LxmertModel
from vlbench.models.lxmert.spec import SPEC
from vlbench.registry import OBJECTIVES, RegistryError
from vlbench.tasks.pretrain.masking import (
    IGNORE,
    mask_regions,
    mask_tokens,
    mismatch,
    sample_answer,
)
from vlbench.tasks.pretrain.objectives import normalize_answer, resolve_tasks
from vlbench.tasks.pretrain.task import PretrainTask

MASK_ID = 4


# -- masking statistics ----------------------------------------------------------------------


def test_word_masking_is_15_percent_split_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (400, 50), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -5:] = False  # [CLS], [SEP] and padding are never masked
    candidates = torch.arange(10, 1000)
    masked, labels = mask_tokens(ids, maskable, mask_id=MASK_ID, candidate_ids=candidates, generator=g)
    selected = labels != IGNORE
    assert not selected[~maskable].any()
    assert selected.sum() / maskable.sum() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(labels[selected], ids[selected])  # the target is the original word
    n = selected.sum().item()
    to_mask = (masked == MASK_ID) & selected
    kept = (masked == ids) & selected
    swapped = selected & ~to_mask & ~kept
    assert to_mask.sum() / n == pytest.approx(0.8, abs=0.02)
    assert kept.sum() / n == pytest.approx(0.1 + 0.1 / 990, abs=0.02)  # a random word may be itself
    assert swapped.sum() / n == pytest.approx(0.1, abs=0.02)
    assert torch.isin(masked[swapped], candidates).all()  # random words are never special tokens
    assert torch.equal(masked[~selected], ids[~selected])


def test_region_masking_is_15_percent_split_zero_swap_keep():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(600, 10, 8, generator=g) + 3.0  # no real region is all zeros
    real = torch.ones(600, 10, dtype=torch.bool)
    real[:, 7:] = False
    other = torch.full((8,), -7.0)
    original = feats.clone()
    masked, predict = mask_regions(feats, real, other_region=lambda b: other, generator=g)
    selected = predict.bool()
    assert not selected[~real].any()
    assert selected.sum() / real.sum() == pytest.approx(0.15, abs=0.01)
    n = selected.sum().item()
    zeroed = (masked == 0).all(-1) & selected
    swapped = (masked == other).all(-1) & selected
    kept = (masked == feats).all(-1) & selected
    assert zeroed.sum() / n == pytest.approx(0.8, abs=0.025)
    assert swapped.sum() / n == pytest.approx(0.1, abs=0.02)
    assert kept.sum() / n == pytest.approx(0.1, abs=0.02)
    assert (zeroed | swapped | kept)[selected].all()
    assert torch.equal(masked[~selected], feats[~selected])
    assert torch.equal(feats, original)  # not modified in place: it stays the regression target


def test_mismatch_draws_half_from_other_images():
    g = torch.Generator().manual_seed(2)
    pool = [str(i // 5) for i in range(200)]  # 40 images, 5 sentences each
    img_ids = [str(i % 40) for i in range(2000)]
    swaps = mismatch(img_ids, pool, generator=g)
    flipped = [(i, j) for i, j in zip(img_ids, swaps, strict=True) if j is not None]
    assert len(flipped) / len(img_ids) == pytest.approx(0.5, abs=0.03)
    assert all(pool[j] != i for i, j in flipped)
    assert mismatch(["0"], ["0", "0"], prob=1.0, generator=g) == [None]  # no other image to use


def test_answer_sampling_follows_the_scores():
    g = torch.Generator().manual_seed(3)
    draws = [sample_answer({0: 0.3, 1: 0.9}, g) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(0.75, abs=0.03)
    assert sample_answer({5: 1.0}, g) == 5


def test_lxmert_answer_normalisation():
    assert normalize_answer("The Two.") == "2"
    assert normalize_answer("an apple") == "apple"
    assert normalize_answer("Grey") == "gray"
    assert normalize_answer("a man") == "man"
    assert normalize_answer("yes") == "yes"


# -- choosing objectives ----------------------------------------------------------------------


def test_objectives_are_registered_plugins():
    assert {"mask_lm", "mask_obj", "matched", "qa"} <= set(OBJECTIVES.names())


def test_resolve_tasks_switches_objectives_and_visual_losses():
    assert resolve_tasks() == (["mask_lm", "mask_obj", "matched", "qa"], ["obj_feat", "obj_label", "obj_attr"])
    assert resolve_tasks(drop=["mask_obj"]) == (["mask_lm", "matched", "qa"], [])
    assert resolve_tasks(drop=["obj_feat"])[1] == ["obj_label", "obj_attr"]
    assert resolve_tasks(drop=["feat", "label"]) == (["mask_lm", "matched", "qa"], [])
    assert resolve_tasks(["mask_lm", "label"]) == (["mask_lm", "mask_obj"], ["obj_label", "obj_attr"])
    assert resolve_tasks(["obj_feat", "qa"]) == (["mask_obj", "qa"], ["obj_feat"])
    with pytest.raises(RegistryError, match="did you mean 'mask_lm'"):
        resolve_tasks(["mask_llm"])
    with pytest.raises(ConfigError, match="not among"):
        resolve_tasks(["mask_lm"], drop=["qa"])
    with pytest.raises(ConfigError, match="no pre-training task left"):
        resolve_tasks(["qa"], drop=["qa"])


# -- targets and losses on a real (small) corpus -----------------------------------------------


@pytest.fixture(scope="module")
def session(small_world: Path, tmp_path_factory: pytest.TempPathFactory):
    s = new_session("lxmert", "pretrain", data_dir=str(small_world), out=tmp_path_factory.mktemp("pre"),
                    overrides={"train.device": "cpu"}, say=lambda _: None)
    s.task.set_epoch(0)
    return s


def _variant(session, **task):
    """The session's pre-training task with other settings (tokenizer and features reused)."""
    config = dataclasses.replace(session.cfg.task, **task)
    t = PretrainTask(config, session.data)
    t.setup(session.tokenizer, session.features, max_boxes=session.cfg.data.max_boxes)
    t.set_epoch(0)
    torch.manual_seed(0)
    return t, t.build_model(LxmertModel(session.cfg.model), SPEC)


def _qa_examples(task, n=16):
    return [e for e in task.examples("train") if e.label][:n]


def test_feature_target_is_the_unmasked_feature(session):
    task = session.task
    examples = task.examples("train")[:64]
    torch.manual_seed(0)
    batch = task.collate(examples)
    feats, _, _ = task.features.batch(batch["img_ids"], task.max_boxes)
    assert torch.equal(batch["feat_target"], torch.as_tensor(feats))
    masked = batch["obj_mask"].bool()
    assert masked.any()
    real = batch["visual_attention_mask"].bool()
    zeroed = (batch["visual_feats"] == 0).all(-1) & real
    assert zeroed.any() and (zeroed <= masked).all()  # only masked regions are zeroed
    assert torch.equal(batch["visual_feats"][~masked], batch["feat_target"][~masked])
    # object / attribute targets are the detector's labels with their confidences
    regions = task.features.get(batch["img_ids"][0])
    n = regions.num_boxes
    assert batch["obj_labels"][0, :n].tolist() == regions.objects_id[:n].tolist()
    assert batch["attr_confs"][0, :n].tolist() == pytest.approx(regions.attrs_conf[:n].tolist())
    assert (batch["obj_labels"][0, n:] == IGNORE).all()


def test_mlm_targets_are_the_original_words(session):
    task = session.task
    examples = task.examples("train")[:64]
    torch.manual_seed(1)
    batch = task.collate(examples)
    original = task.tokenizer.encode_batch(batch["sentences"])["input_ids"]
    labels = batch["lm_labels"]
    assert (labels != IGNORE).any()
    assert torch.equal(labels[labels != IGNORE], original[labels != IGNORE])
    special = torch.tensor(sorted(task.tokenizer.special_ids))
    assert not torch.isin(original[labels != IGNORE], special).any()


def test_mismatched_pairs_get_no_qa_target(session):
    task, _ = _variant(session, mismatch_prob=1.0)
    examples = _qa_examples(task)
    batch = task.collate(examples)
    assert (batch["is_matched"] == 0).all()
    assert (batch["qa_target"] == IGNORE).all()
    by_sentence: dict[str, set[str]] = {}
    for e in task.examples("train"):
        by_sentence.setdefault(e.sent, set()).add(e.img_id)
    for e, sent in zip(examples, batch["sentences"], strict=True):
        assert by_sentence[sent] - {e.img_id}  # a sentence written about another image
    task, _ = _variant(session, mismatch_prob=0.0)
    batch = task.collate(examples)
    assert (batch["is_matched"] == 1).all()
    gold = [task.answer_index[max(e.label, key=e.label.get)] for e in examples]
    assert batch["qa_target"].tolist() == gold


def test_matched_examples_keep_their_qa_target(session):
    task = session.task
    torch.manual_seed(5)
    batch = task.collate(_qa_examples(task, 64))
    matched = batch["is_matched"].bool()
    assert 0 < matched.sum() < len(matched)
    assert (batch["qa_target"][matched] != IGNORE).all()
    assert (batch["qa_target"][~matched] == IGNORE).all()


def test_empty_target_batches_give_finite_zero_losses(session):
    task, model = _variant(session, word_mask_prob=0.0, obj_mask_prob=0.0, mismatch_prob=0.0)
    captions = [e for e in task.examples("train") if e.label is None][:8]
    batch = task.collate(captions)
    assert (batch["lm_labels"] == IGNORE).all() and batch["obj_mask"].sum() == 0
    assert (batch["qa_target"] == IGNORE).all()
    losses = task.loss(model(batch), batch)
    assert set(losses) == {"mask_lm", "obj_feat", "obj_label", "obj_attr", "matched", "qa"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    for name in ("mask_lm", "obj_feat", "obj_label", "obj_attr", "qa"):
        assert losses[name].item() == 0.0
    sum(losses.values()).backward()  # still a graph: the trainer can step on it
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_visual_losses_are_weighted_and_confidence_weighted(session):
    task = session.task
    torch.manual_seed(3)
    batch = task.collate(task.examples("train")[:32])
    with torch.no_grad():
        out = session.model(batch)
    mask_obj = next(o for o in task.objectives if o.name == "mask_obj")
    terms = mask_obj.terms(out, batch)
    losses = mask_obj.losses(out, batch)
    for name, (num, den) in terms.items():
        assert losses[name].item() == pytest.approx(6.67 * num.sum().item() / den.sum().item(), rel=1e-5)
    halved = dict(batch, obj_confs=batch["obj_confs"] * 0.5)
    assert mask_obj.terms(out, halved)["obj_label"][0].sum().item() == pytest.approx(
        0.5 * terms["obj_label"][0].sum().item(), rel=1e-5)
    # a perfect regression of the unmasked feature costs nothing
    perfect = dict(out, feat=batch["feat_target"])
    assert mask_obj.terms(perfect, batch)["obj_feat"][0].abs().sum().item() == 0.0


def test_qa_waits_for_its_epoch(session):
    task, model = _variant(session, qa_from_epoch=2, mismatch_prob=0.0)
    batch = task.collate(_qa_examples(task))
    out = model(batch)
    task.set_epoch(1)
    assert task.loss(out, batch)["qa"].item() == 0.0
    task.set_epoch(2)
    assert task.loss(out, batch)["qa"].item() > 0.0
    task._epoch = None
    with pytest.raises(ConfigError, match="set_epoch"):
        task.loss(out, batch)


VISUAL = ["obj_feat", "obj_label", "obj_attr"]
SUBSETS = [list(c) for k in (1, 2) for c in itertools.combinations(["mask_lm", "mask_obj", "matched", "qa"], k)]


@pytest.mark.parametrize("objectives", SUBSETS + [["mask_obj"]])
def test_any_subset_of_objectives_trains(session, objectives):
    visual = ["obj_label"] if objectives == ["mask_obj"] else VISUAL
    task, model = _variant(session, objectives=objectives, visual_losses=visual)
    batch = task.collate(task.examples("train")[:16])
    out = model(batch)
    losses = task.loss(out, batch)
    expected = [n for o in objectives for n in (visual if o == "mask_obj" else [o])]
    assert sorted(losses) == sorted(expected)
    total = sum(losses.values())
    assert math.isfinite(total.item())
    total.backward()
    keys = {k for k, _ in model.named_parameters()}
    assert any(k.startswith("heads.pretraining.answer_head.") for k in keys) == ("qa" in objectives)
    assert any(k.startswith("heads.pretraining.obj_predict_head.") for k in keys) == ("mask_obj" in objectives)


def test_validation_masks_do_not_touch_the_global_rng(session):
    task = session.task
    val = task.examples("val")[:32]
    state = torch.get_rng_state()
    a, b = task.collate(val), task.collate(val)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["visual_feats"], b["visual_feats"])


def test_scores_aggregate_the_training_losses(session):
    task = session.task
    examples = task.examples("val")[:48]
    batch = task.collate(examples)
    session.model.eval()
    with torch.no_grad():
        out = session.model(batch)
        losses = task.loss(out, batch)
    metrics, records = task.score("val", dict(task.predict(out.float(), batch)))
    for name, value in losses.items():
        assert metrics[f"loss_{name}"] == pytest.approx(value.item(), rel=1e-4)
    assert metrics["neg_loss"] == pytest.approx(-sum(v.item() for v in losses.values()), rel=1e-4)
    assert 0 <= metrics["mlm_accuracy"] <= 100 and 0 <= metrics["matched_accuracy"] <= 100
    assert all(set(r) >= {"id", "score", "prediction", "answer"} for r in records)
