"""The `lincae` command: a Typer app whose commands live in sibling modules.

User errors (LincaeError) are printed as one line with exit code 1; `--verbose` shows tracebacks.
"""

from __future__ import annotations

import sys

import typer

import lincae_cli
from lincae_cli.cli.train import TRAIN_HELP, train
from lincae_cli.errors import LincaeError

app = typer.Typer(
    name="lincae",
    help="Encode audio into linear latents (.lat), mix/gain/subtract them, decode them back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"verbose": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lincae {lincae_cli.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    _state["verbose"] = verbose


app.command("train", help=TRAIN_HELP)(train)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning LincaeError into one line on stderr."""
    verbose = "--verbose" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except LincaeError as exc:
        if verbose:
            raise
        typer.echo(f"lincae: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("lincae: interrupted", err=True)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 130
        raise
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
