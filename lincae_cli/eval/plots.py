"""`lincae eval --plots DIR`: spectrogram comparisons (PNG, via matplotlib) and the audio (WAV).

matplotlib is optional (`pip install 'lincae[plots]'`); `require_matplotlib` says so in one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lincae_cli.audio.io import write_audio
from lincae_cli.errors import LincaeError
from lincae_cli.eval.linearity import EvalExamples

SPECTROGRAM_FFT = 2048
SPECTROGRAM_HOP = 512
DYNAMIC_RANGE_DB = 90.0


def require_matplotlib() -> Any:
    """The `matplotlib.pyplot` module (Agg backend), or a LincaeError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise LincaeError(
            "--plots needs matplotlib: pip install 'lincae[plots]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def file_label(name: str) -> str:
    """A model name made safe for file names: `runs/small/model` -> `runs_small_model`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def spectrogram_db(audio: torch.Tensor) -> np.ndarray:
    """Magnitude in dB `[freq, frames]` of audio `[samples]` (Hann, n_fft 2048, hop 512)."""
    window = torch.hann_window(SPECTROGRAM_FFT)
    spec = torch.stft(
        audio.float(), SPECTROGRAM_FFT, SPECTROGRAM_HOP, window=window, return_complex=True
    )
    return (20 * torch.log10(spec.abs().clamp(min=1e-5))).numpy()


def _figure(
    panels: list[tuple[str, torch.Tensor]], sample_rate: int, title: str, path: Path
) -> None:
    pyplot = require_matplotlib()
    spectra = [spectrogram_db(audio) for _, audio in panels]
    top = max(float(s.max()) for s in spectra)
    figure, axes = pyplot.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True)
    for axis, (label, audio), spectrum in zip(np.atleast_1d(axes), panels, spectra, strict=True):
        seconds = audio.shape[-1] / sample_rate
        image = axis.imshow(
            spectrum,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - DYNAMIC_RANGE_DB,
            vmax=top,
            extent=(0.0, seconds, 0.0, sample_rate / 2000),
        )
        axis.set_title(label, fontsize=10)
        axis.set_ylabel("kHz")
        figure.colorbar(image, ax=axis, label="dB")
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _wav(path: Path, audio: torch.Tensor, sample_rate: int) -> Path:
    write_audio(path, audio.detach().float().numpy()[None], sample_rate, subtype="FLOAT")
    return path


def write_examples(
    directory: Path, model_name: str, examples: EvalExamples, sample_rate: int
) -> list[Path]:
    """PNG comparisons and WAV files of one model's examples into `directory`; returns paths.

    Files: `<model>-reconstruction.png` (original / reconstruction) and `-original.wav`,
    `-reconstruction.wav`; `<model>-separation-<stem>.png` (mixture / stem / separated) and
    `-mixture.wav`, `-<stem>.wav`, `-separated.wav`, when there are songs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    label = file_label(model_name)
    written: list[Path] = []
    if examples.original is not None and examples.reconstruction is not None:
        length = min(examples.original.shape[-1], examples.reconstruction.shape[-1])
        original, reconstruction = examples.original[:length], examples.reconstruction[:length]
        png = directory / f"{label}-reconstruction.png"
        panels = [("original", original), ("Dec(Enc(x))", reconstruction)]
        _figure(panels, sample_rate, f"{model_name}: reconstruction", png)
        written.append(png)
        written.append(_wav(directory / f"{label}-original.wav", original, sample_rate))
        written.append(_wav(directory / f"{label}-reconstruction.wav", reconstruction, sample_rate))
    if (
        examples.mixture is not None
        and examples.stem is not None
        and examples.separated is not None
    ):
        stem = file_label(examples.stem_name)
        length = min(examples.stem.shape[-1], examples.separated.shape[-1])
        mixture, target = examples.mixture[:length], examples.stem[:length]
        separated = examples.separated[:length]
        png = directory / f"{label}-separation-{stem}.png"
        panels = [
            ("mixture", mixture),
            (f"{examples.stem_name} (target)", target),
            (f"Dec(Enc(mix) − Enc(mix − {examples.stem_name}))", separated),
        ]
        _figure(panels, sample_rate, f"{model_name}: oracle separation", png)
        written.append(png)
        written.append(_wav(directory / f"{label}-mixture.wav", mixture, sample_rate))
        written.append(_wav(directory / f"{label}-{stem}.wav", target, sample_rate))
        written.append(_wav(directory / f"{label}-separated.wav", separated, sample_rate))
    return written
