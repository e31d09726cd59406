"""``vlbench list``: registered plugins with one-line descriptions, and timm's backbones."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from vlbench.errors import ConfigError
from vlbench.registry import REGISTRIES


def list_plugins(
    kind: str = typer.Argument("all", help="models, tasks, objectives, variants, metrics, feature_stores, "
                               "backbones or all."),
    pattern: str | None = typer.Argument(None, help="With backbones: a timm name pattern, wildcards allowed "
                                         "(e.g. 'resnet*'); default all."),
) -> None:
    """Show registered plugins, or the timm backbones `vlbench features extract` takes."""
    if kind == "backbones":
        _list_backbones(pattern or "*")
        return
    if pattern is not None:
        raise ConfigError(f"'{pattern}': a name pattern filters backbones only; "
                          f"try `vlbench list backbones '{pattern}'`")
    kinds = list(REGISTRIES) if kind == "all" else [kind]
    for k in kinds:
        if k not in REGISTRIES:
            raise ConfigError(f"unknown plugin kind '{k}'; choose one of {', '.join(REGISTRIES)}, "
                              "backbones or all")
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


def _list_backbones(pattern: str) -> None:
    """timm model names matching ``pattern``, one per line on stdout (for grep and scripts)."""
    from vlbench.data.extract import close_backbones, list_backbones

    names = list_backbones(pattern)
    if not names:
        close = close_backbones(pattern.strip("*?"))
        hint = f"did you mean {', '.join(close)}?" if close else "wildcards work, e.g. 'resnet*'"
        raise ConfigError(f"no timm backbone matches '{pattern}'; {hint}")
    for name in names:
        print(name)
    Console(stderr=True).print(f"{len(names)} timm backbone(s) match '{pattern}'", highlight=False)
