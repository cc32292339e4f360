"""`lincae models`: the known models, downloading them, and where they are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lincae_cli.cli.commands import Command, Group
from lincae_cli.cli.options import JsonOption
from lincae_cli.cli.render import command_document, emit_json

MODELS_HELP = """List the known models, download one, convert one downloaded by hand, or show \
where models are kept.

Examples:

  lincae models                  (same as `lincae models list`)

  lincae models pull lin-cae     (download and convert the published Lin-CAE)

  lincae models convert ~/Downloads/0a3afbec_weights/   (the same, from files you downloaded)

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
    "and description; the default (used when no --model is given) is marked, and where it "
    "comes from: the LINCAE_MODEL environment variable, else built in (lincae-small).\n\n"
    "Examples:\n\n  lincae models list\n\n  lincae models list --json\n\n"
    "  export LINCAE_MODEL=lin-cae     (the published Lin-CAE becomes the default)",
)
def list_models_command(json_output: JsonOption = False) -> None:
    from lincae_cli.hub.registry import BUILT_IN, default_model, list_models

    default_spec, default_from = default_model()
    rows = [
        {
            "name": source.name,
            "kind": source.kind,
            "source": _where(source),
            "available": is_available(source),
            "default": source.name == default_spec,
            "description": source.description,
            "licence": source.licence,
        }
        for source in list_models()
    ]
    if json_output:
        default = {"model": default_spec, "from": default_from}
        emit_json(command_document("models list", models=rows, default=default))
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
    console = Console()
    console.print(table)
    where = (
        "built in; export LINCAE_MODEL=NAME to change it"
        if default_from == BUILT_IN
        else f"from {default_from}"
    )
    console.print(f"default model: {default_spec} ({where})", markup=False, highlight=False)


@models_app.command(
    "pull",
    cls=Command,
    help="Download a model (and convert published checkpoints) into the cache; prints its "
    "path. Without a network, use `lincae models convert` on files downloaded elsewhere; "
    "-V shows the Hub's retries.\n\n"
    "Examples:\n\n  lincae models pull lin-cae\n\n"
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
        emit_json(command_document("models pull", name=name, path=str(path)))
    else:
        typer.echo(str(path))


CONVERT_HELP = "\n\n".join(
    [
        "Convert the files of a published checkpoint, downloaded by hand, into lincae's "
        "cache (the same conversion as `lincae models pull`; .pth/.pt files are read with "
        "torch's weights_only loader, which runs no code); prints the converted file's path. "
        "Then --model NAME uses it, offline too.",
        "PATH... are the files, or the folder holding them: linear-cae models (m2l, lin-cae, "
        "lin-cae-2) are a <hash>_weights/ folder of autoencoder_inference_model_last.pth and "
        "{frontend,generator,diffusion}_kwargs_last.yaml; music2latent is music2latent.pt. "
        "The model is recognised by its files and the <hash>_weights folder name; --name says "
        "which it is when the folder was renamed.",
        "Examples:",
        "  lincae models convert ~/Downloads/0a3afbec_weights/",
        "  lincae models convert weights/*.pth weights/*.yaml --name lin-cae",
        "  lincae models convert music2latent.pt && lincae encode song.wav --model music2latent",
    ]
)


@models_app.command("convert", cls=Command, help=CONVERT_HELP)
def convert(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="The checkpoint's files, or the folder holding them.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Which published model the files are (see `lincae models list`); needed only "
            "when their <hash>_weights folder was renamed.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    from lincae_cli.hub.converted import convert_local_files

    source, path = convert_local_files(paths, name)
    if json_output:
        emit_json(
            command_document("models convert", name=source.name, kind=source.kind, path=str(path))
        )
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
        emit_json(command_document("models path", paths=places))
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
    from lincae_cli.hub.converted import converted_model_path
    from lincae_cli.hub.registry import CONVERTED_KINDS

    if source.kind == "embedded":
        try:
            download.embedded_model_path(source)
        except LincaeError:
            return False
        return True
    if source.kind in CONVERTED_KINDS:
        return converted_model_path(source).is_file()
    from huggingface_hub import try_to_load_from_cache

    settings = download.hub_settings()
    for filename in source.filenames:
        found = try_to_load_from_cache(
            source.repo_id, filename, cache_dir=settings.cache_dir, revision=source.revision
        )
        if not isinstance(found, str):
            return False
    return True
