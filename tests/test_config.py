"""Layered config: preset < task defaults < data-source defaults < --set, typed and checked."""

from __future__ import annotations

import pytest

from vlbench.config import build_config, config_from_dict, parse_overrides
from vlbench.errors import ConfigError
from vlbench.models.lxmert.config import LxmertConfig
from vlbench.tasks.gqa.task import GQAConfig


def resolve(*layers):
    return build_config(LxmertConfig, GQAConfig(), [(f"layer{i}", layer) for i, layer in enumerate(layers)])


def test_layers_apply_in_order_and_later_wins():
    cfg = resolve({"train.lr": 1e-5, "train.epochs": 3}, {"train.lr": 1e-3, "model.preset": "tiny"},
                  parse_overrides(["train.epochs=7", "model.x_layers=3"]))
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 7
    assert cfg.model.preset == "tiny" and cfg.model.hidden_size == LxmertConfig.from_preset("tiny").hidden_size
    assert cfg.model.x_layers == 3


def test_override_of_preset_rebases_the_model():
    cfg = resolve({"model.preset": "tiny"}, parse_overrides(["model.preset=base"]))
    assert (cfg.model.hidden_size, cfg.model.l_layers, cfg.model.r_layers, cfg.model.x_layers) == (768, 9, 5, 5)
    assert (cfg.model.num_attention_heads, cfg.model.intermediate_size, cfg.model.visual_feat_dim) == (12, 3072, 2048)


def test_values_are_typed():
    cfg = resolve(parse_overrides(["train.batch_size=16", "train.lr=2e-4", "train.deterministic=false",
                                   "task.eval_splits=testdev,val", "train.precision=bf16"]))
    assert cfg.train.batch_size == 16 and isinstance(cfg.train.batch_size, int)
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.train.deterministic is False
    assert cfg.task.eval_splits == ["testdev", "val"]


@pytest.mark.parametrize("pair, fragment", [
    ("train.batch_size=many", "expects int"),
    ("train.lr=fast", "expects float"),
    ("train.deterministic=maybe", "expects bool"),
    ("train.batch_size=1.5", "expects int"),
])
def test_wrong_types_are_rejected(pair, fragment):
    with pytest.raises(ConfigError, match=fragment):
        resolve(parse_overrides([pair]))


def test_unknown_keys_get_close_match_hints():
    with pytest.raises(ConfigError, match="did you mean train.lr"):
        resolve(parse_overrides(["train.lrr=1"]))
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        resolve(parse_overrides(["trian.lr=1"]))
    with pytest.raises(ConfigError, match="did you mean model.x_layers"):
        resolve(parse_overrides(["model.x_layer=1"]))


def test_unknown_preset_is_an_error():
    with pytest.raises(ConfigError, match="tiny"):
        resolve(parse_overrides(["model.preset=tinny"]))


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.lr"])


def test_round_trip_through_dict():
    cfg = resolve({"model.preset": "tiny"}, parse_overrides(["train.epochs=2"]))
    again = config_from_dict(LxmertConfig, GQAConfig, cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match="unknown key 'train.bogus'"):
        config_from_dict(LxmertConfig, GQAConfig, {**cfg.to_dict(), "train": {"bogus": 1}})


def test_a_neutral_field_at_its_default_leaves_the_run_identity_unchanged():
    from vlbench.config import DataConfig, RunConfig, TrainConfig

    cfg = RunConfig(model=TrainConfig(), task=TrainConfig())
    assert "duplicate_ids" in cfg.to_dict()["data"]
    assert "duplicate_ids" not in cfg.identity()["data"]  # what runs before the field did
    cfg.data = DataConfig(duplicate_ids="last")
    assert cfg.identity()["data"]["duplicate_ids"] == "last"
    assert cfg.identity()["data"]["max_boxes"] == 36  # other defaults stay in
