"""``vlbench data synth``: write a synthetic world in the official formats."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Data utilities.", no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Directory to write the world into."),
    seed: int = typer.Option(0, "--seed", help="World seed (same seed, same bytes)."),
    n_images: int | None = typer.Option(None, "--images", help="Number of images (default: CPU-sized)."),
    feat_dim: int | None = typer.Option(None, "--feat-dim", help="Region feature size (2048 like the real detector)."),
    max_boxes: int | None = typer.Option(None, "--max-boxes", help="Most regions per image (36 like LXMERT)."),
) -> None:
    """Generate a synthetic world: LXMERT feature TSV, GQA/VQA/NLVR2 files, captions."""
    from vlbench.data.synth.world import generate

    kwargs = {k: v for k, v in {"n_images": n_images, "feat_dim": feat_dim, "max_boxes": max_boxes}.items()
              if v is not None}
    manifest = generate(out, seed=seed, **kwargs)
    Console(stderr=True).print(
        f"Wrote a synthetic world (seed {seed}, {manifest.n_images} images, "
        f"{manifest.fingerprint[:19]}...) to {out} in {manifest.generation_seconds:.1f} s")
    print(out)  # stdout carries the directory alone, for scripts
