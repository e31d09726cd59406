"""Every registered model family x every task and objective: the contract the engine relies on.

Each family builds (tiny preset, fitted to the data), runs forward and backward on a small
batch of each task, saves in the one checkpoint layout, reloads through the one loader and
gives the same outputs; each pre-training objective either trains or is refused up front with
a one-line reason.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vlbench.engine.backbone import (
    PIXEL_INPUTS,
    BackboneOutput,
    DataFacts,
    ModelSpec,
    backbone_inputs,
)
from vlbench.engine.checkpoint import load_weights, save_checkpoint
from vlbench.engine.layout import read_checkpoint
from vlbench.engine.loading import build_backbone
from vlbench.engine.session import new_session
from vlbench.errors import ConfigError
from vlbench.registry import MODELS, TASKS

FAMILIES: dict[str, ModelSpec] = {}
for _entry in MODELS:
    FAMILIES.setdefault(_entry.obj.family, _entry.obj.spec)

TASK_NAMES = ["gqa", "vqa", "nlvr2"]
QUICK = {"train.epochs": "1", "train.train_limit": "64", "train.eval_limit": "16"}


@pytest.fixture(scope="module")
def sessions(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One session per task (its tokenizer, features and task plugin are shared by the models)."""
    out = tmp_path_factory.mktemp("contract")
    tasks = TASK_NAMES + ["pretrain"]
    return {t: new_session("lxmert", t, data_dir=str(small_world), out=out, overrides=QUICK,
                           say=lambda _: None) for t in tasks}


def _backbone(spec: ModelSpec, session) -> torch.nn.Module:
    config = spec.config("tiny")
    spec.fit_to_data(config, DataFacts(session.tokenizer.vocab_size, session.features.feat_dim), {})
    torch.manual_seed(0)
    return spec.build(config)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("task", TASK_NAMES)
def test_family_x_task_trains_saves_and_reloads(family: str, task: str, sessions, tmp_path: Path):
    spec, session = FAMILIES[family], sessions[task]
    task_cls = type(session.task)
    if not (task_cls.requires <= spec.provides and set(task_cls.image_inputs) & spec.provides):
        # e.g. a pixel model on a task that feeds region features only
        with pytest.raises(ConfigError, match=f"task '{task}' cannot run on {family}") as info:
            spec.require(task_cls.requires, f"task '{task}'")
            session.task.build_model(_backbone(spec, session), spec)
        assert "\n" not in str(info.value)
        return
    model = session.task.build_model(_backbone(spec, session), spec)
    assert set(model.state_dict()) == {k for k in model.state_dict()
                                       if k.startswith(("backbone.", "heads."))}
    batch = session.task.collate(session.task.examples(session.task.train_split)[:4])
    # the task feeds what the family reads: regions, or (a pixel model) the rendered images
    assert ("pixel_values" in batch) == (PIXEL_INPUTS in spec.provides)
    assert ("visual_feats" in batch) == (PIXEL_INPUTS not in spec.provides)
    out = model.backbone(**backbone_inputs(batch))
    assert isinstance(out, BackboneOutput)
    rows, tokens = batch["input_ids"].shape
    assert out.language.shape[:2] == (rows, tokens)
    regions = batch["visual_feats" if "visual_feats" in batch else "pixel_values"].shape[0]
    assert out.vision.shape[0] == regions == rows and out.pooled.shape[0] == rows
    if "visual_feats" in batch:
        assert out.vision.shape[1] == batch["visual_feats"].shape[1]
    loss = session.task.loss(model(batch), batch)
    loss = sum(loss.values()) if isinstance(loss, dict) else loss
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0
                                        for p in model.backbone.parameters())

    model.eval()
    meta = {"family": family, "model": family, "task": task,
            "config": {"model": dataclasses.asdict(model.backbone.config)},
            "heads": dict(model.heads.items())}
    save_checkpoint(tmp_path / "ckpt", model, meta)
    stored = read_checkpoint(tmp_path / "ckpt")
    assert stored.family == family and set(stored.heads) == set(model.heads)
    backbone, report = build_backbone(stored)
    assert report["unexpected"] == []
    again = session.task.build_model(backbone, spec).eval()
    load_weights(again, tmp_path / "ckpt" / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(model(batch), again(batch))


OBJECTIVES = ["mask_lm", "mask_obj", "matched", "qa"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_family_x_objective_trains_or_is_refused(family: str, objective: str, sessions):
    from vlbench.tasks.pretrain.objectives import VISUAL_LOSSES

    spec, session = FAMILIES[family], sessions["pretrain"]
    config = dataclasses.replace(session.cfg.task, objectives=[objective],
                                 visual_losses=list(VISUAL_LOSSES) if objective == "mask_obj" else [])
    task = TASKS.get("pretrain")(config, session.data)
    task.setup(session.tokenizer, session.features, max_boxes=session.cfg.data.max_boxes)
    task.set_epoch(0)
    needs = {o.name: o.requires for o in task.objectives}[objective] | type(task).requires
    if not needs <= spec.provides:
        with pytest.raises(ConfigError, match=f"(objective '{objective}'|task 'pretrain').*cannot "
                                              f"run on {family}") as info:
            task.build_model(_backbone(spec, session), spec)
        assert "\n" not in str(info.value)
        return
    model = task.build_model(_backbone(spec, session), spec)
    batch = task.collate(task.examples("train")[:8])
    losses = task.loss(model(batch), batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_a_family_that_lacks_a_capability_is_refused_with_its_reason():
    from vlbench.engine.backbone import REGION_STATES

    spec = dataclasses.replace(next(iter(FAMILIES.values())), family="blind",
                               provides=frozenset(), refusals={REGION_STATES: "it never sees regions"})
    with pytest.raises(ConfigError, match="objective 'mask_obj' cannot run on blind: it never sees regions"):
        spec.require({REGION_STATES}, "objective 'mask_obj'")
