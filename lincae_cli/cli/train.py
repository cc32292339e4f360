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

  lincae train configs/lincae-small.toml --data ~/music --run-dir runs/small --steps 2000 --resume

  lincae train configs/m2l-small.toml --data ~/music --run-dir runs/m2l --set train.batch_size=4

  torchrun --nproc-per-node 2 --no-python lincae train configs/lincae-small.toml
      --data ~/music --run-dir runs/ddp   (one command)

  lincae train configs/lincae-small.toml --data musdb:~/data/musdb18hq --run-dir runs/musdb

  lincae train configs/lincae-small.toml --run-dir runs/small --export-only

--steps N pauses the run at step N (schedules still follow the config's train.total_steps);
continue with --resume. At the end, RUN_DIR/model.safetensors holds the EMA weights:
use it with `lincae encode --model RUN_DIR/model.safetensors`.

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
    config: Path = typer.Argument(
        ..., metavar="CONFIG", help="Training config (TOML), e.g. configs/lincae-small.toml."
    ),
    data: list[str] = typer.Option(
        None,
        "--data",
        metavar="FOLDER",
        help="Folder of audio (recursive; repeat for several). "
        "Subfolders train/ and valid/ define the split when present. "
        "musdb:PATH reads a MUSDB18 or MUSDB18-HQ root through the musdb package.",
    ),
    run_dir: Path = typer.Option(
        ..., "--run-dir", metavar="FOLDER", help="Where checkpoints, logs and the model go."
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
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir."),
    export_only: bool = typer.Option(
        False,
        "--export-only",
        help="Only export RUN_DIR/model.safetensors from the checkpoint.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or log lines."),
) -> None:
    from lincae_training.config import TrainConfig
    from lincae_training.trainer import Trainer
    from lincae_training.trainer import export_only as export_run

    from lincae_cli.errors import LincaeError

    items = list(overrides or [])
    if batch_size is not None:
        items.append(f"train.batch_size={batch_size}")
    if seed is not None:
        items.append(f"train.seed={seed}")
    cfg = TrainConfig.load(config, items)

    def say(msg: str) -> None:
        typer.echo(msg, err=True)

    log = (lambda *_: None) if quiet else say
    if export_only:
        export_run(cfg, run_dir, log=log)
        return
    if not data:
        raise LincaeError("--data is required to train (a folder of audio files, or musdb:PATH)")
    trainer = Trainer(
        cfg,
        run_dir,
        list(data),
        stop_at=steps,
        resume=resume,
        log=log,
        progress=not quiet,
        warn=say,  # --quiet drops progress, not warnings
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
