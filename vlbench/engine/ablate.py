"""``vlbench ablate``: a grid of variants expanded into runs, executed resumably, tabulated.

A grid is a list of *variants*, the rows of its table: sets of pre-training tasks (or no
pre-training at all) of one model, or models compared under one recipe (``--models``), or
values of one config key (``--vary model.x_layers=0,1,2``). Each variant is pre-trained
(``pretrain_seeds`` times) when it has pre-training tasks and fine-tuned on one task with the
same seeds; every run is a *cell* named by the content hash of its resolved config (model,
task, seed, config layers, data fingerprint and the hash of the pre-training cell it starts
from). Re-running the command skips finished cells, resumes interrupted ones from their last
checkpoint, and shares cells between variants whose configs coincide; a finished pre-training
cell whose checkpoint is gone (a committed grid keeps records, not weights) runs again when new
fine-tuning cells need it, with the fine-tuning cells it had started. The table gives one row
per variant: mean +- std over seeds, parameters, training speed and wall time, the difference
to the first row (the reference) paired by seed with its t interval and a Holm-adjusted
p-value, beside the blind baselines stored with the runs (answer prior, text-only classifier).
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
from vlbench.engine.backbone import model_entry
from vlbench.engine.session import planned_read, resolve_config
from vlbench.errors import CheckpointError, ConfigError, VLBenchError
from vlbench.registry import TASKS
from vlbench.results.leaderboard import mean_or_none as mean
from vlbench.results.records import write_json_atomic, write_text_atomic
from vlbench.results.stats import holm, t_interval

if TYPE_CHECKING:
    from vlbench.engine.launch import SlurmOptions

PRETRAIN_TASK = "pretrain"
CELL_FILE = "cell.json"


@dataclass(frozen=True)
class Variant:
    """A row of the grid: pre-training tasks (``objectives=None``: no pre-training), the model
    (None: the grid's ``--model``) and config values of this row (pre-training and fine-tuning).
    ``left_out`` names objectives the model cannot train, with the family's reason."""

    label: str
    objectives: tuple[str, ...] | None
    visual_losses: tuple[str, ...] = ()
    model: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    left_out: tuple[tuple[str, str], ...] = ()

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


def expand_models(models: Sequence[str], pretrain: bool = False) -> list[Variant]:
    """One row per model (the first is the reference), each fine-tuned from scratch or, with
    ``pretrain``, after pre-training on every objective its family can train (the others are
    left out and said in the table, e.g. matching for late fusion)."""
    from vlbench.engine.backbone import model_entry

    names = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if len(names) < 2:
        raise ConfigError("--models: name two or more registered models, e.g. "
                          "--models lxmert,visualbert,late_fusion,text_only")
    rows = []
    for name in names:
        entry = model_entry(name)  # one-line error with close matches for an unknown name
        if not pretrain:
            rows.append(Variant(name, None, model=name))
            continue
        objectives, visual, left_out = TASKS.get(PRETRAIN_TASK).applicable_objectives(entry.spec)
        if not objectives:
            raise ConfigError(f"--pretrain: {name} can train none of the pre-training objectives "
                              f"({'; '.join(f'{o}: {why}' for o, why in left_out)})")
        rows.append(Variant(name, tuple(objectives), tuple(visual), model=name,
                            left_out=tuple(left_out)))
    return rows


def expand_values(key: str, values: Sequence[str], pretrain: bool = False) -> list[Variant]:
    """One row per value of config ``key`` (``model.x_layers``: 0, 1, 2 ...); the first value
    is the reference. ``pretrain``: each row pre-trains on every objective first."""
    values = [v.strip() for v in values if v.strip()]
    if "." not in key or len(values) < 2:
        raise ConfigError(f"--vary {key}={','.join(values)}: give a config key and two or more "
                          "values, e.g. --vary model.x_layers=0,1,2")
    full = _variant("full") if pretrain else None
    return [Variant(f"{key.split('.', 1)[1]}={v}", full.objectives if full else None,
                    full.visual_losses if full else (), overrides=((key, v),)) for v in values]


# -- cells ------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One run of the ablation: a pre-training or a fine-tuning, identified by a content hash."""

    kind: str  # "pretrain" or "finetune"
    model: str
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


def resolved_config(model: str, task: str, data: DataSource, overrides: dict[str, str]
                    ) -> tuple[dict[str, Any], dict[str, str]]:
    """The run config a ``train`` of (model, task) with ``overrides`` resolves to (as a dict),
    and the fingerprints of what it reads beyond the data directory (``session.planned_read``)."""
    cfg = resolve_config(model, task, data, overrides)
    cfg.data.source = data.label
    return cfg.identity(), planned_read(model_entry(model), TASKS.get(task)(cfg.task, data), cfg,
                                        task)


def cell_key(kind: str, model: str, task: str, seed: int, config: dict[str, Any], data: DataSource,
             init: Cell | None, read: dict[str, str] | None = None) -> str:
    """Content hash of everything that determines a cell's result."""
    payload = {"kind": kind, "model": model, "task": task, "seed": seed, "config": config,
               "data": data.manifest.get("fingerprint") or data.label,
               "init": init.key if init else None, **({"read": read} if read else {})}
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
    resolved: dict[tuple, tuple[dict[str, Any], dict[str, str]]] = {}  # the same for every seed

    def get(kind: str, model: str, task: str, seed: int, overrides: dict[str, str], init: Cell | None,
            label: str) -> Cell:
        which = (model, task, tuple(sorted(overrides.items())))
        if which not in resolved:
            resolved[which] = resolved_config(model, task, data, overrides)
        config, read = resolved[which]
        key = cell_key(kind, model, task, seed, config, data, init, read)
        cell = cells.setdefault(key, Cell(kind, model, task, seed, overrides, config, key, init=init))
        if label not in cell.variants:
            cell.variants.append(label)
        return cell

    for v in spec.variants:
        model = v.model or spec.model
        pre: dict[int, Cell] = {}
        if v.pretrained:
            overrides = {**spec.pretrain_overrides, **dict(v.overrides)}
            overrides["task.objectives"] = ",".join(v.objectives or ())
            overrides["task.visual_losses"] = ",".join(v.visual_losses)
            for s in range(min(spec.pretrain_seeds, spec.seeds)):
                pre[s] = get("pretrain", model, PRETRAIN_TASK, s, overrides, None, v.label)
        table[v.label] = {
            s: get("finetune", model, spec.task, s, {**spec.finetune_overrides, **dict(v.overrides)},
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
        run_dir = train(cell.model, cell.task, data_dir=spec.data_dir, seed=cell.seed, out=cdir,
                        overrides=cell.overrides, init=init, console=console)
    cell.run_dir = run_dir
    _write_cell(cdir, cell, status="finished")
    return run_dir


def rerun_lost_pretraining(cells: list[Cell], cells_dir: Path, console: Console) -> None:
    """Make a finished pre-training cell whose weights are gone (checkpoints are not part of
    a committed record) run again when an unfinished fine-tuning cell needs them, and with it
    every finished fine-tuning cell it started: their results must come from the pre-training
    run the grid records, and a new machine need not repeat the old weights bit for bit."""
    done = {c.key: _finished_run(cells_dir / c.dirname) for c in cells}
    for pre in {c.init.key: c.init for c in cells if c.init is not None and done[c.key] is None}.values():
        run = done[pre.key]
        if run is None or (run / "checkpoints" / "best" / "model.safetensors").is_file():
            continue
        started = [c for c in cells if c.init is pre and done[c.key] is not None]
        console.print(f"{pre.dirname}: its weights are gone and new fine-tuning needs them; running it "
                      f"again, and the {len(started)} fine-tuning run(s) it started")
        for cell in (pre, *started):
            shutil.rmtree(done[cell.key])


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
        "key": cell.key, "kind": cell.kind, "model": cell.model, "task": cell.task, "seed": cell.seed,
        "variants": cell.variants, "overrides": cell.overrides, "config": cell.config,
        "init": cell.init.dirname if cell.init else None,
        "run": cell.run_dir.name if cell.run_dir else None, "status": status,
    })


# -- the table ----------------------------------------------------------------------------------


def _kind(spec: AblationSpec) -> str:
    """What the grid compares: "models", a varied config key, or "pre-training"."""
    if any(v.model for v in spec.variants):
        return "models"
    keys = {k for v in spec.variants for k, _ in v.overrides}
    return next(iter(keys)) if len(keys) == 1 else "pre-training"


def _row_costs(runs: dict[int, dict[str, Any]]) -> dict[str, float | None]:
    """Parameters, training examples/s and wall seconds of a row (means over its seeds)."""
    return {"params": mean([r.get("params") for r in runs.values()]),
            "train_examples_per_s": mean([(r.get("throughput") or {}).get("train_examples_per_s")
                                          for r in runs.values()]),
            "wall_seconds": mean([r.get("wall_seconds") for r in runs.values()])}


def summarize(spec: AblationSpec, table: dict[str, dict[int, Cell]], command: str,
              wall_seconds: float) -> dict[str, Any]:
    """Rows of the grid's table (JSON-able) from the finished fine-tuning runs."""
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
            "variant": v.label, "model": v.model or spec.model, "pretraining": v.describe(),
            "left_out": {o: why for o, why in v.left_out}, "seeds": len(vals),
            "mean": stats.mean, "std": stats.std, "values": {str(s): x for s, x in sorted(vals.items())},
            **_row_costs(records[v.label]),
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
    kind = _kind(spec)
    what = {"models": "Model comparison", "pre-training": "Pre-training ablation"}.get(kind, f"{kind} sweep")
    title = (f"{what}: {spec.task} {split} {metric}, fine-tuned on "
             f"{limit if limit else 'all'} training examples, {spec.seeds} seed(s)"
             + (" -- SYNTHETIC data" if synthetic else ""))
    stored = first.get("baselines", {})
    baselines = {name: stored[name][split][metric] for name in ("prior", "text_only")
                 if metric in (stored.get(name) or {}).get(split, {})}
    return {
        "title": title, "command": command, "task": spec.task, "split": split, "metric": metric,
        "compares": kind, "synthetic": synthetic, "data_source": first["data"]["source"],
        "data_fingerprint": first["data"]["fingerprint"], "seeds": spec.seeds,
        "pretrain_seeds": min(spec.pretrain_seeds, spec.seeds), "train_limit": limit,
        "prior_baseline": baselines.get("prior"), "baselines": baselines, "rows": rows,
        "wall_seconds": round(wall_seconds, 1),
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


def _count(n: float | None) -> str:
    """2.6M, 840k."""
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _cells(row: dict[str, Any]) -> list[str]:
    mean_std = f"{row['mean']:.2f} +- {row['std']:.2f}" if row["std"] is not None else f"{row['mean']:.2f}"
    ci = (f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]" if row["ci_low"] is not None else "-")
    return [row["variant"], row["pretraining"], str(row["seeds"]), mean_std,
            "(reference)" if row["reference"] else _fmt(row["delta"], signed=True),
            "" if row["reference"] else ci,
            "" if row["reference"] else _fmt(row["p_holm"], ".3f"),
            _count(row.get("params")), _fmt(row.get("train_examples_per_s"), ".0f"),
            _fmt(row.get("wall_seconds"), ".0f")]


HEADER = ["variant", "pre-training tasks", "seeds", "{metric} (mean +- std)", "diff vs {reference}",
          "95% CI (paired t)", "p (Holm)", "params", "train ex/s", "wall (s) per run"]


def _header(summary: dict[str, Any]) -> list[str]:
    reference = next(r["variant"] for r in summary["rows"] if r["reference"])
    return [h.format(metric=summary["metric"], reference=reference) for h in HEADER]


def _notes(summary: dict[str, Any]) -> list[str]:
    """The lines under the table: baselines, left-out objectives, setting, method, data."""
    lines = []
    names = {"prior": "answer prior", "text_only": "text-only classifier (TF-IDF + logistic regression)"}
    stored = summary.get("baselines") or {}
    if stored:
        lines.append(f"Blind baselines on {summary['split']}: " + "; ".join(
            f"{names.get(k, k)} {v:.2f}" for k, v in stored.items()) + ".")
    for r in summary["rows"]:
        for objective, why in (r.get("left_out") or {}).items():
            lines.append(f"{r['variant']} pre-trains without {objective}: {why}.")
    st = summary.get("setting", {})
    if st:
        pre = (f"pre-training {', '.join(map(str, st['pretrain_epochs']))} epoch(s); "
               if st["pretrain_epochs"] else "")
        lines.append(
            f"Setting: model preset {st.get('model_preset')}; {pre}"
            f"fine-tuning on the first {summary['train_limit'] or 'all'} training examples for "
            f"{st.get('finetune_epochs')} epochs at lr {st.get('finetune_lr')} (batch {st.get('finetune_batch_size')}), "
            f"checkpoint chosen on the first eval split. Compute: {st['compute_seconds'] / 60:.0f} min of runs.")
    lines += [
        f"Fine-tuning seeds 0..{summary['seeds'] - 1}"
        + (f"; {summary['pretrain_seeds']} pre-training run(s) per variant" if st.get("pretrain_epochs") else "")
        + ". Differences are paired by seed; p-values are paired t-tests, Holm-adjusted over the rows.",
        f"Data: {summary['data_source']} ({summary['data_fingerprint'][:19]}...)."]
    return lines


def render_markdown(summary: dict[str, Any]) -> str:
    header = _header(summary)
    lines = [f"# {summary['title']}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in summary["rows"]]
    lines += ["", *_notes(summary), "", f"Regenerate: `{summary['command']}`", ""]
    return "\n".join(lines)


def render_csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    numbers = ("mean", "std", "delta", "ci_low", "ci_high", "p", "p_holm")
    costs = ("params", "train_examples_per_s", "wall_seconds")
    w.writerow(["variant", "model", "pretraining", "seeds", *numbers, *costs])
    for r in summary["rows"]:
        w.writerow([r["variant"], r.get("model", ""), r["pretraining"], r["seeds"]]
                   + ["" if r[k] is None else f"{r[k]:.4f}" for k in numbers]
                   + ["" if r.get(k) is None else f"{r[k]:.1f}" for k in costs])
    return buf.getvalue()


def render_rich(summary: dict[str, Any]) -> Table:
    table = Table(title=summary["title"])
    for i, h in enumerate(_header(summary)):
        table.add_column(h, justify="right" if i >= 2 else "left")
    for r in summary["rows"]:
        table.add_row(*_cells(r), style="bold" if r["reference"] else None)
    return table


def render_chart(summary: dict[str, Any]) -> Any:
    """Bars (a line over the values of a varied numeric key) with +-std error bars, the
    reference in grey, rows that differ after Holm's correction (p < 0.05) in red, and the
    blind baselines as dashed lines."""
    from vlbench.results.plots import BAR_COLOR, REFERENCE_COLOR, SIGNIFICANT_COLOR, new_figure

    rows = summary["rows"]
    means = [r["mean"] for r in rows]
    errors = [r["std"] or 0.0 for r in rows]
    fig = new_figure(max(5.0, 0.9 * len(rows) + 2.5), 4.0)
    ax = fig.add_subplot()
    labels = [r["variant"] for r in rows]
    values = [lab.split("=", 1)[1] for lab in labels] if summary.get("compares") not in (
        "models", "pre-training") else []
    if values and all(v.lstrip("-").isdigit() for v in values):
        xs = [int(v) for v in values]
        ax.errorbar(xs, means, yerr=errors, fmt="o-", color=BAR_COLOR, capsize=4)
        ax.set_xticks(xs)
        ax.set_xlabel(summary["compares"])
    else:
        colors = [REFERENCE_COLOR if r["reference"] else
                  SIGNIFICANT_COLOR if r["p_holm"] is not None and r["p_holm"] < 0.05 else BAR_COLOR
                  for r in rows]
        ax.bar(range(len(rows)), means, yerr=errors, color=colors, capsize=4)
        ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right")
    for (name, value), style in zip((summary.get("baselines") or {}).items(), ("--", ":"), strict=False):
        ax.axhline(value, color="black", linestyle=style, linewidth=1, label=f"{name} baseline")
    if summary.get("baselines"):
        ax.legend(loc="lower right", fontsize=8)
    ax.set_ylabel(f"{summary['split']} {summary['metric']} (mean +- std)")
    ax.set_title(summary["title"].split(",")[0], fontsize=10)
    return fig


def write_outputs(summary: dict[str, Any], out: Path, stem: str = "ablation") -> list[Path]:
    """``{stem}.md``, ``{stem}.csv``, ``{stem}.json`` and, with matplotlib installed (the
    ``plots`` extra), the chart ``{stem}.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.json"]
    write_text_atomic(paths[0], render_markdown(summary))
    write_text_atomic(paths[1], render_csv(summary))
    write_json_atomic(paths[2], summary)
    try:
        from vlbench.results.plots import save_figure

        paths.append(save_figure(render_chart(summary), out / f"{stem}.png"))
    except VLBenchError:
        pass  # no matplotlib: the table is complete without its chart
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
        rerun_lost_pretraining(cells, out / "cells", console)
        for cell in cells:
            run_cell(cell, out / "cells", spec, console)
    else:
        from vlbench.engine.launch import LAUNCHERS, SlurmOptions, make_executor, submit_cells

        if launcher not in LAUNCHERS:
            raise ConfigError(f"--launcher {launcher}: choose one of {', '.join(LAUNCHERS)}")
        rerun_lost_pretraining(cells, out / "cells", console)
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
