"""`lincae train`: parse arguments and hand over to lincae_training."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import typer

TRAIN_HELP = """Train a model with consistency training and Lin-CAE's linearity augmentation.

Examples:

  lincae train configs/lincae-small.toml --data ~/music --run-dir runs/small

  lincae train configs/lincae-small.toml --data ~/music --run-dir runs/small --steps 2000

  lincae train --resume runs/small

  lincae train --resume runs/small --set train.total_steps=40000

  lincae train configs/m2l-small.toml --data ~/music --run-dir runs/m2l --set train.batch_size=4

  torchrun --nproc-per-node 2 --no-python lincae train configs/lincae-small.toml
      --data ~/music --run-dir runs/ddp   (one command)

  lincae train configs/lincae-small.toml --data musdb:~/data/musdb18hq --run-dir runs/musdb

  lincae train --export-only runs/small

--steps N pauses the run at step N (schedules still follow train.total_steps); Ctrl-C pauses at
the next step. `lincae train --resume RUN_DIR` (short for --resume --run-dir RUN_DIR) continues
exactly: it reads the run's recorded config, --set overrides and --data, so none of them is
repeated. A resume may change train.total_steps (the schedules then go on from the step
reached and end at the new total), train.checkpoint_every, log_every, validate_every,
threads, compile and tensorboard; any other change is refused, naming the key. A finished run
goes on as a new run from its weights (train.init_from; the refusal prints the command).
With --resume, --data replaces the recorded folders (data that moved), and a CONFIG, when
given, gets the run's recorded overrides on top. RUN_DIR/config.json is a config too: pass it
to start a new run with the same settings.

At the end, RUN_DIR/model.safetensors holds the EMA weights: use it with
`lincae encode --model RUN_DIR/model.safetensors`. --export-only writes it from the checkpoint
at any step; its provenance stays the training's (command, data, precision, commit), with what
the re-export did added as re_export.

--data musdb:PATH reads a local MUSDB18 (.stem.mp4) or MUSDB18-HQ (wav) copy through the musdb
package (pip install musdb; it needs ffmpeg): the mixture and the four stems of each track of
its train subset, split by musdb's own train/valid lists; the test subset is not used. A
prefix of --data rather than a config key, because data locations are not part of a config
(a run may mix folders and MUSDB, and move them between machines).

--set train.tensorboard=true also writes TensorBoard scalars to RUN_DIR/tensorboard
(pip install 'lincae\\[tensorboard]'). train.precision = "auto" (default) uses bf16 where
the hardware runs it natively, else fp32; "fp16" (CUDA only) trains with a dynamic loss scale,
saved in the checkpoint.
"""


def train(
    config: Path | None = typer.Argument(
        None,
        metavar="CONFIG",
        help="Training config: TOML (e.g. configs/lincae-small.toml) or a run's config.json. "
        "Not needed with --resume or --export-only, where a run folder here stands for "
        "--run-dir.",
        show_default=False,
    ),
    data: list[str] = typer.Option(
        None,
        "--data",
        metavar="FOLDER",
        help="Folder of audio (recursive; repeat for several). "
        "Subfolders train/ and valid/ define the split when present. "
        "musdb:PATH reads a MUSDB18 or MUSDB18-HQ root through the musdb package. "
        "A resumed run reads its recorded folders unless given.",
    ),
    run_dir: Path | None = typer.Option(
        None,
        "--run-dir",
        metavar="FOLDER",
        help="Where checkpoints, logs and the model go.",
        show_default=False,
    ),
    steps: int = typer.Option(None, "--steps", metavar="N", help="Stop (pause) at this step."),
    batch_size: int = typer.Option(
        None, "--batch-size", metavar="N", help="Override train.batch_size."
    ),
    seed: int = typer.Option(None, "--seed", metavar="N", help="Override train.seed."),
    overrides: list[str] = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="Override a config value: section.key=value (repeatable).",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in RUN_DIR with its recorded config, overrides and data "
        "(a new run starts there if it has no checkpoint and a CONFIG is given).",
    ),
    export_only: bool = typer.Option(
        False,
        "--export-only",
        help="Only export RUN_DIR/model.safetensors from the checkpoint, whose recorded "
        "config decides (a CONFIG stands in only for one this lincae cannot load).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or log lines."),
) -> None:
    from lincae_training.checkpoint import resume_config
    from lincae_training.config import TrainConfig
    from lincae_training.trainer import Trainer
    from lincae_training.trainer import export_only as export_run

    from lincae_cli.cli.render import UsageError
    from lincae_cli.errors import LincaeError

    items = list(overrides or [])
    if batch_size is not None:
        items.append(f"train.batch_size={batch_size}")
    if seed is not None:
        items.append(f"train.seed={seed}")
    if config is None and not (resume or export_only):
        raise UsageError(
            "a CONFIG is required to start a run (e.g. configs/lincae-small.toml); "
            "lincae train --resume RUN_DIR continues one"
        )
    if config is not None and (resume or export_only) and run_dir is None:
        if not config.exists():
            raise LincaeError(f"{config}: no such run folder")
        if config.is_dir():  # `lincae train --resume RUN_DIR`
            config, run_dir = None, config
    if run_dir is None:
        raise UsageError(
            "--run-dir is required (with --resume or --export-only the run folder may be given "
            "in place of CONFIG)"
        )

    def say(msg: str) -> None:
        typer.echo(msg, err=True)

    log = (lambda *_: None) if quiet else say
    if export_only:
        fallback = TrainConfig.load(config, items) if config is not None else None
        export_run(run_dir, log=log, config=fallback)
        return
    if resume:
        cfg, every = resume_config(run_dir, config, items)
    else:
        assert config is not None
        cfg, every = TrainConfig.load(config, items), items
    trainer = Trainer(
        cfg,
        run_dir,
        list(data) if data else None,
        stop_at=steps,
        resume=resume,
        log=log,
        progress=not quiet,
        warn=say,  # --quiet drops progress, not warnings
        overrides=every,
    )
    with _one_line_warnings():
        trainer.run()


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show lincae_training's warnings (e.g. skipped data files) as `lincae: warning: ...`
    instead of Python's two-line format with a source line; other warnings are unchanged."""
    import lincae_training

    ours = Path(lincae_training.__file__).resolve().parent
    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if Path(filename).resolve().is_relative_to(ours):
                typer.echo(f"lincae: warning: {message}", err=True)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
