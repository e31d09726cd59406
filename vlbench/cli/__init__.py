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
    except Exception as exc:  # click's usage errors and exits come through here in non-standalone mode
        # Matched by shape, not class: newer typer releases ship their own copy of click, whose
        # exceptions are not the installed click's.
        code = getattr(exc, "exit_code", None)
        if not isinstance(code, int):
            raise
        if callable(getattr(exc, "show", None)):
            exc.show()
        sys.exit(code)
    sys.exit(rc if isinstance(rc, int) else 0)
