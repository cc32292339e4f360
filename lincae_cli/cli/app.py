"""The `lincae` command: a Typer app whose commands live in sibling modules.

User errors (LincaeError) are printed as one line with exit code 1 (2 for usage), in one place
(`_LincaeGroup.invoke`); `-V`/`--verbose` (before or after the command) shows tracebacks
instead. A command's module is imported only when that command runs (or for `--help`), and
imports torch and the engine only when it needs them: latent commands never do.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import typer

from lincae_cli.cli.commands import (
    VERBOSE_KEY,
    Command,
    Group,
    LazyCommands,
    NegativeValuesCommand,
    single_command,
)
from lincae_cli.cli.options import NullOutputOption
from lincae_cli.cli.render import UsageError, emit_error_document, error_line, request_json
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(list(_COMMANDS), _build_command)

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

    def takes_null_output(taker: str) -> bool:
        return any(param.name == "null_output" for param in commands[taker].params)

    if not takes_null_output(name):
        takers = [taker for taker in commands if takes_null_output(taker)]
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


# The commands, in the order of `lincae --help`: name -> (module in lincae_cli.cli, function,
# help text, click class). Each module is imported when its command runs (LazyCommands).
# GAIN may be negative ("-6", "-6dB", "-inf"), and so may START/END of trim (from the end):
# such tokens are arguments, not options.
_COMMANDS: dict[str, tuple[str, str, str, type]] = {
    "encode": ("encode", "encode", "ENCODE_HELP", Command),
    "decode": ("decode", "decode", "DECODE_HELP", Command),
    "mix": ("ops", "mix", "MIX_HELP", Command),
    "gain": ("ops", "gain", "GAIN_HELP", NegativeValuesCommand),
    "subtract": ("ops", "subtract", "SUBTRACT_HELP", Command),
    "trim": ("edit", "trim", "TRIM_HELP", NegativeValuesCommand),
    "pad": ("edit", "pad", "PAD_HELP", Command),
    "fade": ("edit", "fade", "FADE_HELP", Command),
    "concat": ("edit", "concat", "CONCAT_HELP", Command),
    "info": ("info", "info", "INFO_HELP", Command),
    "manifest": ("manifest", "manifest", "MANIFEST_HELP", Command),
    "models": ("models", "models_app", "MODELS_HELP", Group),  # a Typer group, its own help
    "eval": ("eval", "eval_command", "EVAL_HELP", Command),
    "train": ("train", "train", "TRAIN_HELP", Command),
}


def _build_command(name: str) -> Any:
    module_name, function, help_name, cls = _COMMANDS[name]
    module = importlib.import_module(f"lincae_cli.cli.{module_name}")
    target, help_text = getattr(module, function), getattr(module, help_name)
    if isinstance(target, typer.Typer):  # a command group (`lincae models ...`)
        group = typer.main.get_command(target)
        group.name = name
        return group
    return single_command(target, name, cls, help_text)


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
