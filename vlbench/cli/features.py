"""``vlbench features extract``: grid region features of a folder of images, from a timm backbone."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Region features from your own images.", no_args_is_help=True)


@app.callback()
def features() -> None:
    """Region features from your own images, with a timm backbone as the vision encoder."""
    # A callback keeps `extract` a subcommand (`vlbench features extract`) while it is the only one.


@app.command("extract")
def extract(
    backbone: str = typer.Option(..., "--backbone", help="Any timm model name (see `vlbench list backbones 'resnet*'`)."),
    images: Path = typer.Option(..., "--images", help="Folder of images (.jpg, .png, ...; subfolders read too). Image id = file name without "
                                "extension: COCO_val2014_000000000042.jpg -> COCO_val2014_000000000042, GQA n12345.jpg -> n12345."),
    out: Path = typer.Option(..., "--out", help="Feature TSV to write (LXMERT format); PATH.meta.json is written beside it."),
    grid: int = typer.Option(6, "--grid", help="Regions per image: a GRID x GRID lattice of the final feature map (6: 36 regions, like LXMERT)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size in pixels (square); default: the backbone's own."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    weights: Path | None = typer.Option(None, "--weights", help="Backbone state dict (.safetensors, or a torch.save pickle of tensors only). "
                                        "Default: timm's pretrained weights if they are in the local cache, else random (with a warning)."),
    workers: int | None = typer.Option(None, "--workers", help="Processes decoding images (default: 2 on CPU, up to 8 with a GPU)."),
    limit: int | None = typer.Option(None, "--limit", help="Extract only the first N images (by file name)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initialisation when no weights are found."),
    tsv: bool = typer.Option(True, "--tsv", help="Write an LXMERT feature TSV (the format every vlbench reader takes; the only output format)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out, or drop an interrupted extraction instead of resuming it."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
) -> None:
    """Turn a folder of images into grid region features that LXMERT-style models train on.

    An interrupted extraction resumes when the same command is run again.
    """
    from vlbench.data.extract import extract_features

    console = Console(stderr=True)

    def say(message: str) -> None:
        style = "yellow" if message.startswith("warning") else None
        console.print(message, style=style, highlight=False, soft_wrap=True)

    result = extract_features(images, out, backbone=backbone, grid=grid, image_size=image_size,
                              batch_size=batch_size, weights=weights, workers=workers, limit=limit,
                              device=device, seed=seed, force=force, progress=progress, say=say)
    meta = result.meta
    say(f"Wrote {result.images} images x {meta['num_boxes']} regions of {meta['feat_dim']}-d "
        f"{backbone} features (weights: {meta['weights'][:19]}) to {result.path} in {result.seconds:.1f} s "
        f"({result.computed} computed at {result.images_per_s:.1f} images/s after {result.setup_seconds:.1f} s "
        f"of set-up); metadata in {result.meta_path}")
    boxes = "" if meta["num_boxes"] <= 36 else f" --set data.max_boxes={meta['num_boxes']}"
    say(f"train with: vlbench train --model lxmert --task gqa --data DIR --set data.features={result.path}{boxes}")
    print(result.path)  # stdout carries the path alone, for scripts
