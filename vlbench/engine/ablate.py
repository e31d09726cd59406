"""``vlbench ablate``: a pre-training ablation expanded into runs, executed resumably, tabulated.

An ablation is a list of *variants* (a set of pre-training tasks, or no pre-training at
all). Each variant is pre-trained (``pretrain_seeds`` times) and fine-tuned on one task with
the same seeds; every run is a *cell* named by the content hash of its resolved config
(model, task, seed, config layers, data fingerprint and the hash of the pre-training cell it
starts from). Re-running the command skips finished cells, resumes interrupted ones from
their last checkpoint, and shares cells between variants whose configs coincide. The table
gives one row per variant: mean +- std over seeds, the difference to the full model with a
paired-t 95% interval and a Holm-adjusted p-value, and the number of seeds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from vlbench.data.source import DataSource, resolve_data
from vlbench.engine.session import resolve_config
from vlbench.errors import CheckpointError, ConfigError
from vlbench.registry import TASKS
from vlbench.results.records import write_json_atomic, write_text_atomic
from vlbench.results.stats import holm, t_interval

if TYPE_CHECKING:
    from vlbench.engine.launch import SlurmOptions

PRETRAIN_TASK = "pretrain"
CELL_FILE = "cell.json"


@dataclass(frozen=True)
class Variant:
    """A row of the ablation: pre-training tasks, or ``objectives=None`` for no pre-training."""

    label: str
    objectives: tuple[str, ...] | None
    visual_losses: tuple[str, ...] = ()

    @property
    def pretrained(self) -> bool:
        return self.objectives is not None

    @property
    def key(self) -> tuple:
        return (self.objectives, self.visual_losses if self.objectives and "mask_obj" in self.objectives else ())

    def describe(self) -> str:
        """``mask_lm, mask_obj(feat,label,attr), matched, qa`` or ``none``."""
        if self.objectives is None:
            return "none"
        short = {"obj_feat": "feat", "obj_label": "label", "obj_attr": "attr"}
        return ", ".join(f"{o}({','.join(short[v] for v in self.visual_losses)})" if o == "mask_obj" else o
                         for o in self.objectives)


def _variant(label: str, tasks: Sequence[str] | None = None, drop: Sequence[str] = ()) -> Variant:
    objectives, visual = TASKS.get(PRETRAIN_TASK).resolve_objectives(tasks, drop)
    return Variant(label, tuple(objectives), tuple(visual))


def expand(*, drop_tasks: Sequence[str] = (), only: Sequence[str] = (), grid: str | None = None,
           no_pretrain: bool = False) -> list[Variant]:
    """The rows of an ablation; the first is the reference (full pre-training).

    ``drop_tasks``: one row per task left out; ``only``: one row per comma-separated task
    list; ``grid``: every subset of the named tasks on top of the full set without them (the
    paper's Table 5 with ``feat,label``); ``no_pretrain``: nothing else. The no-pre-training
    row always comes last.
    """
    if not (drop_tasks or only or grid or no_pretrain):
        raise ConfigError("vlbench ablate: say what to compare: --drop-task NAME, --only TASKS, "
                          "--grid TASKS or --no-pretrain")
    full = _variant("full")
    rows: list[Variant] = []

    def add(v: Variant) -> None:
        if all(v.key != r.key for r in rows):
            rows.append(v)

    if grid:
        names = [n.strip() for n in grid.split(",") if n.strip()]
        if not names:
            raise ConfigError("--grid: name the tasks to vary, e.g. --grid feat,label")
        subsets = [s for k in range(len(names) + 1) for s in itertools.combinations(names, k)]
        grid_rows = []
        for subset in subsets:
            try:
                grid_rows.append(_variant("+".join(subset) or "none",
                                          drop=[n for n in names if n not in subset]))
            except ConfigError:
                continue  # nothing left to pre-train: that is the no-pre-training row
        ref = next((v for v in grid_rows if v.key == full.key), full)
        add(Variant(f"{ref.label} (full)" if ref is not full else "full", ref.objectives, ref.visual_losses))
        for v in grid_rows:
            add(v)
    else:
        add(full)
    for name in drop_tasks:
        add(_variant(f"- {name}", drop=[name]))
    for spec in only:
        add(_variant(f"only {spec}", tasks=[t for t in spec.split(",") if t.strip()]))
    rows.append(Variant("no pre-training", None))
    return rows


# -- cells ------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One run of the ablation: a pre-training or a fine-tuning, identified by a content hash."""

    kind: str  # "pretrain" or "finetune"
    task: str
    seed: int
    overrides: dict[str, str]
    config: dict[str, Any]
    key: str
    variants: list[str] = field(default_factory=list)
    init: Cell | None = None
    run_dir: Path | None = None
    skipped: bool = False

    @property
    def dirname(self) -> str:
        return f"{self.kind}-{self.key[:16]}"


def resolved_config(model: str, task: str, data: DataSource, overrides: dict[str, str]) -> dict[str, Any]:
    """The run config a ``train`` of (model, task) with ``overrides`` resolves to (as a dict)."""
    cfg = resolve_config(model, task, data, overrides)
    cfg.data.source = data.label
    return cfg.identity()


def cell_key(kind: str, model: str, task: str, seed: int, config: dict[str, Any], data: DataSource,
             init: Cell | None) -> str:
    """Content hash of everything that determines a cell's result."""
    payload = {"kind": kind, "model": model, "task": task, "seed": seed, "config": config,
               "data": data.manifest.get("fingerprint") or data.label,
               "init": init.key if init else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class AblationSpec:
    """What ``vlbench ablate`` runs."""

    variants: list[Variant]
    task: str = "gqa"
    model: str = "lxmert"
    seeds: int = 3
    pretrain_seeds: int = 1  # pre-training runs per variant; fine-tune seed s uses s % pretrain_seeds
    data_dir: str | None = None
    pretrain_overrides: dict[str, str] = field(default_factory=dict)
    finetune_overrides: dict[str, str] = field(default_factory=dict)
    split: str | None = None  # split whose primary metric is tabulated (default: the last eval split)


def plan(spec: AblationSpec, data: DataSource) -> tuple[list[Cell], dict[str, dict[int, Cell]]]:
    """All cells (pre-training first, each once) and, per variant and seed, its fine-tuning cell."""
    TASKS.get(PRETRAIN_TASK)  # the pre-training task plugin must be registered
    if spec.seeds < 1 or spec.pretrain_seeds < 1:
        raise ConfigError("--seeds and --pretrain-seeds must be at least 1")
    cells: dict[str, Cell] = {}
    table: dict[str, dict[int, Cell]] = {}

    def get(kind: str, task: str, seed: int, overrides: dict[str, str], init: Cell | None, label: str) -> Cell:
        config = resolved_config(spec.model, task, data, overrides)
        key = cell_key(kind, spec.model, task, seed, config, data, init)
        cell = cells.setdefault(key, Cell(kind, task, seed, overrides, config, key, init=init))
        if label not in cell.variants:
            cell.variants.append(label)
        return cell

    for v in spec.variants:
        pre: dict[int, Cell] = {}
        if v.pretrained:
            overrides = dict(spec.pretrain_overrides)
            overrides["task.objectives"] = ",".join(v.objectives or ())
            overrides["task.visual_losses"] = ",".join(v.visual_losses)
            for s in range(min(spec.pretrain_seeds, spec.seeds)):
                pre[s] = get("pretrain", PRETRAIN_TASK, s, overrides, None, v.label)
        table[v.label] = {
            s: get("finetune", spec.task, s, dict(spec.finetune_overrides),
                   pre[s % len(pre)] if pre else None, v.label)
            for s in range(spec.seeds)
        }
    ordered = sorted(cells.values(), key=lambda c: c.kind != "pretrain")
    return ordered, table


def run_cell(cell: Cell, cells_dir: Path, spec: AblationSpec, console: Console) -> Path:
    """Run (or skip, or resume) one cell; returns its run directory."""
    from vlbench.engine.run import resume, train

    cdir = cells_dir / cell.dirname
    done = _finished_run(cdir)
    if done is not None:
        cell.run_dir, cell.skipped = done, True
        console.print(f"[dim]skip {cell.dirname} ({', '.join(cell.variants)}, seed {cell.seed}): finished[/]")
        return done
    cdir.mkdir(parents=True, exist_ok=True)
    _write_cell(cdir, cell, status="running")
    run_dir = None
    for partial in sorted(p.parent for p in cdir.glob("*/run.json")):
        try:
            console.print(f"resume {cell.dirname} from {partial.name}")
            run_dir = resume(partial, console=console)
            break
        except CheckpointError:
            shutil.rmtree(partial)  # killed before its first checkpoint: start again
    if run_dir is None:
        console.print(f"run {cell.dirname}: {cell.kind} {cell.task} seed {cell.seed} "
                      f"({', '.join(cell.variants)})")
        init = cell.init.run_dir if cell.init else None
        run_dir = train(spec.model, cell.task, data_dir=spec.data_dir, seed=cell.seed, out=cdir,
                        overrides=cell.overrides, init=init, console=console)
    cell.run_dir = run_dir
    _write_cell(cdir, cell, status="finished")
    return run_dir


def _finished_run(cdir: Path) -> Path | None:
    try:
        meta = json.loads((cdir / CELL_FILE).read_text())
        run_dir = cdir / meta["run"]
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return run_dir if meta.get("status") == "finished" and record.get("status") == "finished" else None


def _write_cell(cdir: Path, cell: Cell, status: str) -> None:
    write_json_atomic(cdir / CELL_FILE, {
        "key": cell.key, "kind": cell.kind, "task": cell.task, "seed": cell.seed,
        "variants": cell.variants, "overrides": cell.overrides, "config": cell.config,
        "init": cell.init.dirname if cell.init else None,
        "run": cell.run_dir.name if cell.run_dir else None, "status": status,
    })


# -- the table ----------------------------------------------------------------------------------


def summarize(spec: AblationSpec, table: dict[str, dict[int, Cell]], command: str,
              wall_seconds: float) -> dict[str, Any]:
    """Rows of the ablation table (JSON-able) from the finished fine-tuning runs."""
    records = {label: {s: json.loads((c.run_dir / "run.json").read_text()) for s, c in cells.items()}
               for label, cells in table.items()}
    first = next(iter(next(iter(records.values())).values()))
    metric = first["primary_metric"]
    split = spec.split or first["eval_splits"][-1]
    values: dict[str, dict[int, float]] = {}
    for label, runs in records.items():
        try:
            values[label] = {s: float(r["metrics"][split][metric]) for s, r in runs.items()}
        except KeyError:
            raise ConfigError(f"split '{split}' has no '{metric}' in the fine-tuning runs; "
                              f"choose --split from {', '.join(first['eval_splits'])}") from None
    ref_label = spec.variants[0].label
    ref = values[ref_label]
    rows: list[dict[str, Any]] = []
    for v in spec.variants:
        vals = values[v.label]
        stats = t_interval(list(vals.values()))
        row: dict[str, Any] = {
            "variant": v.label, "pretraining": v.describe(), "seeds": len(vals),
            "mean": stats.mean, "std": stats.std, "values": {str(s): x for s, x in sorted(vals.items())},
            "reference": v.label == ref_label, "delta": None, "ci_low": None, "ci_high": None,
            "p": None, "p_holm": None,
        }
        if v.label != ref_label:
            common = sorted(set(vals) & set(ref))
            diffs = [vals[s] - ref[s] for s in common]
            d = t_interval(diffs)
            row.update(delta=d.mean, ci_low=d.ci_low, ci_high=d.ci_high, p=_paired_p(diffs))
        rows.append(row)
    compared = [r for r in rows if not r["reference"]]
    adjusted, _ = holm([math.nan if r["p"] is None else r["p"] for r in compared])
    for r, p in zip(compared, adjusted, strict=True):
        r["p_holm"] = None if math.isnan(p) else p
    synthetic = bool(first["data"]["synthetic"])
    train_cfg = first["config"]["train"]
    limit = train_cfg.get("train_limit", 0)
    pre_cells = {c.init.key: c.init for cells in table.values() for c in cells.values() if c.init}
    pre_epochs = sorted({c.config["train"]["epochs"] for c in pre_cells.values()})
    # Each run once: variants whose configs coincide share cells.
    run_records = {c.run_dir: records[label][s] for label, cells in table.items() for s, c in cells.items()}
    run_records.update({c.run_dir: json.loads((c.run_dir / "run.json").read_text())
                        for c in pre_cells.values() if c.run_dir is not None})
    compute = sum(float(r.get("wall_seconds") or 0.0) for r in run_records.values())
    title = (f"Pre-training ablation: {spec.task} {split} {metric}, fine-tuned on "
             f"{limit if limit else 'all'} training examples, {spec.seeds} seed(s)"
             + (" -- SYNTHETIC data" if synthetic else ""))
    baseline = first.get("baselines", {}).get("prior", {}).get(split, {}).get(metric)
    return {
        "title": title, "command": command, "task": spec.task, "split": split, "metric": metric,
        "synthetic": synthetic, "data_source": first["data"]["source"],
        "data_fingerprint": first["data"]["fingerprint"], "seeds": spec.seeds,
        "pretrain_seeds": min(spec.pretrain_seeds, spec.seeds), "train_limit": limit,
        "prior_baseline": baseline, "rows": rows, "wall_seconds": round(wall_seconds, 1),
        "setting": {"pretrain_epochs": pre_epochs, "finetune_epochs": train_cfg.get("epochs"),
                    "finetune_lr": train_cfg.get("lr"), "finetune_batch_size": train_cfg.get("batch_size"),
                    "model_preset": first["config"].get("model", {}).get("preset"),
                    "compute_seconds": round(compute, 1)},
    }


def _paired_p(diffs: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value of mean(diffs) = 0 (None with < 2 seeds or no spread)."""
    from scipy.stats import ttest_1samp

    if len(diffs) < 2 or max(diffs) == min(diffs):
        return None
    return float(ttest_1samp(diffs, 0.0).pvalue)


def _fmt(x: float | None, spec: str = ".2f", signed: bool = False) -> str:
    if x is None:
        return "-"
    return format(x, ("+" if signed else "") + spec)


def _cells(row: dict[str, Any]) -> list[str]:
    mean_std = f"{row['mean']:.2f} +- {row['std']:.2f}" if row["std"] is not None else f"{row['mean']:.2f}"
    ci = (f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]" if row["ci_low"] is not None else "-")
    return [row["variant"], row["pretraining"], str(row["seeds"]), mean_std,
            "(reference)" if row["reference"] else _fmt(row["delta"], signed=True),
            "" if row["reference"] else ci,
            "" if row["reference"] else _fmt(row["p_holm"], ".3f")]


HEADER = ["variant", "pre-training tasks", "seeds", "{metric} (mean +- std)", "diff vs full",
          "95% CI (paired t)", "p (Holm)"]


def _header(summary: dict[str, Any]) -> list[str]:
    return [h.format(metric=summary["metric"]) for h in HEADER]


def render_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# {summary['title']}", "", "| " + " | ".join(_header(summary)) + " |",
             "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in summary["rows"]]
    lines += [""]
    if summary.get("prior_baseline") is not None:
        lines.append(f"Answer-prior baseline on {summary['split']}: {summary['prior_baseline']:.2f}.")
    st = summary.get("setting", {})
    if st:
        lines.append(
            f"Setting: model preset {st.get('model_preset')}; pre-training {', '.join(map(str, st['pretrain_epochs']))} "
            f"epoch(s); fine-tuning on the first {summary['train_limit'] or 'all'} training examples for "
            f"{st.get('finetune_epochs')} epochs at lr {st.get('finetune_lr')} (batch {st.get('finetune_batch_size')}), "
            f"checkpoint chosen on the first eval split. Compute: {st['compute_seconds'] / 60:.0f} min of runs.")
    lines += [
        f"Fine-tuning seeds 0..{summary['seeds'] - 1}; {summary['pretrain_seeds']} pre-training run(s) per "
        "variant. Differences are paired by seed; p-values are paired t-tests, Holm-adjusted over the rows.",
        f"Data: {summary['data_source']} ({summary['data_fingerprint'][:19]}...).",
        "", f"Regenerate: `{summary['command']}`", ""]
    return "\n".join(lines)


def render_csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "pretraining", "seeds", "mean", "std", "delta", "ci_low", "ci_high", "p", "p_holm"])
    for r in summary["rows"]:
        w.writerow([r["variant"], r["pretraining"], r["seeds"]] +
                   ["" if r[k] is None else f"{r[k]:.4f}" for k in ("mean", "std", "delta", "ci_low",
                                                                      "ci_high", "p", "p_holm")])
    return buf.getvalue()


def render_rich(summary: dict[str, Any]) -> Table:
    table = Table(title=summary["title"])
    for i, h in enumerate(_header(summary)):
        table.add_column(h, justify="right" if i >= 2 else "left")
    for r in summary["rows"]:
        table.add_row(*_cells(r), style="bold" if r["reference"] else None)
    return table


def write_outputs(summary: dict[str, Any], out: Path, stem: str = "ablation") -> list[Path]:
    """``{stem}.md``, ``{stem}.csv`` and ``{stem}.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.json"]
    write_text_atomic(paths[0], render_markdown(summary))
    write_text_atomic(paths[1], render_csv(summary))
    write_json_atomic(paths[2], summary)
    return paths


def run_ablation(spec: AblationSpec, out: str | Path, *, command: str = "vlbench ablate",
                 publish: str | Path | None = None, console: Console | None = None,
                 launcher: str = "local", slurm: SlurmOptions | None = None, collect: bool = False) -> dict[str, Any]:
    """Expand, run (skipping finished cells) and tabulate; writes the table into ``out``.

    ``publish`` (a path stem such as ``leaderboards/ablation_gqa``) also writes the table as
    ``STEM.md``, ``STEM.csv`` and ``STEM.json``, without the per-run paths and this
    invocation's wall time, so that re-tabulating finished cells rewrites identical files.

    ``launcher``: ``local`` runs the cells here, one after the other; ``submitit`` submits one
    job per cell (SLURM when available) and ``submitit-local`` uses submitit's local executor;
    both wait for the jobs (``slurm``: a :class:`vlbench.engine.launch.SlurmOptions`).
    ``collect`` runs nothing: it tabulates cells that have all finished, and refuses otherwise.
    """
    console = console or Console(stderr=True)
    out = Path(out)
    data = resolve_data(spec.data_dir, say=console.print)
    cells, table = plan(spec, data)
    n_pre = sum(c.kind == "pretrain" for c in cells)
    console.print(f"Ablation: {len(spec.variants)} variants, {n_pre} pre-training and "
                  f"{len(cells) - n_pre} fine-tuning runs under {out / 'cells'}")
    start = time.perf_counter()
    if collect:
        _collect(cells, out / "cells")
    elif launcher == "local":
        for cell in cells:
            run_cell(cell, out / "cells", spec, console)
    else:
        from vlbench.engine.launch import LAUNCHERS, SlurmOptions, make_executor, submit_cells

        if launcher not in LAUNCHERS:
            raise ConfigError(f"--launcher {launcher}: choose one of {', '.join(LAUNCHERS)}")
        options = slurm or SlurmOptions()
        executor = make_executor(options.folder or out / "slurm", LAUNCHERS[launcher], options)
        submit_cells(cells, out / "cells", spec, executor, console)
    summary = summarize(spec, table, command, time.perf_counter() - start)
    summary["cells"] = [{"cell": c.dirname, "kind": c.kind, "seed": c.seed, "variants": c.variants,
                         "skipped": c.skipped, "run": str(c.run_dir.relative_to(out)) if c.run_dir else None}
                        for c in cells]
    paths = write_outputs(summary, out)
    if publish is not None:
        stem = Path(publish)
        public = {k: v for k, v in summary.items() if k not in ("cells", "wall_seconds")}
        paths += write_outputs(public, stem.parent, stem.name)
    console.print(render_rich(summary))
    skipped = sum(c.skipped for c in cells)
    console.print(f"{len(cells) - skipped} run(s) executed, {skipped} skipped (finished); "
                  f"{summary['wall_seconds']:.0f} s; table in {', '.join(str(p) for p in paths)}")
    return summary


def _collect(cells: list[Cell], cells_dir: Path) -> None:
    """Point every cell at its finished run; refuse, naming them, if any has not finished."""
    unfinished = []
    for cell in cells:
        done = _finished_run(cells_dir / cell.dirname)
        if done is None:
            unfinished.append(cell.dirname)
        cell.run_dir, cell.skipped = done, True
    if unfinished:
        raise ConfigError(f"--collect: {len(unfinished)} of {len(cells)} cell(s) not finished under {cells_dir}: "
                          f"{', '.join(unfinished)}; wait for their jobs or run the grid again")
