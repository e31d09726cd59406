"""``vlbench convert``: checkpoints between the original release, HF and vlbench layouts."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from vlbench.errors import CheckpointError
from vlbench.registry import CHECKPOINT_FORMATS


def convert(
    src: Path = typer.Argument(..., help="Checkpoint file or directory (model_LXRT.pth, BEST.pth, HF dir, run)."),
    dst: Path = typer.Argument(..., help="Directory to write."),
    fmt_from: str = typer.Option("auto", "--from", help="auto, airsplay, hf or vlbench."),
    fmt_to: str = typer.Option("vlbench", "--to", help="vlbench or hf."),
) -> None:
    """Convert a checkpoint; every load reports missing and unexpected keys."""
    console = Console(stderr=True)
    for entry in CHECKPOINT_FORMATS:
        reader = entry.obj
        if fmt_from in ("auto", *getattr(reader, "formats", ())) and (fmt_from != "auto" or reader.detect(src)):
            out = reader.convert(src, dst, fmt_from=fmt_from, fmt_to=fmt_to, say=console.print)
            console.print(f"Wrote {fmt_to} checkpoint to {out}")
            print(out)
            return
    raise CheckpointError(f"{src}: no registered checkpoint format reads this (known: "
                          f"{', '.join(CHECKPOINT_FORMATS.names())}); pass --from explicitly")
