"""Plots: learning curves, grid bar chart, accuracy vs compute with the Pareto front."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vlbench.errors import ConfigError, VLBenchError
from vlbench.results import plots
from vlbench.results.leaderboard import build_leaderboard
from vlbench.results.records import find_runs
from vlbench.results.testing import write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(steps: int = 50) -> list[dict]:
    rows: list[dict] = []
    for step in range(0, steps * 10, 10):
        rows.append({"step": step, "epoch": 0, "loss": 3.0 / (1 + step / 100), "lr": 1e-4,
                     "losses": {"mlm": 2.0 / (1 + step / 100), "qa": 1.0 / (1 + step / 100)},
                     "examples_per_s": 500.0})
        if step % 100 == 0:
            rows.append({"step": step, "epoch": 0, "split": "val",
                         "metrics": {"accuracy": 30 + step / 20}})
    return rows


@pytest.fixture()
def grid_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    specs = [("full", 0.8, 2_000_000), ("no-vision", 0.4, 2_000_000), ("small", 0.6, 400_000),
             ("tiny", 0.3, 50_000)]
    for variant, acc, params in specs:
        for s in range(3):
            write_run(tmp_path, f"{variant}-s{s}", variant=variant, seed=s, params=params,
                      wall_seconds=params / 1e4, history=_history(),
                      scores={"testdev": (rng.random(300) < acc).astype(float)})
    return tmp_path


def test_pareto_front() -> None:
    xs = [1, 2, 3, 4, 5, 3]
    ys = [50, 49, 60, 55, 70, 58]
    # (2, 49) is beaten by (1, 50); (4, 55) and (3, 58) by (3, 60).
    assert plots.pareto_front(xs, ys) == [0, 2, 4]
    assert plots.pareto_front([1, 1], [5, 7]) == [1]
    assert plots.pareto_front([], []) == []


def test_missing_matplotlib_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(VLBenchError, match=r"pip install 'vlbench\[plots\]'"):
        plots.new_figure()


def test_learning_curves_png_and_svg(grid_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs, _ = find_runs([grid_root / "full-s0", grid_root / "small-s0"])
    fig = plots.learning_curves(runs)
    loss_ax, metric_ax = fig.axes
    assert len(loss_ax.lines) == 6  # total loss + two named losses, per run
    steps, values = metric_ax.lines[0].get_data()
    assert list(steps) == [0, 100, 200, 300, 400] and values[-1] == pytest.approx(50.0)
    png = plots.save_figure(fig, tmp_path / "curves.png")
    assert png.read_bytes().startswith(PNG_MAGIC)
    svg = plots.save_figure(fig, tmp_path / "curves.svg")
    assert ET.parse(svg).getroot().tag.endswith("svg")
    # no date, no random ids: the same runs drawn twice give the same bytes
    drawn = [plots.save_figure(plots.learning_curves(runs), tmp_path / f"{i}.svg").read_bytes() for i in (1, 2)]
    assert drawn[0] == drawn[1]
    with pytest.raises(ConfigError, match=".png or .svg"):
        plots.save_figure(fig, tmp_path / "curves.pdf")


def test_grid_bars(grid_root: Path) -> None:
    pytest.importorskip("matplotlib")
    runs, _ = find_runs([grid_root])
    board = build_leaderboard(runs, reference=["variant=full"])
    section = board.sections[0]
    fig = plots.grid_bars(section)
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([r.value("accuracy")
                                                           for r in section.rows])
    from matplotlib.colors import to_rgba

    colours = {r.variant: b.get_facecolor() for r, b in zip(section.rows, bars, strict=True)}
    assert colours["full"] == to_rgba(plots.REFERENCE_COLOR)
    assert section.rows[-1].variant == "tiny" and section.rows[-1].versus.significant
    for row in section.rows[1:]:
        expected = plots.SIGNIFICANT_COLOR if row.versus.significant else plots.BAR_COLOR
        assert colours[row.variant] == to_rgba(expected)


def test_sweep_curve_plots_the_metric_against_the_setting(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    accuracy = {0: [40.0, 41.0, 40.5], 1: [55.0, 56.0, 57.0], 2: [58.0, 57.5, 59.0]}
    for depth, values in accuracy.items():
        for s, acc in enumerate(values):
            write_run(tmp_path, f"x{depth}-s{s}", seed=s, config={"model": {"x_layers": depth}},
                      metrics={"testdev": {"accuracy": acc}})
    runs, _ = find_runs([tmp_path])
    board = build_leaderboard(runs, group_by=["config.model.x_layers"],
                              reference=["config.model.x_layers=1"])
    fig = plots.sweep_curve(board.sections[0])
    xs, ys = fig.axes[0].lines[0].get_data()
    assert list(xs) == [0.0, 1.0, 2.0]
    assert list(ys) == pytest.approx([sum(v) / 3 for v in accuracy.values()])
    assert fig.axes[0].get_xlabel() == "x_layers"
    with pytest.raises(ConfigError, match="group the runs by exactly one key"):
        plots.sweep_curve(build_leaderboard(runs).sections[0])


def test_accuracy_vs_compute_draws_the_front(grid_root: Path) -> None:
    pytest.importorskip("matplotlib")
    runs, _ = find_runs([grid_root])
    section = build_leaderboard(runs).sections[0]
    fig = plots.accuracy_vs_compute(section, "params")
    front = next(line for line in fig.axes[0].lines if line.get_label() == "Pareto front")
    xs, ys = front.get_data()
    by_variant = {r.variant: r for r in section.rows}
    # no-vision costs as much as full and scores less: it is off the front.
    assert list(xs) == [50_000, 400_000, 2_000_000]
    assert list(ys) == pytest.approx([by_variant[v].value("accuracy")
                                      for v in ("tiny", "small", "full")])
    assert fig.axes[0].get_xscale() == "log"
    fig = plots.accuracy_vs_compute(section, "time")
    assert "time" in fig.axes[0].get_xlabel()
    with pytest.raises(ConfigError):
        plots.accuracy_vs_compute(section, "flops")


def test_cli_plot(grid_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from vlbench.cli.results import plot as plot_command

    app = typer.Typer()
    app.command()(plot_command)
    runner = CliRunner()
    for kind, name in (("curves", "c.png"), ("grid", "g.svg"), ("compute", "p.png")):
        target = grid_root / "full-s0" if kind == "curves" else grid_root
        result = runner.invoke(app, [kind, str(target), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).stat().st_size > 1000
    result = runner.invoke(app, ["pie", str(grid_root)])
    assert result.exit_code == 2 and "use one of curves, grid, sweep, compute" in result.stderr
    write_run(grid_root, "vqa", task="vqa", metrics={"minival": {"accuracy": 60.0}})
    result = runner.invoke(app, ["grid", str(grid_root), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "--task and --split" in result.stderr
