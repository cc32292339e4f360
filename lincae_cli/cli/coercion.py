"""Parameter values converted without pydantic: latent commands stay fast.

Typer 0.29 converts every command-line value through a pydantic ``TypeAdapter``; importing
pydantic and building the adapters costs about 0.1 s per invocation, a third of the wall time
of a latent command such as ``lincae gain x.lat -6`` (benchmarks/bench_latent_ops.py). lincae's
parameters are plain: strings, paths, integers and floats (optionally bounded), flags, and
lists of them. `install` gives each such parameter a converter that follows click's rules; any
other parameter keeps Typer's own conversion, and with a Typer that lacks these internals
nothing is installed (slower, same behaviour). tests/test_cli_conventions.py checks both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import typer

try:  # Typer's runtime conversion contract (typer >= 0.29)
    from typer._coercion import RuntimeParam
except ImportError:  # pragma: no cover - another Typer: its own conversion stays
    RuntimeParam = None  # type: ignore[assignment,misc]

_SCALARS = (str, int, float, Path, bool)
_TRUE, _FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off"}
# Path options whose values need checks Typer would make (existence, kinds, resolving).
_PATH_DEFAULTS = {
    "exists": False,
    "file_okay": True,
    "dir_okay": True,
    "writable": False,
    "readable": True,
    "resolve_path": False,
    "allow_dash": False,
    "path_type": None,
}


def install(params: list[Any]) -> None:
    """Give each plain parameter of a command a converter that does not import pydantic."""
    if RuntimeParam is None:
        return
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        # Typer builds the converter on first use (None until then); a parameter without
        # these attributes is not Typer 0.29's and keeps its own.
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            continue
        if _plain(descriptor.annotation, descriptor.parameter_info):
            param._runtime_param = _PlainValue(
                parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
            )


def _plain(annotation: Any, info: Any) -> bool:
    if info.parser is not None or getattr(info, "click_type", None) is not None or info.clamp:
        return False
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation) or (None,)
    if annotation not in _SCALARS:
        return False
    if annotation is Path and any(
        getattr(info, key, default) != default for key, default in _PATH_DEFAULTS.items()
    ):
        return False
    return annotation in (int, float) or (info.min is None and info.max is None)


def _boolean(value: Any, param: Any, ctx: Any) -> bool:
    """A flag's value as click reads it from a string (an environment variable, a default)."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise typer.BadParameter(f"{value!r} is not a boolean", ctx, param)


if RuntimeParam is not None:

    class _PlainValue(RuntimeParam):  # type: ignore[valid-type,misc]
        """Converts a string, a path, a number in its bounds, or a list of those."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if get_origin(self.annotation) is list:
                (item_type,) = get_args(self.annotation)
                return [self._one(item_type, item, param, ctx) for item in value]
            return self._one(self.annotation, value, param, ctx)

        def _one(self, kind: type, value: Any, param: Any, ctx: Any) -> Any:
            if kind is str or kind is Path:
                return kind(value)
            if kind is bool:
                return _boolean(value, param, ctx)
            try:
                number = kind(value)
            except (TypeError, ValueError):
                noun = "an integer" if kind is int else "a number"
                raise typer.BadParameter(f"{value!r} is not {noun}", ctx, param) from None
            low, high = self.parameter_info.min, self.parameter_info.max
            if low is not None and number < low:
                raise typer.BadParameter(f"{value} is below the minimum, {low}", ctx, param)
            if high is not None and number > high:
                raise typer.BadParameter(f"{value} is above the maximum, {high}", ctx, param)
            return number
