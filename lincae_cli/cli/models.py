"""`lincae models`: the known models, downloading them, and where they are kept."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lincae_cli.cli.options import Command, Group, JsonOption
from lincae_cli.cli.render import print_json

MODELS_HELP = """List the known models, download one, or show where models are kept.

Examples:

  lincae models                  (same as `lincae models list`)

  lincae models pull lin-cae     (download and convert the published Lin-CAE)

  lincae models path
"""

models_app = typer.Typer(
    cls=Group,
    help=MODELS_HELP,
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@models_app.callback()
def _models(ctx: typer.Context, json_output: JsonOption = False) -> None:
    if ctx.invoked_subcommand is None:
        list_models_command(json_output)


@models_app.command(
    "list",
    cls=Command,
    help="Table of known models: name, kind, whether it is on this machine (local), source "
    "and description.\n\n"
    "Examples:\n\n  lincae models list\n\n  lincae models list --json",
)
def list_models_command(json_output: JsonOption = False) -> None:
    from lincae_cli.hub.registry import DEFAULT_MODEL, list_models

    rows = [
        {
            "name": source.name,
            "kind": source.kind,
            "source": _where(source),
            "available": is_available(source),
            "default": source.name == DEFAULT_MODEL,
            "description": source.description,
            "licence": source.licence,
        }
        for source in list_models()
    ]
    if json_output:
        print_json(rows)
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="lincae models", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("name", "kind", "local"):
        table.add_column(column, no_wrap=True)
    # The source is an address to read or copy: it gets the width the short columns leave, over
    # the description beneath it, and folds onto more lines rather than being shortened.
    table.add_column("source and description", overflow="fold")
    for row in rows:
        about = Text(row["source"])
        about.append("\n" + row["description"], style="dim")
        name = row["name"] + ("\n(default)" if row["default"] else "")
        table.add_row(name, row["kind"], "yes" if row["available"] else "no", about)
    Console().print(table)


@models_app.command(
    "pull",
    cls=Command,
    help="Download a model (and convert published checkpoints) into the cache; prints its "
    "path.\n\nExamples:\n\n  lincae models pull lin-cae\n\n"
    "  lincae models pull hf://owner/repo/model.safetensors@v1",
)
def pull(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="A name from `lincae models list`, or hf://...")
    ],
    json_output: JsonOption = False,
) -> None:
    from lincae_cli.hub.download import resolve_model_file

    path = resolve_model_file(name)
    if json_output:
        print_json({"name": name, "path": str(path)})
    else:
        typer.echo(str(path))


@models_app.command(
    "path",
    cls=Command,
    help="Where models are kept: lincae's cache (converted models), the Hugging Face cache "
    "(downloads) and the embedded weights.\n\nExamples:\n\n  lincae models path",
)
def path(json_output: JsonOption = False) -> None:
    from lincae_cli.hub.cache import converted_models_dir, lincae_cache_dir
    from lincae_cli.hub.download import embedded_weights_dir, hub_settings

    embedded = embedded_weights_dir()
    places = {
        "lincae_cache": str(lincae_cache_dir()),
        "converted_models": str(converted_models_dir()),
        "huggingface_cache": str(hub_settings().cache_dir),
        "embedded_weights": str(embedded) if embedded is not None else None,
    }
    if json_output:
        print_json(places)
        return
    for key, value in places.items():
        typer.echo(f"{key.replace('_', ' ')}: {value if value is not None else '(none)'}")


def _where(source: Any) -> str:
    if source.kind == "embedded":
        return "shipped with lincae"
    return f"hf://{source.repo_id}@{source.revision}"


def is_available(source: Any) -> bool:
    """Whether the model can be used without a download."""
    from lincae_cli.errors import LincaeError
    from lincae_cli.hub import download

    if source.kind == "embedded":
        try:
            download.embedded_model_path(source)
        except LincaeError:
            return False
        return True
    if source.kind in download.CONVERTED_KINDS:
        return download.converted_model_path(source).is_file()
    from huggingface_hub import try_to_load_from_cache

    settings = download.hub_settings()
    for filename in source.filenames:
        found = try_to_load_from_cache(
            source.repo_id, filename, cache_dir=settings.cache_dir, revision=source.revision
        )
        if not isinstance(found, str):
            return False
    return True
