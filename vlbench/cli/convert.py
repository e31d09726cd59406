"""``vlbench convert``: checkpoints between the published layouts, HF and vlbench's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from vlbench.config import parse_overrides
from vlbench.engine.layout import is_checkpoint, read_checkpoint
from vlbench.engine.loading import reader_options
from vlbench.errors import CheckpointError
from vlbench.registry import CHECKPOINT_FORMATS


def pick_reader(src: Path, fmt_from: str) -> Any:
    """The registered checkpoint format that reads ``src``: a vlbench checkpoint's own family;
    otherwise the reader that recognises the file (among those offering ``fmt_from``)."""
    if fmt_from in ("auto", "vlbench") and is_checkpoint(src):
        family = read_checkpoint(src).family
        if family not in CHECKPOINT_FORMATS:
            raise CheckpointError(f"{src}: a {family} checkpoint, but no checkpoint format of that "
                                  f"family is registered ({', '.join(CHECKPOINT_FORMATS.names())})")
        return CHECKPOINT_FORMATS.get(family)
    offering = [e.obj for e in CHECKPOINT_FORMATS
                if fmt_from == "auto" or fmt_from in getattr(e.obj, "formats", ())]
    for reader in offering:
        if reader.detect(src):
            return reader
    if fmt_from != "auto" and offering:
        return offering[0]  # let it say what is wrong with the file
    raise CheckpointError(f"{src}: no registered checkpoint format reads this (known: "
                          f"{', '.join(CHECKPOINT_FORMATS.names())}); pass --from explicitly")


def convert(
    src: Path = typer.Argument(..., help="Checkpoint file or directory (model_LXRT.pth, BEST.pth, HF dir, run)."),
    dst: Path = typer.Argument(..., help="Directory to write."),
    fmt_from: str = typer.Option("auto", "--from", help="auto, airsplay, hf or vlbench."),
    fmt_to: str = typer.Option("vlbench", "--to", help="vlbench or hf."),
    force: bool = typer.Option(False, "--force", help="Write into DST even if it is not empty."),
    overrides: list[str] = typer.Option(
        [], "--set", help="What a config-less .pth cannot tell: model.num_attention_heads=N."),
) -> None:
    """Convert a checkpoint; every load reports missing and unexpected keys."""
    console = Console(stderr=True)
    if (src / "run.json").is_file():
        src = src / "checkpoints" / "best"
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not force:
        raise CheckpointError(f"{dst}: exists and is not an empty directory; converting would "
                              "overwrite what is there: pick a new directory, or pass --force")
    options = reader_options(parse_overrides(overrides))
    reader = pick_reader(src, fmt_from)
    out = reader.convert(src, dst, fmt_from=fmt_from, fmt_to=fmt_to, say=console.print, **options)
    console.print(f"Wrote {fmt_to} checkpoint to {out}")
    print(out)
