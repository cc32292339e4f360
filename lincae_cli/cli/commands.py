"""The click command classes of lincae (``cls=`` of ``app.command`` and ``typer.Typer``): help as
users of sox expect it, ``-V``/``--verbose`` accepted before or after any command, and commands
whose arguments may be negative numbers.

Nothing here imports torch: `lincae --help` stays fast.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, MutableMapping
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from lincae_cli.cli import coercion

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
    (option,) = single_command(_verbose_flag, "verbose", TyperCommand, "").params
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
        coercion.install(params)  # values converted without importing pydantic
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


class LazyCommands(MutableMapping):  # type: ignore[type-arg]
    """A group's commands, each built when first looked up: running one command imports only
    its own module (a latent command does not pay for the encoder's or the trainer's imports),
    while listing them (``--help``) builds them all. Values are click commands; ``build(name)``
    makes the one of ``name``; the names, in order, are known up front."""

    def __init__(self, names: list[str], build: Callable[[str], Any]) -> None:
        self._built: dict[str, Any] = dict.fromkeys(names)
        self._build = build

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            raise KeyError(name)
        if self._built[name] is None:
            self._built[name] = self._build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built)

    def __len__(self) -> int:
        return len(self._built)


def single_command(function: Callable[..., Any], name: str, cls: type, help: str) -> Any:
    """The click command Typer makes of ``function`` (as ``app.command(name, cls=, help=)``)."""
    one = typer.Typer(add_completion=False)
    one.command(name, cls=cls, help=help)(function)
    return typer.main.get_command(one)
