"""``vlbench ablate --models`` and ``--vary``: grids of models and of a config key's values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlbench.cli import app
from vlbench.engine.ablate import expand_models, expand_values
from vlbench.errors import ConfigError, VLBenchError

QUICK = ["--train-limit", "64", "--set-finetune", "train.epochs=1",
         "--set-finetune", "train.eval_limit=32"]


def test_model_rows_name_their_model_and_pretrain_only_what_it_can():
    rows = expand_models(["lxmert", "late_fusion", "text_only"], pretrain=True)
    assert [r.model for r in rows] == ["lxmert", "late_fusion", "text_only"]
    assert rows[0].objectives == ("mask_lm", "mask_obj", "matched", "qa") and not rows[0].left_out
    assert rows[1].objectives == ("mask_lm", "mask_obj", "qa")
    assert [o for o, _ in rows[1].left_out] == ["matched"]
    assert "never attend to each other" in dict(rows[1].left_out)["matched"]
    assert rows[2].objectives == ("mask_lm",) and rows[2].visual_losses == ()
    assert [o for o, _ in rows[2].left_out] == ["mask_obj", "matched", "qa"]
    assert [r.objectives for r in expand_models(["lxmert", "visualbert"])] == [None, None]


def test_grids_refuse_what_they_cannot_compare():
    with pytest.raises(ConfigError, match="two or more registered models"):
        expand_models(["lxmert"])
    with pytest.raises(VLBenchError, match="unknown model 'lxmret'"):
        expand_models(["lxmert", "lxmret"])
    with pytest.raises(ConfigError, match="two or more values"):
        expand_values("model.x_layers", ["1"])
    rows = expand_values("model.x_layers", ["0", "1", "2"])
    assert [r.label for r in rows] == ["x_layers=0", "x_layers=1", "x_layers=2"]
    assert rows[2].overrides == (("model.x_layers", "2"),) and rows[0].objectives is None
    result = CliRunner().invoke(app, ["ablate", "--models", "lxmert,text_only", "--drop-task", "mask_obj"])
    assert isinstance(result.exception, ConfigError) and "one thing at a time" in str(result.exception)


@pytest.mark.slow
def test_model_grid_runs_end_to_end_and_skips_finished_cells(small_world: Path, tmp_path: Path):
    out = tmp_path / "grid"
    args = ["ablate", "--models", "lxmert,text_only,vision_only", "--task", "gqa", "--seeds", "2",
            "--data", str(small_world), "--out", str(out), *QUICK, "--publish", str(tmp_path / "pub")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["compares"] == "models" and summary["title"].startswith("Model comparison: gqa")
    rows = {r["variant"]: r for r in summary["rows"]}
    assert list(rows) == ["lxmert", "text_only", "vision_only"] and rows["lxmert"]["reference"]
    records = {c["run"]: json.loads((out / c["run"] / "run.json").read_text()) for c in summary["cells"]}
    assert {r["model"] for r in records.values()} == {"lxmert", "text_only", "vision_only"}
    for name, row in rows.items():
        mine = [r for r in records.values() if r["model"] == name]
        assert row["params"] == mine[0]["params"] and row["train_examples_per_s"] > 0
        assert row["seeds"] == 2 and row["wall_seconds"] > 0
        if name != "lxmert":
            assert row["delta"] == pytest.approx(row["mean"] - rows["lxmert"]["mean"])
    assert set(summary["baselines"]) == {"prior", "text_only"}
    md = (out / "ablation.md").read_text()
    assert "| diff vs lxmert |" in md and "Blind baselines on testdev: answer prior" in md
    assert (out / "ablation.png").stat().st_size > 0 and (tmp_path / "pub.png").is_file()
    published = (tmp_path / "pub.md").read_bytes()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    again = json.loads((out / "ablation.json").read_text())
    assert all(c["skipped"] for c in again["cells"]) and again["rows"] == summary["rows"]
    assert (tmp_path / "pub.md").read_bytes() == published  # re-tabulating rewrites the same table


@pytest.mark.slow
def test_value_grid_trains_each_depth(small_world: Path, tmp_path: Path):
    out = tmp_path / "depth"
    args = ["ablate", "--vary", "model.x_layers=0,2", "--task", "gqa", "--seeds", "2",
            "--data", str(small_world), "--out", str(out), *QUICK]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["compares"] == "model.x_layers"
    assert [r["variant"] for r in summary["rows"]] == ["x_layers=0", "x_layers=2"]
    depths = {json.loads((out / c["run"] / "run.json").read_text())["config"]["model"]["x_layers"]
              for c in summary["cells"]}
    assert depths == {0, 2}
    assert summary["rows"][1]["params"] > summary["rows"][0]["params"]
    assert "--vary model.x_layers=0,2" in summary["command"]
