"""Short files against one long file, in one process: seconds of audio per second.

Encodes (then decodes) 40 files of 2 s and one file of 80 s with the embedded default model
through the engine, as `lincae encode` / `decode` run them (default settings: CPU batch size,
10 s chunks, bucketed windows for files within one chunk), and reports the throughput of each
and their ratio (target: short / long >= 0.7). Rounds alternate short and long to share the
machine's noise.

    python benchmarks/bench_short_files.py [--rounds 2] [--precision auto]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lincae_cli.audio.sources import ArraySource
from lincae_cli.engine.inference import Engine, EngineOptions


def _music(seconds: float, seed: int) -> np.ndarray:
    """Stereo test signal: a few harmonic notes and a little noise (not silence)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 44100)) / 44100
    notes = sum(0.1 * np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, 4))
    audio = np.stack([notes, np.roll(notes, 441)]) + 0.01 * rng.standard_normal((2, t.size))
    return audio.astype(np.float32)


def _timed(engine: Engine, jobs: list) -> tuple[float, list]:
    start = time.perf_counter()
    outcomes = list(engine.run(jobs))
    assert all(outcome.ok for outcome in outcomes)
    return time.perf_counter() - start, [outcome.result for outcome in outcomes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    engine = Engine.load(None, EngineOptions(precision=args.precision))
    shorts = [_music(2.0, seed) for seed in range(40)]
    long = _music(80.0, 100)
    totals = {"encode short": 0.0, "encode long": 0.0, "decode short": 0.0, "decode long": 0.0}
    for _ in range(args.rounds):
        seconds, short_lats = _timed(
            engine,
            [engine.encode_job(ArraySource(f"s{i}", a, 44100)) for i, a in enumerate(shorts)],
        )
        totals["encode short"] += seconds
        seconds, long_lats = _timed(engine, [engine.encode_job(ArraySource("l", long, 44100))])
        totals["encode long"] += seconds
        seconds, _ = _timed(engine, [engine.decode_job(lat, None) for lat in short_lats])
        totals["decode short"] += seconds
        seconds, _ = _timed(engine, [engine.decode_job(long_lats[0], None)])
        totals["decode long"] += seconds
    audio = 80.0 * args.rounds
    print(
        f"model {engine.model_name}, precision {engine.model.precision_name}, device "
        f"{engine.device}, batch {engine.batch_size}, rounds {args.rounds}"
    )
    for kind in ("encode", "decode"):
        short = audio / totals[f"{kind} short"]
        whole = audio / totals[f"{kind} long"]
        print(
            f"{kind}: 40 x 2 s {short:.1f}x realtime, 1 x 80 s {whole:.1f}x realtime, "
            f"ratio {short / whole:.2f}"
        )


if __name__ == "__main__":
    main()
