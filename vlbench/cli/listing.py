"""``vlbench list``: registered plugins with one-line descriptions."""

from __future__ import annotations

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
        table.add_column("description")
        table.add_column("from")
        for e in entries:
            table.add_row(e.name, e.description, e.source)
        console.print(table)
