"""`vlbench ablate`: expansion into variants and cells, content-hash skipping, the table."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vlbench.cli.pretrain import ablate
from vlbench.data.source import resolve_data
from vlbench.engine.ablate import (
    AblationSpec,
    Cell,
    Variant,
    expand,
    plan,
    render_csv,
    render_markdown,
    summarize,
)
from vlbench.errors import ConfigError
from vlbench.results.stats import t_interval

app = typer.Typer()
app.command("ablate")(ablate)
app.command("noop")(lambda: None)  # a second command keeps `ablate` a subcommand


def labels(variants: list[Variant]) -> list[str]:
    return [v.label for v in variants]


def test_drop_task_compares_full_dropped_and_none():
    rows = expand(drop_tasks=["mask_obj"])
    assert labels(rows) == ["full", "- mask_obj", "no pre-training"]
    assert rows[0].objectives == ("mask_lm", "mask_obj", "matched", "qa")
    assert rows[1].objectives == ("mask_lm", "matched", "qa") and rows[1].visual_losses == ()
    assert rows[2].objectives is None and not rows[2].pretrained


def test_only_no_pretrain_and_errors():
    assert labels(expand(only=["mask_lm,matched"])) == ["full", "only mask_lm,matched", "no pre-training"]
    assert labels(expand(no_pretrain=True)) == ["full", "no pre-training"]
    with pytest.raises(ConfigError, match="say what to compare"):
        expand()
    with pytest.raises(ConfigError, match="not among"):
        expand(drop_tasks=["mask_objj"])


def test_grid_is_the_papers_table_5():
    rows = expand(grid="feat,label")
    assert labels(rows) == ["feat+label (full)", "none", "feat", "label", "no pre-training"]
    by = {v.label: v for v in rows}
    assert by["none"].objectives == ("mask_lm", "matched", "qa")
    assert by["feat"].visual_losses == ("obj_feat",)
    assert by["label"].visual_losses == ("obj_label", "obj_attr")
    assert by["feat+label (full)"].key == expand(no_pretrain=True)[0].key


def test_plan_shares_cells_by_content_hash(small_world: Path):
    data = resolve_data(str(small_world), quiet=True)
    spec = AblationSpec(variants=expand(drop_tasks=["mask_obj"]), seeds=3, data_dir=str(small_world),
                        finetune_overrides={"train.train_limit": "100"})
    cells, table = plan(spec, data)
    assert [c.kind for c in cells].count("pretrain") == 2 and len(cells) == 2 + 9
    assert len({c.key for c in cells}) == len(cells)
    assert cells[0].kind == "pretrain" and cells[-1].kind == "finetune"
    assert all(c.init is None for c in table["no pre-training"].values())
    assert len({c.init.key for c in table["full"].values()}) == 1  # one pre-training, three fine-tunes
    again, _ = plan(spec, data)
    assert [c.key for c in again] == [c.key for c in cells]  # the hash is a pure function of the config
    more = AblationSpec(**{**spec.__dict__, "finetune_overrides": {"train.train_limit": "200"}})
    changed, _ = plan(more, data)
    pre = {c.key for c in cells if c.kind == "pretrain"}
    assert {c.key for c in changed if c.kind == "pretrain"} == pre
    assert not {c.key for c in changed if c.kind == "finetune"} & {c.key for c in cells}
    per_seed, _ = plan(AblationSpec(**{**spec.__dict__, "pretrain_seeds": 3}), data)
    assert [c.kind for c in per_seed].count("pretrain") == 6
    grid, gtable = plan(AblationSpec(variants=expand(grid="feat,label"), seeds=1, data_dir=str(small_world)), data)
    assert [c.kind for c in grid].count("pretrain") == 4  # feat+label is the full model: one cell
    assert gtable["feat+label (full)"][0].variants == ["feat+label (full)"]


# -- the table ------------------------------------------------------------------------------------

VALUES = {"full": [50.0, 52.0, 54.0], "- mask_obj": [45.0, 46.0, 50.0], "no pre-training": [39.0, 41.0, 43.0]}


def _fake_runs(tmp_path: Path) -> tuple[AblationSpec, dict[str, dict[int, Cell]]]:
    variants = expand(drop_tasks=["mask_obj"])
    table: dict[str, dict[int, Cell]] = {}
    for v in variants:
        table[v.label] = {}
        for seed, value in enumerate(VALUES[v.label]):
            run = tmp_path / f"{v.label}-{seed}"
            run.mkdir()
            (run / "run.json").write_text(json.dumps({
                "status": "finished", "primary_metric": "accuracy", "eval_splits": ["val", "testdev"],
                "metrics": {"val": {"accuracy": value + 1}, "testdev": {"accuracy": value}},
                "data": {"synthetic": True, "source": "synthetic", "fingerprint": "sha256:" + "0" * 64},
                "config": {"train": {"train_limit": 1000}},
                "baselines": {"prior": {"testdev": {"accuracy": 31.0}}}}))
            table[v.label][seed] = Cell("finetune", "lxmert", "gqa", seed, {}, {}, f"k{seed}", run_dir=run)
    return AblationSpec(variants=variants, seeds=3), table


def test_summary_rows_mean_std_delta_ci(tmp_path: Path):
    spec, table = _fake_runs(tmp_path)
    summary = summarize(spec, table, "vlbench ablate --drop-task mask_obj --task gqa --seeds 3", 12.0)
    assert summary["split"] == "testdev" and summary["metric"] == "accuracy" and summary["synthetic"]
    rows = {r["variant"]: r for r in summary["rows"]}
    assert rows["full"]["reference"] and rows["full"]["delta"] is None
    assert rows["full"]["mean"] == pytest.approx(52.0) and rows["full"]["std"] == pytest.approx(2.0)
    drop = rows["- mask_obj"]
    diffs = [a - b for a, b in zip(VALUES["- mask_obj"], VALUES["full"], strict=True)]
    ci = t_interval(diffs)
    assert drop["delta"] == pytest.approx(-5.0) and drop["seeds"] == 3
    assert (drop["ci_low"], drop["ci_high"]) == pytest.approx((ci.ci_low, ci.ci_high))
    assert drop["ci_high"] < 0 and 0 < drop["p"] < 0.05
    none = rows["no pre-training"]
    assert none["delta"] == pytest.approx(-11.0) and none["p"] is None  # no spread in the differences
    assert drop["p_holm"] == pytest.approx(drop["p"])  # the only testable row of its family
    assert summary["prior_baseline"] == 31.0


def test_table_renders_markdown_csv_with_the_command(tmp_path: Path):
    spec, table = _fake_runs(tmp_path)
    summary = summarize(spec, table, "vlbench ablate --drop-task mask_obj", 1.0)
    md = render_markdown(summary)
    assert md.splitlines()[0].startswith("# Pre-training ablation: gqa testdev accuracy")
    assert "SYNTHETIC" in md.splitlines()[0]
    assert "| full | mask_lm, mask_obj(feat,label,attr), matched, qa | 3 | 52.00 +- 2.00 | (reference) |" in md
    assert "| - mask_obj | mask_lm, matched, qa | 3 | 47.00 +- 2.65 | -5.00 |" in md
    assert "Regenerate: `vlbench ablate --drop-task mask_obj`" in md
    rows = list(csv.DictReader(io.StringIO(render_csv(summary))))
    assert [r["variant"] for r in rows] == ["full", "- mask_obj", "no pre-training"]
    assert float(rows[2]["delta"]) == pytest.approx(-11.0) and rows[0]["delta"] == ""
    assert math.isclose(float(rows[1]["std"]), 2.6458, abs_tol=1e-3)


@pytest.mark.slow
def test_ablate_runs_end_to_end_and_skips_finished_cells(small_world: Path, tmp_path: Path):
    out = tmp_path / "abl"
    args = ["ablate", "--drop-task", "mask_obj", "--task", "gqa", "--seeds", "2", "--data", str(small_world),
            "--out", str(out), "--train-limit", "64", "--pretrain-epochs", "1",
            "--set-pretrain", "train.train_limit=128", "--set-pretrain", "train.eval_limit=32",
            "--set-finetune", "train.epochs=1", "--set-finetune", "train.eval_limit=32"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == ["full", "- mask_obj", "no pre-training"]
    assert all(r["seeds"] == 2 for r in summary["rows"])
    assert len(summary["cells"]) == 2 + 6 and not any(c["skipped"] for c in summary["cells"])
    assert (out / "ablation.md").read_text().count("\n| ") == 4  # header + three rows
    assert "--drop-task mask_obj" in summary["command"]
    assert summary["setting"]["pretrain_epochs"] == [1] and summary["setting"]["finetune_epochs"] == 1
    assert summary["setting"]["compute_seconds"] > 0
    runs = sorted(p.parent for p in out.glob("cells/*/*/run.json"))
    for c in summary["cells"]:
        if c["kind"] == "finetune" and "full" in c["variants"]:
            record = json.loads((out / c["run"] / "run.json").read_text())
            assert record["init"]["objectives"] == ["mask_lm", "mask_obj", "matched", "qa"]
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    again = json.loads((out / "ablation.json").read_text())
    assert all(c["skipped"] for c in again["cells"])
    assert sorted(p.parent for p in out.glob("cells/*/*/run.json")) == runs
    assert again["rows"] == summary["rows"]

    # A committed grid keeps records, not weights. Without its checkpoints the full variant's
    # pre-training still counts as finished while nothing new needs it ...
    full_pre = next(c for c in summary["cells"] if c["kind"] == "pretrain" and "full" in c["variants"])
    shutil.rmtree(out / full_pre["run"] / "checkpoints")
    third = CliRunner().invoke(app, args)
    assert third.exit_code == 0, third.output
    assert all(c["skipped"] for c in json.loads((out / "ablation.json").read_text())["cells"])
    # ... and runs again, with the fine-tuning it had started, when a new seed needs it.
    more = CliRunner().invoke(app, [*args[:6], "3", *args[7:]])
    assert more.exit_code == 0, more.output
    cells = {c["cell"]: c for c in json.loads((out / "ablation.json").read_text())["cells"]}
    rerun = {c["cell"] for c in cells.values() if not c["skipped"]}
    started_by_full = {c["cell"] for c in summary["cells"] if c["kind"] == "finetune" and "full" in c["variants"]}
    new_seed = {c["cell"] for c in cells.values() if c["seed"] == 2 and c["kind"] == "finetune"}
    assert rerun == {full_pre["cell"]} | started_by_full | new_seed
    assert (out / cells[full_pre["cell"]]["run"] / "checkpoints" / "best" / "model.safetensors").is_file()
    assert not (out / full_pre["run"]).exists()  # the record it replaced


def test_paired_p_is_the_paired_t_test():
    from vlbench.engine.ablate import _paired_p

    # diffs 1..5: t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426 on 4 df, two-sided p = 0.01324
    assert _paired_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(0.013236, abs=1e-6)
    assert _paired_p([1.0]) is None and _paired_p([2.0, 2.0]) is None
