"""``vlbench data synth`` (a synthetic world in the official formats, its scenes drawn as
images), ``vlbench data images`` (draw the images of a world written without them), ``vlbench data
import-mmf`` (MMF's imdb and feature LMDB as LXMERT files) and ``vlbench data check`` (every
reader and data check of a task over a directory, without training)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from vlbench.data.check import DataReport

app = typer.Typer(help="Data utilities.", no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Directory to write the world into."),
    seed: int = typer.Option(0, "--seed", help="World seed (same seed, same bytes)."),
    n_images: int | None = typer.Option(None, "--images", help="Number of images (default: CPU-sized)."),
    feat_dim: int | None = typer.Option(None, "--feat-dim", help="Region feature size (2048 like the real detector)."),
    max_boxes: int | None = typer.Option(None, "--max-boxes", help="Most regions per image (36 like LXMERT)."),
    image_size: int = typer.Option(128, "--image-size", help="Longer side of the drawn images in pixels (0: no images; drawn when a run first reads pixels)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out, replacing its world."),
) -> None:
    """Generate a synthetic world: LXMERT feature TSV, GQA/VQA/NLVR2 files and images, captions."""
    from vlbench.data.synth.world import generate
    from vlbench.errors import DataError

    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise DataError(f"--out {out}: exists and is not an empty directory; writing a world there "
                        "would overwrite its files: pick a new directory, or pass --force")

    kwargs = {k: v for k, v in {"n_images": n_images, "feat_dim": feat_dim, "max_boxes": max_boxes}.items()
              if v is not None}
    manifest = generate(out, seed=seed, image_size=image_size or None, **kwargs)
    drawn = f", drawn at {image_size} px" if manifest.images else ""
    Console(stderr=True).print(
        f"Wrote a synthetic world (seed {seed}, {manifest.n_images} images{drawn}, "
        f"{manifest.fingerprint[:19]}...) to {out} in {manifest.generation_seconds:.1f} s")
    print(out)  # stdout carries the directory alone, for scripts


@app.command("images")
def images(
    data: str | None = typer.Option(None, "--data", help="A synthetic world's directory; omit for the embedded one."),
    image_size: int | None = typer.Option(None, "--image-size", help="Longer side in pixels (default: the world's, else 128); another size redraws them."),
) -> None:
    """Draw the scenes of a synthetic world as images, where it has none yet (or of another size)."""
    from vlbench.data.source import resolve_data
    from vlbench.data.synth.images import ensure_images
    from vlbench.errors import DataError

    console = Console(stderr=True)
    say = lambda msg: console.print(msg, highlight=False, soft_wrap=True)  # noqa: E731
    source = resolve_data(data, say=say)
    if not source.synthetic:
        raise DataError(f"--data {data}: not a synthetic world (no manifest.json); only generated "
                        "worlds can be drawn")
    manifest = ensure_images(source.root, size=image_size, say=say)
    for part, entry in manifest.images.items():
        console.print(f"  {part}: {entry['count']} images, {entry['size']} px, in "
                      f"{source.root / entry['folder']} ({entry['fingerprint'][:19]}...)",
                      highlight=False, soft_wrap=True)
    print(source.root)  # stdout carries the directory alone, for scripts


@app.command("import-mmf")
def import_mmf(
    task: str = typer.Option(..., "--task", help="Task the questions belong to: vqa or gqa."),
    imdb: list[str] = typer.Option(..., "--imdb", help="SPLIT=FILE.npy: an MMF imdb for one split (repeat per split)."),
    lmdb: list[Path] = typer.Option(..., "--lmdb", help="MMF feature LMDB (repeat when splits use different ones)."),
    out: Path = typer.Option(..., "--out", help="Directory to write (must be empty unless --force)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out, replacing same-named files."),
) -> None:
    """Convert MMF data (imdb .npy + feature LMDB) into LXMERT TSV features and JSON splits."""
    from vlbench.data.mmf import import_mmf as run_import

    console = Console(stderr=True)
    summary = run_import(task, _split_files(imdb), lmdb, out, force=force,
                         say=lambda msg: console.print(msg, highlight=False, soft_wrap=True))
    for split, info in summary.splits.items():
        console.print(f"  {split}: {info['questions']} questions ({info['labelled']} labelled) -> "
                      f"{out / info['file']}", highlight=False, soft_wrap=True)
    console.print(f"Wrote {summary.images} images' regions to {out / summary.features}; train with: "
                  f"vlbench train --model lxmert --task {task} --data {out} (pick splits with "
                  "--set task.train_split=... --set task.eval_splits=...)",
                  highlight=False, soft_wrap=True)
    print(out)  # stdout carries the directory alone, for scripts


@app.command("check")
def check(
    task: str = typer.Option(..., "--task", "-t", help="Registered task whose data to check (see `vlbench list tasks`)."),
    data: str | None = typer.Option(None, "--data", help="Data directory; omit for the embedded synthetic benchmark."),
    overrides: list[str] = typer.Option([], "--set", help="task./data. config override key=value, e.g. data.max_boxes=50 (repeatable)."),
) -> None:
    """Read every split and audit the features of a task's data; exit 0 clean, 1 problems, 2 unreadable."""
    from vlbench.config import parse_overrides
    from vlbench.data.check import check_data

    console = Console(stderr=True)
    report = check_data(task, data, overrides=parse_overrides(overrides),
                        say=lambda msg: console.print(msg, highlight=False, soft_wrap=True))
    _print_report(report)
    raise typer.Exit(report.status)


def _print_report(report: DataReport) -> None:
    """The report as rich tables on stdout, then one line per finding."""
    from rich.markup import escape
    from rich.table import Table

    out = Console(highlight=False)
    splits = Table(title=f"{report.task} data in {report.source}", title_justify="left")
    for name in ("split", "examples", "labelled", "images", "no features", "words in vocab"):
        splits.add_column(name, justify="left" if name == "split" else "right")
    for s in report.splits:
        splits.add_row(s.name, *(_cell(v) for v in (s.examples, s.labelled, s.images, s.missing)),
                       "-" if s.coverage is None else f"{s.coverage:.1f}%")
    out.print(splits)
    if report.vocabulary:
        out.print(f"vocabulary: {escape(report.vocabulary)}")
    f = report.features
    if f:
        table = Table(title="features", title_justify="left", show_header=False)
        table.add_column("what")
        table.add_column("value", justify="right")
        rows = [
            ("files", ", ".join(Path(p).name for p in f["files"])),
            ("images", f["images"]), ("regions", f["regions"]), ("feature dimension", f["feat_dim"]),
            ("most regions in one image", f["max_regions"]),
            (f"images over data.max_boxes={f['max_boxes']}", f["crowded"]),
            ("rows with NaN/inf values", f["non_finite"]),
            ("boxes outside their image", f"{f['boxes_outside']} (up to {f['boxes_outside_px']:.1f} px)"
             if f["boxes_outside"] else 0),
            ("repeated image ids", f["duplicates"]),
        ]
        for what, value in rows:
            table.add_row(what, escape(str(value)))
        out.print(table)
    styles = {"unreadable": "bold red", "problem": "red", "warning": "yellow"}
    for finding in report.findings:
        out.print(f"[{styles[finding.level]}]{finding.level}:[/] {escape(finding.message)}", soft_wrap=True)
    verdict = {0: "[green]clean[/]", 1: "[red]problems found[/]", 2: "[bold red]unreadable input[/]"}
    out.print(f"status: {verdict[report.status]} (exit {report.status})")


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _split_files(pairs: list[str]) -> dict[str, Path]:
    """``["train=a.npy", ...]`` -> ``{"train": Path("a.npy")}``, refusing malformed or repeated splits."""
    out: dict[str, Path] = {}
    for pair in pairs:
        split, sep, path = pair.partition("=")
        if not sep or not split.strip() or not path.strip():
            raise typer.BadParameter(f"'{pair}': expected SPLIT=FILE.npy, e.g. train=imdb_train2014.npy",
                                     param_hint="--imdb")
        if split.strip() in out:
            raise typer.BadParameter(f"split '{split.strip()}' is given twice", param_hint="--imdb")
        out[split.strip()] = Path(path.strip()).expanduser()
    return out
