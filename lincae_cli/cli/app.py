"""The `lincae` command: a Typer app whose commands live in sibling modules.

User errors (LincaeError) are printed as one line with exit code 1 (2 for usage), in one place
(`_LincaeGroup.invoke`); `-V`/`--verbose` (before or after the command) shows tracebacks
instead. Command modules import torch and the engine only when they run, so `--help` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer

from lincae_cli.cli.commands import VERBOSE_KEY, Command, Group, NegativeValuesCommand
from lincae_cli.cli.decode import DECODE_HELP, decode
from lincae_cli.cli.edit import CONCAT_HELP, FADE_HELP, PAD_HELP, TRIM_HELP, concat, fade, pad, trim
from lincae_cli.cli.encode import ENCODE_HELP, encode
from lincae_cli.cli.eval import EVAL_HELP, eval_command
from lincae_cli.cli.info import INFO_HELP, info
from lincae_cli.cli.manifest import MANIFEST_HELP, manifest
from lincae_cli.cli.models import MODELS_HELP, models_app
from lincae_cli.cli.ops import GAIN_HELP, MIX_HELP, SUBTRACT_HELP, gain, mix, subtract
from lincae_cli.cli.options import NullOutputOption
from lincae_cli.cli.render import UsageError, emit_error_document, error_line, request_json
from lincae_cli.cli.train import TRAIN_HELP, train
from lincae_cli.errors import LincaeError, first_line
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

_VERBOSE = VERBOSE_KEY  # set in the context's meta by -V/--verbose, before or after the command


class _LincaeGroup(Group):
    """Prints a `LincaeError` as one line and exits 1 (2 for a `UsageError`), in every way the
    app is run. With ``--json``, an error (a usage error too) that ends a command before it
    printed its document prints an error document instead (cli/render.py)."""

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and command is not None:
            request_json(_json_command(name, command, rest))
        return name, command, rest

    def invoke(self, ctx: typer.Context) -> Any:
        request_json(None)  # until `resolve_command` finds --json
        try:
            return super().invoke(ctx)
        except LincaeError as error:
            verbose = ctx.meta.get(_VERBOSE)
            if not verbose:
                error_line(str(error))
            emit_error_document(str(error))
            if verbose:
                raise
            ctx.exit(2 if isinstance(error, UsageError) else 1)
        except typer.TyperException as error:  # click's usage errors, shown by `main`
            emit_error_document(error.format_message())  # type: ignore[attr-defined]
            raise
        except KeyboardInterrupt:
            typer.echo("lincae: interrupted", err=True)
            emit_error_document("interrupted")
            raise
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:  # a bug: its traceback follows
            emit_error_document(f"internal error: {first_line(error)}")
            raise
        finally:
            request_json(None)


def _json_command(name: str, command: Any, rest: list[str]) -> str | None:
    """The command (``models list`` for a group's subcommand) when this invocation asks for
    ``--json`` (before any ``--``) and the command has that option; else None."""
    words = rest[: rest.index("--")] if "--" in rest else rest
    if "--json" not in words:
        return None
    subcommands = getattr(command, "commands", {})
    if words and words[0] in subcommands:
        name, command = f"{name} {words[0]}", subcommands[words[0]]
    if any("--json" in getattr(param, "opts", ()) for param in command.params):
        return name
    return None


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
    null_output: NullOutputOption = False,
) -> None:
    _check_null_output(ctx, null_output)
    _route_library_logs(ctx.meta)


def _check_null_output(ctx: typer.Context, null_output: bool) -> None:
    """``lincae -n COMMAND``: the command must be one that takes ``-n``."""
    name = ctx.invoked_subcommand
    if not null_output or name is None:
        return
    commands = ctx.command.commands  # type: ignore[attr-defined]
    takers = [
        taker
        for taker, command in commands.items()
        if any(param.name == "null_output" for param in command.params)
    ]
    if name not in takers:
        raise UsageError(f"-n (null output) applies to {', '.join(takers)}, not to {name}")


class _LibraryLogLines(logging.Handler):
    """lincae_cli's log messages as ``lincae: ...`` lines on stderr: warnings always, INFO (such
    as the Hub's retries) with ``--verbose``. The flag is looked up in the invocation's meta
    when a message comes (from any thread), so it counts wherever it was given."""

    meta: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or self.meta.get(_VERBOSE):
            # typer.echo finds the stderr of the moment (tests swap it between invocations).
            typer.echo(f"lincae: {record.getMessage()}", err=True)


def _route_library_logs(meta: dict[str, Any]) -> None:
    package_logger = logging.getLogger("lincae_cli")
    package_logger.setLevel(logging.INFO)
    handler = next((h for h in package_logger.handlers if isinstance(h, _LibraryLogLines)), None)
    if handler is None:
        handler = _LibraryLogLines()
        package_logger.addHandler(handler)
    handler.meta = meta  # shared by the app's context and its command's


app.command("encode", cls=Command, help=ENCODE_HELP)(encode)
app.command("decode", cls=Command, help=DECODE_HELP)(decode)
app.command("mix", cls=Command, help=MIX_HELP)(mix)
# GAIN may be negative ("-6", "-6dB", "-inf"): such tokens are arguments, not options.
app.command("gain", cls=NegativeValuesCommand, help=GAIN_HELP)(gain)
app.command("subtract", cls=Command, help=SUBTRACT_HELP)(subtract)
# START/END of trim may be negative (from the end), like GAIN.
app.command("trim", cls=NegativeValuesCommand, help=TRIM_HELP)(trim)
app.command("pad", cls=Command, help=PAD_HELP)(pad)
app.command("fade", cls=Command, help=FADE_HELP)(fade)
app.command("concat", cls=Command, help=CONCAT_HELP)(concat)
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
