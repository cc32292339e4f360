"""`lincae eval --plots DIR`: spectrogram comparisons (PNG, via matplotlib) and the audio (WAV).

Spectrograms are mel power spectrograms labelled in Hz: on a mel axis the octaves where music
lives (fundamentals, formants) fill the height, where a linear axis to 22 kHz leaves them the
bottom quarter. Titles name the segment shown (`file@offset`, as in the eval log). matplotlib
is optional (`pip install 'lincae[plots]'`); `require_matplotlib` says so in one line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lincae_cli.atomic import atomic_output
from lincae_cli.audio.io import write_audio
from lincae_cli.errors import LincaeError
from lincae_cli.eval.linearity import EvalExamples
from lincae_cli.eval.separation import SeparationExample

SPECTROGRAM_FFT = 4096
SPECTROGRAM_HOP = 512
MEL_BANDS = 128
LOWEST_HZ = 40.0
DYNAMIC_RANGE_DB = 80.0
_TICKS_HZ = (200, 500, 1000, 2000, 5000, 10000, 20000)  # mel is near-linear below 500 Hz


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


def hz_to_mel(hz: Any) -> np.ndarray:
    """Frequency in Hz -> mel (the HTK formula, 2595·log10(1 + f/700))."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: Any) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int = SPECTROGRAM_FFT, bands: int = MEL_BANDS
) -> np.ndarray:
    """Triangular filters `[bands, n_fft // 2 + 1]` spaced evenly in mel from `LOWEST_HZ` to
    half the sample rate; each sums to 1, so a band holds the mean power of its bins."""
    edges = mel_to_hz(np.linspace(hz_to_mel(LOWEST_HZ), hz_to_mel(sample_rate / 2), bands + 2))
    bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    weights = np.clip(np.minimum(rising, falling), 0.0, None)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def mel_spectrogram_db(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Mel power spectrogram in dB `[MEL_BANDS, frames]` of audio `[samples]` (Hann window,
    n_fft 4096 or the largest power of two the audio allows, hop 512)."""
    n_fft = SPECTROGRAM_FFT
    while n_fft // 2 >= audio.shape[-1] and n_fft > 256:  # centred frames pad n_fft/2 a side
        n_fft //= 2
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(
        audio.detach().float().cpu(), n_fft, SPECTROGRAM_HOP, window=window, return_complex=True
    )
    power = spectrum.abs().square().numpy().astype(np.float64)
    return 10.0 * np.log10(np.maximum(mel_filterbank(sample_rate, n_fft) @ power, 1e-12))


def _hz_label(hz: float) -> str:
    return f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"


def _figure(
    panels: list[tuple[str, torch.Tensor]], sample_rate: int, title: str, path: Path
) -> Path:
    """One mel spectrogram per panel (label, audio `[samples]`), on one dB scale, as a PNG."""
    pyplot = require_matplotlib()
    spectra = [mel_spectrogram_db(audio, sample_rate) for _, audio in panels]
    top = max(float(spectrum.max()) for spectrum in spectra)
    # Band centres are evenly spaced in mel: the image spans them, half a band beyond each end.
    mel_edges = np.linspace(hz_to_mel(LOWEST_HZ), hz_to_mel(sample_rate / 2), MEL_BANDS + 2)
    half_band = (mel_edges[1] - mel_edges[0]) / 2
    ticks = [hz for hz in _TICKS_HZ if LOWEST_HZ <= hz <= sample_rate / 2]
    figure, axes = pyplot.subplots(
        len(panels), 1, figsize=(10, 1.2 + 2.3 * len(panels)), sharex=True, layout="constrained"
    )
    axes = np.atleast_1d(axes)
    image = None
    for axis, (label, audio), spectrum in zip(axes, panels, spectra, strict=True):
        image = axis.imshow(
            spectrum,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - DYNAMIC_RANGE_DB,
            vmax=top,
            extent=(
                0.0,
                audio.shape[-1] / sample_rate,
                float(mel_edges[1] - half_band),
                float(mel_edges[-2] + half_band),
            ),
        )
        axis.set_title(label, fontsize=10, loc="left")
        axis.set_yticks(hz_to_mel(ticks), [_hz_label(hz) for hz in ticks])
        axis.set_ylabel("Hz (mel scale)")
    axes[-1].set_xlabel("seconds into the segment")
    figure.colorbar(image, ax=list(axes), label="dB (mel band power)")
    figure.suptitle(title)
    with atomic_output(path) as partial:
        figure.savefig(partial, dpi=100, format="png")
    pyplot.close(figure)
    return path


def _wav(path: Path, audio: torch.Tensor, sample_rate: int) -> Path:
    write_audio(path, audio.detach().float().numpy()[None], sample_rate, subtype="FLOAT")
    return path


def _name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"segment {index + 1}"


def write_examples(
    directory: Path,
    model_name: str,
    examples: EvalExamples,
    sample_rate: int,
    clip_names: Sequence[str] = (),
    song_names: Sequence[str] = (),
) -> list[Path]:
    """PNG comparisons and WAV files of one model's examples into `directory`; returns paths.

    `clip_names` and `song_names` name the clip and song segments (`file@offset`) in titles.
    Files: `<model>-reconstruction.png` (original / reconstruction), `-original.wav`,
    `-reconstruction.wav`; for each stem with an example, `<model>-separation-<stem>.png`
    (mixture / stem / separated), `-<stem>.wav`, `-separated-<stem>.wav`, and the mixture as
    `-mixture.wav` (the segment most stems share) or `-mixture-<stem>.wav` (another one).
    """
    directory.mkdir(parents=True, exist_ok=True)
    label = file_label(model_name)
    written: list[Path] = []
    if examples.original is not None and examples.reconstruction is not None:
        length = min(examples.original.shape[-1], examples.reconstruction.shape[-1])
        original, reconstruction = examples.original[:length], examples.reconstruction[:length]
        names = [*clip_names, *(f"{name} (sum of its stems)" for name in song_names)]
        segment = _name(names, examples.clip)
        panels = [(f"original x: {segment}", original), ("Dec(Enc(x))", reconstruction)]
        title = f"{model_name}: reconstruction of {segment}, {length / sample_rate:.2f} s"
        written.append(
            _figure(panels, sample_rate, title, directory / f"{label}-reconstruction.png")
        )
        written.append(_wav(directory / f"{label}-original.wav", original, sample_rate))
        written.append(_wav(directory / f"{label}-reconstruction.wav", reconstruction, sample_rate))
    if examples.separations:
        shared_song = Counter(e.song for e in examples.separations).most_common(1)[0][0]
        for example in examples.separations:
            stem = file_label(example.stem_name)
            mixture = f"{label}-mixture" + ("" if example.song == shared_song else f"-{stem}")
            if directory / f"{mixture}.wav" not in written:
                length = min(example.mixture.shape[-1], example.separated.shape[-1])
                mixture_audio = example.mixture[:length]
                written.append(_wav(directory / f"{mixture}.wav", mixture_audio, sample_rate))
            written += _separation_files(
                directory, label, model_name, example, sample_rate, song_names
            )
    return written


def _separation_files(
    directory: Path,
    label: str,
    model_name: str,
    example: SeparationExample,
    sample_rate: int,
    song_names: Sequence[str],
) -> list[Path]:
    """The PNG, target WAV and separated WAV of one stem's separation."""
    stem = file_label(example.stem_name)
    length = min(example.stem.shape[-1], example.separated.shape[-1])
    mixture, target = example.mixture[:length], example.stem[:length]
    separated = example.separated[:length]
    segment = _name(song_names, example.song)
    panels = [
        (f"mixture: the sum of the stems of {segment}", mixture),
        (f"{example.stem_name}: the target s", target),
        (f"Dec(Enc(mix) − Enc(mix − s)): {example.stem_name} separated by the latents", separated),
    ]
    title = f"{model_name}: oracle separation of {example.stem_name} from {segment}"
    return [
        _figure(panels, sample_rate, title, directory / f"{label}-separation-{stem}.png"),
        _wav(directory / f"{label}-{stem}.wav", target, sample_rate),
        _wav(directory / f"{label}-separated-{stem}.wav", separated, sample_rate),
    ]
