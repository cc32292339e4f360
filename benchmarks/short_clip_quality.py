"""Reconstruction of short clips through the command line, for comparing two versions of lincae.

`lincae eval` runs the bare model on its segments; this runs what users run: `lincae encode`
then `lincae decode` on short clips cut from held-out tracks, with the lincae of a given source
tree (``--lincae-root``, e.g. a `git worktree` of an older commit; default: the one installed),
and reports the mean reconstruction MSS against the original clips (lincae_cli/eval/metrics.py
of this tree, n_fft samples left out at both ends). It also reports the bare model of this
tree on each clip alone (`model.encode` / `model.decode` with the decoding noise of seed 0),
which padding-exact execution should reproduce.

    python benchmarks/short_clip_quality.py [--lincae-root DIR] [--seconds 2,6] [--clips 20]
        [--precision fp32] [--data ~/.cache/lincae/data/music/valid]

Clips: from each track in name order, round-robin, one clip every 17 s from 20 s in, silent
ones (RMS <= 1e-3) skipped. The decoded audio is kept at the model's own level
(`--no-restore-loudness` where the decoder has that option).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

from lincae_cli.eval.metrics import aligned_mss
from lincae_cli.nn.autoencoder import decoding_noise

RATE = 44100


def _clips(data: str, seconds: float, count: int) -> list[np.ndarray]:
    """``count`` non-silent mono clips of ``seconds``, float32 ``[1, samples]``."""
    tracks = sorted(str(path) for path in Path(os.path.expanduser(data)).glob("*.flac"))
    frames = {track: soundfile.info(track).frames for track in tracks}
    length = int(seconds * RATE)
    clips: list[np.ndarray] = []
    for index in range(10_000):
        track, position = tracks[index % len(tracks)], index // len(tracks)
        begin = (20 + 17 * position) * RATE
        if begin + length > frames[track]:
            continue
        audio, _ = soundfile.read(
            track, start=begin, frames=length, dtype="float32", always_2d=True
        )
        clip = audio.T[:1]
        if float(np.sqrt(np.mean(clip**2))) > 1e-3:
            clips.append(np.ascontiguousarray(clip))
        if len(clips) == count:
            return clips
    raise SystemExit(f"{data}: not {count} clips of {seconds} s")


def _lincae(root: str | None, *args: str) -> str:
    env = {**os.environ, "COLUMNS": "300"}  # --help at full width: option names whole
    if root:
        env["PYTHONPATH"] = os.path.abspath(root)
    done = subprocess.run(
        [sys.executable, "-m", "lincae_cli.cli.app", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # not a source tree: PYTHONPATH decides which lincae
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"lincae {' '.join(args[:1])} failed: {done.stderr}")
    return done.stdout


def _through_cli(root: str | None, clips: list[np.ndarray], precision: str) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        names = []
        for index, clip in enumerate(clips):
            names.append(str(folder / f"clip{index:03d}.wav"))
            soundfile.write(names[-1], clip.T, RATE, subtype="FLOAT")
        common = ["--precision", precision, "-q"]
        _lincae(root, "encode", *names, "-o", str(folder / "lat"), "--dtype", "float32", *common)
        lats = sorted(str(path) for path in (folder / "lat").glob("*.lat"))
        level = []
        if "--restore-loudness" in _lincae(root, "decode", "--help"):
            level = ["--no-restore-loudness"]
        out = folder / "out"
        _lincae(root, "decode", *lats, "-o", str(out), "--subtype", "FLOAT", *level, *common)
        return [
            soundfile.read(str(out / f"clip{index:03d}.wav"), dtype="float32", always_2d=True)[0].T
            for index in range(len(clips))
        ]


def _bare(clips: list[np.ndarray], precision: str) -> list[np.ndarray]:
    from lincae_cli.engine.inference import load_inference_model

    model = load_inference_model(None, "cpu", precision)
    config = model.config
    decoded = []
    with torch.inference_mode():
        for clip in clips:
            latents = model.encode(torch.from_numpy(clip))
            noise = decoding_noise(config, 0, 0, latents.shape[-1])[None] * config.sigma_max
            audio = model.decode(latents, initial_noise=noise)
            decoded.append(audio[:, : clip.shape[-1]].numpy())
    return decoded


def _mean_mss(decoded: list[np.ndarray], clips: list[np.ndarray], margin: int) -> float:
    values = [
        float(aligned_mss(torch.from_numpy(y), torch.from_numpy(x), margin).mean())
        for y, x in zip(decoded, clips, strict=True)
    ]
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lincae-root", help="source tree whose lincae_cli the CLI runs")
    parser.add_argument("--seconds", default="2,6", help="clip lengths, seconds")
    parser.add_argument("--clips", type=int, default=20, help="clips per length")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--data", default="~/.cache/lincae/data/music/valid")
    parser.add_argument("--bare", action="store_true", help="also the bare model of this tree")
    args = parser.parse_args()
    margin = 2048  # n_fft of the default model
    print(f"lincae root: {args.lincae_root or 'installed'}, precision {args.precision}")
    for seconds in (float(s) for s in args.seconds.split(",")):
        clips = _clips(args.data, seconds, args.clips)
        line = f"{len(clips)} clips of {seconds:g} s: encode+decode MSS "
        line += (
            f"{_mean_mss(_through_cli(args.lincae_root, clips, args.precision), clips, margin):.4f}"
        )
        if args.bare:
            line += f", bare model {_mean_mss(_bare(clips, args.precision), clips, margin):.4f}"
        print(line)


if __name__ == "__main__":
    main()
