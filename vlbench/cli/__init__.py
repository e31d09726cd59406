"""The ``vlbench`` command line: thin commands over the library, one-line errors."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from vlbench.errors import VLBenchError

app = typer.Typer(
    name="vlbench",
    help="Train, ablate and score LXMERT-style vision-and-language encoders on VQA, GQA and NLVR2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from vlbench.cli import convert, data, features, listing, pretrain, probe, run, score

    app.command("train")(run.train)
    app.command("evaluate")(run.evaluate)
    app.command("score")(score.score)
    app.command("list")(listing.list_plugins)
    app.command("convert")(convert.convert)
    app.command("pretrain")(pretrain.pretrain)
    app.command("ablate")(pretrain.ablate)
    app.command("probe")(probe.probe)
    app.add_typer(data.app, name="data")
    app.add_typer(features.app, name="features")
    try:
        from vlbench.cli import results
    except ImportError:  # the results layer is optional at import time (plots need matplotlib)
        return
    app.command("leaderboard")(results.leaderboard)
    app.command("compare")(results.compare)
    app.command("plot")(results.plot)


_register()


def main() -> None:
    """Console-script entry point: run the app, turning vlbench errors into one red line."""
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit codes instead of raising them
    except VLBenchError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)
