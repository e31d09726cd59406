"""``vlbench list``: registered plugins with one-line descriptions."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from vlbench.errors import ConfigError
from vlbench.registry import REGISTRIES


def list_plugins(
    kind: str = typer.Argument("all", help="models, tasks, objectives, variants, metrics, feature_stores or all."),
) -> None:
    """Show registered plugins."""
    kinds = list(REGISTRIES) if kind == "all" else [kind]
    for k in kinds:
        if k not in REGISTRIES:
            raise ConfigError(f"unknown plugin kind '{k}'; choose one of {', '.join(REGISTRIES)} or all")
    console = Console()
    for k in kinds:
        entries = list(REGISTRIES[k])
        if kind == "all" and not entries:
            continue
        table = Table(title=k)
        table.add_column("name", style="bold")
        if k == "models":
            table.add_column("family")
            table.add_column("params", justify="right")
        table.add_column("description")
        table.add_column("from")
        for e in entries:
            extra = [e.obj.family, _params(e.obj)] if k == "models" else []
            table.add_row(e.name, *extra, e.description, e.source)
        console.print(table)


def _params(entry: Any) -> str:
    """Backbone parameters at the model's preset, with BERT's vocabulary and 2048-d regions
    (``lxmert`` and other unpinned names: the family default; on a synthetic world the
    vocabulary and features are smaller, so a run's count is lower)."""
    n = entry.parameter_count()
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"
