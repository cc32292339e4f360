"""The `lincae` command: a Typer app whose commands live in sibling modules.

User errors (LincaeError) are printed as one line with exit code 1 (2 for usage), in one place
(`_LincaeGroup.invoke`); `--verbose` shows tracebacks instead. Command modules import torch and
the engine only when they run, so `--help` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from lincae_cli.cli.decode import DECODE_HELP, decode
from lincae_cli.cli.encode import ENCODE_HELP, encode
from lincae_cli.cli.eval import EVAL_HELP, eval_command
from lincae_cli.cli.info import INFO_HELP, info
from lincae_cli.cli.manifest import MANIFEST_HELP, manifest
from lincae_cli.cli.models import MODELS_HELP, models_app
from lincae_cli.cli.ops import GAIN_HELP, MIX_HELP, SUBTRACT_HELP, gain, mix, subtract
from lincae_cli.cli.options import Command, Group, NegativeValuesCommand
from lincae_cli.cli.render import UsageError, error_line
from lincae_cli.cli.train import TRAIN_HELP, train
from lincae_cli.errors import LincaeError
from lincae_cli.version import __version__

APP_HELP = """Encode audio into linear latents (.lat), mix/gain/subtract them, decode them back.

Latents of a linear autoencoder add like the audio they encode, so mixing, gain and \
subtraction happen on the small .lat files, without decoding. Outputs ending in .lat are \
latents; audio extensions (.wav, .flac, .ogg, ...) decode.

Examples:

  lincae encode song.wav && lincae decode song.lat -o copy.wav

  lincae mix vocals.lat band.lat --gains 0dB,-3dB -o mix.wav

  lincae encode x.wav -o - | lincae gain - -6dB -o - | lincae decode - -o y.wav
"""

_VERBOSE = "lincae.verbose"  # key in the context's meta, shared by every subcommand context


class _LincaeGroup(Group):
    """Prints a `LincaeError` as one line and exits 1 (2 for a `UsageError`), in every way the
    app is run."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LincaeError as error:
            if ctx.meta.get(_VERBOSE):
                raise
            error_line(str(error))
            ctx.exit(2 if isinstance(error, UsageError) else 1)
        except KeyboardInterrupt:
            typer.echo("lincae: interrupted", err=True)
            raise


app = typer.Typer(
    name="lincae",
    cls=_LincaeGroup,
    help=APP_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lincae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    ctx.meta[_VERBOSE] = verbose


app.command("encode", cls=Command, help=ENCODE_HELP)(encode)
app.command("decode", cls=Command, help=DECODE_HELP)(decode)
app.command("mix", cls=Command, help=MIX_HELP)(mix)
# GAIN may be negative ("-6", "-6dB", "-inf"): such tokens are arguments, not options.
app.command(
    "gain",
    cls=NegativeValuesCommand,
    help=GAIN_HELP,
    context_settings={"ignore_unknown_options": True},
)(gain)
app.command("subtract", cls=Command, help=SUBTRACT_HELP)(subtract)
app.command("info", cls=Command, help=INFO_HELP)(info)
app.command("manifest", cls=Command, help=MANIFEST_HELP)(manifest)
app.add_typer(models_app, name="models", help=MODELS_HELP)
app.command("eval", cls=Command, help=EVAL_HELP)(eval_command)
app.command("train", cls=Command, help=TRAIN_HELP)(train)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and return its exit code (errors are printed by the group)."""
    args = argv if argv is not None else sys.argv[1:]
    try:
        # Without standalone mode the app returns the code of `typer.Exit` instead of exiting.
        code = app(args=args, standalone_mode=False)
    except typer.Abort:
        return 130
    except typer.TyperException as exc:  # usage errors: bad options, missing arguments
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            typer.echo(f"Error: {exc.format_message()}", err=True)
        return exc.exit_code
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
