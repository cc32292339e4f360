"""`lincae eval`: the linearity maths on toy models, segment selection, and the CLI end to end."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from lincae_cli.errors import LincaeError
from lincae_cli.eval import plots
from lincae_cli.eval.affine import AFFINE_PREFIX
from lincae_cli.eval.datasets import (
    clip_layout,
    discover,
    load_eval_set,
    select_segments,
    spread_order,
)
from lincae_cli.eval.level import LEVEL_GAINS, RESTORED_PREFIX
from lincae_cli.eval.linearity import evaluate
from lincae_cli.eval.metrics import MSS_FLOOR, matched_ratio, snr_db
from lincae_cli.eval.references import REFERENCE_KEYS, add_white_noise, lowpass
from lincae_cli.hub.store import save_model
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
from lincae_cli.nn.config import preset
from tests.test_json_output import checked

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 8000
SAMPLES = 8192
CHANNELS = 4  # toy latents: audio framed as [batch, 4, samples / 4]
STEMS = ("bass", "drums", "vocals")


def frame(audio: torch.Tensor) -> torch.Tensor:
    """Audio `[batch, samples]` -> `[batch, CHANNELS, samples / CHANNELS]`, no information lost."""
    return audio.reshape(audio.shape[0], -1, CHANNELS).transpose(1, 2)


def unframe(latents: torch.Tensor) -> torch.Tensor:
    return latents.transpose(1, 2).reshape(latents.shape[0], -1)


def squared_frame(audio: torch.Tensor) -> torch.Tensor:
    """A non-linear but invertible encoder: sign(x)·x², framed."""
    return frame(audio.sign() * audio**2)


def root_unframe(latents: torch.Tensor) -> torch.Tensor:
    return unframe(latents.sign() * latents.abs().sqrt())


def tanh_unframe(latents: torch.Tensor) -> torch.Tensor:
    """A saturating decoder: tanh(3x)."""
    return torch.tanh(3 * unframe(latents))


@pytest.fixture(scope="module")
def signals() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clips `[4, samples]`, stems `[2, 3, samples]`, active `[2, 3]`): sines, noise, chirps."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(SAMPLES) / RATE
    clips = torch.stack(
        [
            0.4 * torch.sin(2 * math.pi * 440 * t),
            0.1 * torch.randn(SAMPLES, generator=generator),
            0.3 * torch.sin(2 * math.pi * (200 + 600 * t) * t),
            0.2 * torch.sin(2 * math.pi * 110 * t)
            + 0.05 * torch.randn(SAMPLES, generator=generator),
        ]
    )
    bass = 0.3 * torch.sin(2 * math.pi * 55 * t)
    drums = 0.2 * torch.randn(SAMPLES, generator=generator) * (torch.sin(2 * math.pi * 2 * t) > 0)
    vocals = 0.25 * torch.sin(2 * math.pi * (300 + 50 * torch.sin(2 * math.pi * 3 * t)) * t)
    stems = torch.stack([torch.stack([bass, drums, vocals]), torch.stack([drums, vocals, 0 * t])])
    active = torch.tensor([[True, True, True], [True, True, False]])
    return clips, stems, active


def run_eval(encode, decode, signals, silence: torch.Tensor | None = None) -> dict[str, float]:
    clips, stems, active = signals
    metrics, _ = evaluate(
        encode, decode, clips, stems, active, STEMS, sample_rate=RATE, silence=silence
    )
    return metrics


def test_identity_model_is_perfectly_linear(signals) -> None:
    metrics = run_eval(frame, unframe, signals, silence=torch.zeros(CHANNELS))
    assert metrics["recon_snr_db"] > 60 and metrics["recon_si_sdr_db"] > 60
    distances = [key for key in metrics if "_mss" in key and not key.startswith("ref_")]
    distances += [key for key in metrics if "rel_l2" in key]
    for key in distances:
        # Separation is mix − (mix − s): float rounding leaves MSS ~1e-4 in near-silent bins.
        assert metrics[key] == pytest.approx(0.0, abs=MSS_FLOOR), key
    # Every ratio is 0/0 here, which counts as 1 (both MSS are under MSS_FLOOR).
    ratios = [key for key in metrics if "ratio" in key.split("_")]
    assert len(ratios) == 2 * (3 + 2 + 1 + len(STEMS))  # plain and affine (b = 0 here)
    for key in ratios:
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["separation_si_sdr_db_vocals"] > 60
    # The references say how far familiar degradations are, in the same MSS.
    assert metrics["ref_noise_10db_mss"] > metrics["ref_noise_20db_mss"] > 0.01
    assert metrics["ref_lowpass_11khz_mss"] == pytest.approx(0.0, abs=1e-3)  # 8 kHz audio


def test_saturating_decoder_breaks_decoder_additivity_only(signals) -> None:
    metrics = run_eval(frame, tanh_unframe, signals)
    assert metrics["recon_mss"] > 0.05
    assert metrics["dec_additivity_mss_pairs"] > 0.05
    # tanh(3x) is a gain of 3 for quiet audio and saturates loud audio: the error depends on a.
    assert abs(metrics["dec_homogeneity_mss_a2"] - metrics["dec_homogeneity_mss_a0.25"]) > 0.1
    # The encoder is linear, so latent sums are encodings of audio sums: matched ratios are 1.
    assert metrics["enc_additivity_rel_l2_pairs"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["additivity_ratio_pairs"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["homogeneity_ratio_a0.5"] == pytest.approx(1.0, abs=1e-4)


def test_squaring_encoder_has_large_additivity_error(signals) -> None:
    metrics = run_eval(squared_frame, root_unframe, signals)
    assert metrics["recon_mss"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["enc_additivity_rel_l2_pairs"] > 0.3
    assert metrics["enc_additivity_rel_l2_stems"] > 0.3
    # ‖Enc(a·x) − a·Enc(x)‖ / ‖a·Enc(x)‖ = |a² − a| / a = |a − 1| for Enc(x) = x².
    for gain in (0.25, 0.5, 2):
        assert metrics[f"enc_homogeneity_rel_l2_a{gain:g}"] == pytest.approx(abs(gain - 1), 1e-4)
    assert metrics["additivity_ratio_pairs"] > 10
    assert metrics["separation_ratio"] > 10
    assert metrics["separation_mss"] > 0.1


def test_affine_encoder_is_exact_with_the_affine_correction_only(signals) -> None:
    """Enc(x) = frame(x) + b: plain sums, gains and differences of latents are off by multiples
    of b; adding (1 − Σ gᵢ)·b (mix Σ zᵢ − (n − 1)·b, gain a·z + (1 − a)·b, subtract z₁ − z₂ + b)
    makes every latent operation the encoding of the operated audio."""
    from lincae_cli.eval.affine import affine_recommended

    silence = torch.tensor([0.05, -0.03, 0.02, 0.04])

    def encode(audio: torch.Tensor) -> torch.Tensor:
        return frame(audio) + silence[None, :, None]

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return unframe(latents - silence[None, :, None])

    metrics = run_eval(encode, decode, signals, silence)
    operations = [f"homogeneity_ratio_a{gain:g}" for gain in (0.25, 0.5, 2)]
    operations += ["additivity_ratio_pairs", "additivity_ratio_stems", "separation_ratio"]
    operations += [f"separation_ratio_{stem}" for stem in STEMS]
    for key in operations:
        assert metrics[key] > 2, key  # plain: an offset of (1 − Σ gᵢ)·b in every frame
        assert metrics[AFFINE_PREFIX + key] == pytest.approx(1.0), key
    for key in ("enc_additivity_rel_l2_pairs", "enc_additivity_rel_l2_stems"):
        assert metrics[key] > 0.05
        assert metrics[AFFINE_PREFIX + key] == pytest.approx(0.0, abs=1e-6)
    assert metrics["affine_enc_homogeneity_rel_l2_a0.5"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["affine_separation_si_sdr_db"] > 60 > metrics["separation_si_sdr_db"]
    assert affine_recommended(metrics) is True
    assert affine_recommended(run_eval(frame, unframe, signals, silence)) is False
    assert affine_recommended({"separation_ratio": 1.0}) is None


def test_missing_data_gives_nan_not_missing_keys(signals) -> None:
    clips, _, _ = signals
    metrics, examples = evaluate(frame, unframe, clips[:1], stem_names=STEMS, sample_rate=RATE)
    assert math.isnan(metrics["additivity_ratio_pairs"])  # one clip makes no pair
    assert math.isnan(metrics["separation_mss_vocals"])
    assert not math.isnan(metrics["recon_mss"])
    # Without the model's silence latent the affine scores are missing data too.
    assert math.isnan(metrics["affine_homogeneity_ratio_a0.5"])
    assert math.isnan(metrics["affine_separation_ratio"])
    assert {f"ref_{key}" for key in REFERENCE_KEYS} <= set(metrics)
    assert examples.original is not None and examples.separations == []


def test_ratio_floor_and_references() -> None:
    assert matched_ratio(0.0, 0.0) == 1.0
    assert matched_ratio(0.2, 0.1) == pytest.approx(2.0)
    assert math.isnan(matched_ratio(math.nan, 0.1))
    clips = torch.randn(3, 4000, generator=torch.Generator().manual_seed(1))
    noisy = add_white_noise(clips, 10.0, torch.Generator().manual_seed(2))
    assert snr_db(noisy, clips) == pytest.approx(torch.full((3,), 10.0), abs=1e-3)
    spectrum = torch.fft.rfft(lowpass(clips, 1000.0, RATE)).abs()
    assert spectrum[:, 501:].max() < 1e-4  # 2 Hz bins: 501 is the first above 1 kHz


def test_segment_selection_is_spread_and_skips_silence() -> None:
    assert spread_order(8)[:3] == [4, 2, 6]
    assert sorted(spread_order(13)) == list(range(13))
    loudness = np.array([0.1, 0.0, 0.1, 0.1, 1e-4, 0.1])
    chosen = select_segments(loudness, 10)
    assert sorted(chosen) == [0, 2, 3, 5]
    assert select_segments(loudness, 2) == [3, 2]


def test_clip_layout_matches_the_model_framing() -> None:
    config = preset("tiny")
    layout = clip_layout(0.3, config)
    assert layout.latent_frames == 3
    model = ConsistencyAutoencoder(config).eval()
    with torch.inference_mode():
        latents = model.encode(torch.zeros(1, layout.samples))
        audio = model.decode(latents, seed=0)
    assert latents.shape[-1] == layout.latent_frames == model.latent_frames(layout.samples)
    assert audio.shape[-1] == layout.samples
    with pytest.raises(LincaeError):
        clip_layout(0.0, config)


def write_stems(root: Path, rate: int = 44100, seconds: float = 1.2) -> None:
    """Two songs in MUSDB layout (with a mixture file) and one loose clip, at mixed rates."""
    generator = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for index, song_rate in enumerate((rate, rate // 2)):
        song = root / "stems" / f"song_{index}"
        song.mkdir(parents=True)
        ts = np.arange(int(seconds * song_rate)) / song_rate
        tracks = {
            "bass": 0.3 * np.sin(2 * np.pi * 55 * ts),
            "drums": 0.1 * generator.standard_normal(ts.size),
            "vocals": 0.2 * np.sin(2 * np.pi * (330 + 20 * index) * ts),
        }
        for name, track in tracks.items():
            soundfile.write(song / f"{name}.wav", track.astype(np.float32), song_rate)
        soundfile.write(song / "mixture.wav", sum(tracks.values()).astype(np.float32), song_rate)
    clips = root / "clips"
    clips.mkdir()
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 440 * t)], axis=1)
    soundfile.write(clips / "tone.flac", (0.3 * stereo).astype(np.float32), rate)
    soundfile.write(clips / "silence.wav", np.zeros(t.size, np.float32), rate)


def test_discovery_and_loading(tmp_path: Path) -> None:
    write_stems(tmp_path)
    sources = discover([tmp_path])
    assert [song.name for song in sources.songs] == ["stems/song_0", "stems/song_1"]
    assert sorted(sources.songs[0].stems) == list(STEMS)  # the mixture file is not a stem
    assert [path.name for path in sources.clip_files] == ["silence.wav", "tone.flac"]
    eval_set = load_eval_set(sources, clip_layout(0.3, preset("tiny")), max_clips=4)
    assert eval_set.clips.shape == (2, eval_set.layout.samples)  # silence gives no segment
    assert eval_set.stems.shape == (4, 3, eval_set.layout.samples)
    assert bool(eval_set.active.all())
    (tmp_path / "empty").mkdir()
    with pytest.raises(LincaeError, match="no audio files"):
        discover([tmp_path / "empty"])
    with pytest.raises(LincaeError, match="no such file"):
        discover([tmp_path / "missing"])


def test_mel_spectrogram_puts_a_tone_in_its_band() -> None:
    for rate in (16000, 44100, 48000):
        bank = plots.mel_filterbank(rate)
        assert bank.shape == (plots.MEL_BANDS, plots.SPECTROGRAM_FFT // 2 + 1)
        assert np.allclose(bank.sum(axis=1), 1.0)  # no band falls between two FFT bins
    t = torch.arange(44100) / 44100
    spectrum = plots.mel_spectrogram_db(0.5 * torch.sin(2 * math.pi * 1000 * t), 44100)
    centres = np.linspace(plots.hz_to_mel(plots.LOWEST_HZ), plots.hz_to_mel(22050), 130)[1:-1]
    loudest = int(spectrum.mean(axis=1).argmax())
    assert abs(plots.mel_to_hz(centres[loudest]) - 1000) < 30
    # On a mel axis 100 Hz-1 kHz takes over a fifth of the height (a linear one: 4 %).
    in_range = (plots.mel_to_hz(centres) > 100) & (plots.mel_to_hz(centres) < 1000)
    assert float(np.mean(in_range)) > 0.2


def test_plots_show_every_stem_and_name_their_segments(signals, tmp_path, monkeypatch) -> None:
    clips, stems, _ = signals
    # Vocals are silent in the first song segment, the one bass and drums share.
    active = torch.tensor([[True, True, False], [False, False, True]])
    _, examples = evaluate(frame, unframe, clips, stems, active, STEMS, sample_rate=RATE)
    assert [(e.stem_name, e.song) for e in examples.separations] == [
        ("bass", 0),
        ("drums", 0),
        ("vocals", 1),
    ]
    figures: list[tuple[str, list[str]]] = []

    def record(panels, sample_rate, title, path):
        figures.append((title, [label for label, _ in panels]))
        return path

    monkeypatch.setattr(plots, "_figure", record)
    clip_names = [f"clip{i}.wav@{i}.0s" for i in range(len(clips))]
    song_names = ["songs/a@0.0s", "songs/b@8.0s"]
    written = plots.write_examples(tmp_path, "m", examples, RATE, clip_names, song_names)
    assert {path.name for path in written} == {
        "m-reconstruction.png",
        "m-original.wav",
        "m-reconstruction.wav",
        *(f"m-separation-{stem}.png" for stem in STEMS),
        *(f"m-{stem}.wav" for stem in STEMS),
        *(f"m-separated-{stem}.wav" for stem in STEMS),
        "m-mixture.wav",
        "m-mixture-vocals.wav",
    }
    titles = [title for title, _ in figures]
    assert titles[0] == f"m: reconstruction of clip0.wav@0.0s, {SAMPLES / RATE:.2f} s"
    assert titles[1:] == [
        "m: oracle separation of bass from songs/a@0.0s",
        "m: oracle separation of drums from songs/a@0.0s",
        "m: oracle separation of vocals from songs/b@8.0s",
    ]


def test_plot_files_are_pngs_with_a_mel_axis(signals, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    clips, _, _ = signals
    _, examples = evaluate(frame, unframe, clips[:1], sample_rate=RATE)
    (png, *_) = plots.write_examples(tmp_path, "m", examples, RATE, ["tone.wav@2.0s"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "m-original.wav",
        "m-reconstruction.png",
        "m-reconstruction.wav",
    ]  # and no temporary file left


def test_table_says_why_rows_show_a_dash(signals, capsys) -> None:
    from lincae_cli.cli.eval_table import print_table
    from lincae_cli.eval.linearity import HOMOGENEITY_GAINS

    clips, _, _ = signals
    metrics, _ = evaluate(frame, unframe, clips[:1], stem_names=STEMS, sample_rate=RATE)
    counts = {"clips": 1, "pairs": 0, "song_segments": 0, "active_stems": dict.fromkeys(STEMS, 0)}
    result = {"name": "m", "metrics": metrics, "counts": counts, "segment_seconds": 1.0}
    print_table([{**result, "stem_names": list(STEMS)}], HOMOGENEITY_GAINS)
    output = " ".join(capsys.readouterr().out.split())  # the note wraps on narrow terminals
    assert "│ — │" in output
    assert output.endswith(
        "— = no data: pairs need 2 or more clips (song mixtures count too; found 1); stems and "
        "separation need song folders of stems (song/{bass,drums,other,vocals}.*); none found."
    )


def test_require_matplotlib_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(LincaeError, match=r"lincae\[plots\]"):
        plots.require_matplotlib()


def test_eval_cli_with_a_tiny_model(tmp_path: Path) -> None:
    write_stems(tmp_path)
    torch.manual_seed(0)
    model_path = save_model(
        ConsistencyAutoencoder(preset("tiny")), tmp_path / "tiny.safetensors", "tiny"
    )
    try:
        import matplotlib  # noqa: F401

        plot_args = ["--plots", str(tmp_path / "plots")]
    except ImportError:
        plot_args = []
    command = [sys.executable, "-m", "lincae_cli.cli.app", "eval", "--model", str(model_path)]
    command += ["--seconds", "0.3", "--max-clips", "2", "--json", "--quiet", *plot_args]
    command += [str(tmp_path / "stems"), str(tmp_path / "clips")]
    # One thread: a tiny model gains nothing from more, and a busy machine makes them spin.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = checked(done.stdout)  # the --json schema of every command
    assert report["command"] == "eval" and report["status"] == "ok"
    (result,) = report["models"]
    assert result["counts"]["clips"] == 3 and result["counts"]["song_segments"] == 2
    keys = {
        "recon_snr_db",
        "recon_si_sdr_db",
        "recon_mss",
        "dec_additivity_mss_pairs",
        "enc_additivity_rel_l2_pairs",
        "additivity_ratio_pairs",
        "dec_additivity_mss_stems",
        "enc_additivity_rel_l2_stems",
        "additivity_ratio_stems",
        "separation_mss",
        "separation_si_sdr_db",
        "separation_ratio",
        *(f"ref_{key}" for key in REFERENCE_KEYS),
    }
    for gain in ("a0.25", "a0.5", "a2"):
        keys |= {f"dec_homogeneity_mss_{gain}", f"enc_homogeneity_rel_l2_{gain}"}
        keys.add(f"homogeneity_ratio_{gain}")
    for stem in STEMS:
        keys |= {f"separation_mss_{stem}", f"separation_si_sdr_db_{stem}"}
        keys.add(f"separation_ratio_{stem}")
    keys |= {
        AFFINE_PREFIX + key
        for key in keys
        if "homogeneity" in key or "additivity" in key or "separation" in key
    }
    level = {
        f"level_recon_{kind}_db{worst}" for kind in ("rms", "loudness") for worst in ("", "_worst")
    }
    level |= {f"level_gain_db_a{gain:g}" for gain in LEVEL_GAINS}
    level |= {"level_mix_db_pairs", "level_mix_db_stems"}
    keys |= level | {RESTORED_PREFIX + key for key in (*level, "recon_mss", "recon_snr_db")}
    assert set(result["metrics"]) == keys
    # 0.3-s segments are too short for a BS.1770 loudness: those values are null.
    measured = {key: value for key, value in result["metrics"].items() if "loudness" not in key}
    assert all(isinstance(value, float) for value in measured.values())
    # The affine scores are measured with the model's silence latent, and the default the
    # measurement favours is reported beside the model's own (false: not recorded as true).
    metrics = result["metrics"]
    assert metrics["affine_enc_additivity_rel_l2_stems"] != metrics["enc_additivity_rel_l2_stems"]
    assert result["affine_default"] is False
    assert isinstance(result["affine_recommended"], bool)
    assert result["restore_loudness_default"] is False
    assert result["restore_loudness_recommended"] in (True, False, None)
    if plot_args:
        label = plots.file_label(str(model_path))
        written = {path.name for path in (tmp_path / "plots").iterdir()}
        assert f"{label}-reconstruction.png" in written
        assert {f"{label}-separation-{stem}.png" for stem in STEMS} <= written
        wavs = ("original", "reconstruction", "mixture", "vocals", "separated-vocals")
        assert {f"{label}-{name}.wav" for name in wavs} <= written
