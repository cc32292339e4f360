"""The click command classes of lincae (``cls=`` of ``app.command`` and ``typer.Typer``): help as
users of sox expect it, ``-V``/``--verbose`` accepted before or after any command, and commands
whose arguments may be negative numbers.

Nothing here imports torch: `lincae --help` stays fast.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

VERBOSE_KEY = "lincae.verbose"  # in the context's meta, shared by the app and its commands


def _verbose(ctx: typer.Context, value: bool) -> None:
    if value:  # `lincae -V decode ...` and `lincae decode ... -V` both count
        ctx.meta[VERBOSE_KEY] = True


VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-V",
        callback=_verbose,
        expose_value=False,
        help="Show tracebacks on errors (before or after the command).",
    ),
]


def _verbose_flag(verbose: VerboseOption = False) -> None:
    """Only declares `VerboseOption`, for Typer to build its click option."""


@functools.cache
def _verbose_option() -> TyperOption:
    """The click option of `VerboseOption`, built by Typer from a declaration (as for any
    command's own options)."""
    declaring = typer.Typer(add_completion=False)
    declaring.command()(_verbose_flag)
    (option,) = typer.main.get_command(declaring).params
    assert isinstance(option, TyperOption)
    return option


class _LincaeParams:
    """Every lincae command and group takes ``-V``/``--verbose`` (sox's global options go
    anywhere), and its ``--help`` is what users of sox and the codec CLIs expect: a parameter
    shows its metavar (``INPUTS...``, ``N``, ``PATH``) and a flag shows nothing, never a
    Python type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_verbose_option())  # type: ignore[attr-defined]

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""  # a flag takes no value
            # Typer shows an argument's type beside its metavar and wraps it in braces in the
            # usage line; the metavar as written says it all (`[...]` when optional).
            if isinstance(param, TyperArgument) and param.metavar:
                param.display_type_rich = _no_type
                param._usage_display_name = functools.partial(_usage_name, param)
        return params


def _no_type(ctx: Any) -> None:
    return None


def _usage_name(argument: TyperArgument) -> str:
    return argument.metavar if argument.required else f"[{argument.metavar}]"


class Command(_LincaeParams, TyperCommand):
    """A lincae command (``cls=`` of ``app.command``)."""


class NegativeValuesCommand(Command):
    """A command whose arguments may be negative numbers (``gain song.lat -6``, ``-inf``).

    Click would read ``-inf`` as the short options ``-i -n -f``; here a token that starts like a
    negative number is an argument, unless it is the value of the option before it. A leading
    space keeps click from seeing the dash (the gain parser ignores surrounding space). Any
    other token that starts with a dash is an option, so a misspelt one is a usage error.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        takes_value = {
            name
            for param in self.get_params(ctx)
            if isinstance(param, TyperOption) and not param.is_flag
            for name in param.opts
        }
        kept = [
            f" {arg}"
            if _NEGATIVE_VALUE.match(arg) and (index == 0 or args[index - 1] not in takes_value)
            else arg
            for index, arg in enumerate(args)
        ]
        return super().parse_args(ctx, kept)


_NEGATIVE_VALUE = re.compile(r"-(?:\d|\.\d|inf)", re.IGNORECASE)


class Group(_LincaeParams, TyperGroup):
    """A lincae command group (``cls=`` of ``typer.Typer``)."""
