"""`LatentDataset` (lincae_cli/data.py): crops equal the files' latents at their offsets, from a
manifest or a folder of .lat / .npy files, in DataLoader workers, reading only the crop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import lincae_cli
from lincae_cli.batch import Inference, encode_files
from lincae_cli.batch.catalogue import merge_manifest
from lincae_cli.data import LatentDataset
from lincae_cli.engine.inference import EngineOptions
from lincae_cli.errors import LincaeError
from lincae_cli.latents.latfile import LatentFile, LatentMeta, read_lat, write_lat
from tests.conftest import write_tone

HOP = 4096


def make_lat(path: Path, channels: int, frames: int, seed: int, dtype: str = "float32") -> Path:
    """A .lat of seeded random latents ``[channels, 64, frames]`` (no model needed)."""
    latents = torch.from_numpy(
        np.random.default_rng(seed).standard_normal((channels, 64, frames)).astype(np.float32)
    )
    meta = LatentMeta(
        model_name="synthetic",
        model_sha256="0" * 64,
        scale_factor=1.0,
        model_sample_rate=44100,
        source_sample_rate=44100,
        num_samples=frames * HOP,
        channels=channels,
        latent_rate_hz=44100 / HOP,
        latent_hop_samples=HOP,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_lat(path, LatentFile(latents, meta), dtype=dtype)
    return path


def _stored(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_lat(path).latents)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_lat(tmp_path / "lat" / "a.lat", 2, 23, seed=1)
    make_lat(tmp_path / "lat" / "sub" / "b.lat", 1, 9, seed=2, dtype="float16")
    make_lat(tmp_path / "lat" / "short.lat", 1, 3, seed=3)
    np.save(tmp_path / "lat" / "c.npy", np.arange(64 * 12, dtype=np.float32).reshape(64, 12))
    (tmp_path / "lat" / ".hidden").mkdir()
    make_lat(tmp_path / "lat" / ".hidden" / "x.lat", 1, 50, seed=4)
    return tmp_path / "lat"


def test_sequential_crops_are_the_files_latents_at_their_offsets(folder: Path) -> None:
    dataset = LatentDataset(folder, 4, mode="sequential", hop_frames=3)
    assert [source.path.name for source in dataset.sources] == [
        "a.lat",
        "c.npy",
        "short.lat",
        "b.lat",
    ]
    seen = []
    for item in dataset:
        path = Path(item["path"])
        start, channel = item["start_frame"], item["channel"]
        if path.suffix == ".npy":
            expected = torch.from_numpy(np.load(path)[:, start : start + 4])
        else:
            expected = _stored(path)[channel, :, start : start + 4]
        assert item["latents"].dtype == torch.float32 and item["latents"].shape == (64, 4)
        assert torch.equal(item["latents"], expected)
        assert item["valid_frames"] == 4 and item["gain_db"] == 0.0
        seen.append((path.name, channel, start))
    # 23 frames, hop 3: starts 0..18 on each of two channels; short.lat (3 frames) is skipped.
    assert seen[:8] == [("a.lat", 0, s) for s in range(0, 20, 3)] + [("a.lat", 1, 0)]
    assert ("c.npy", 0, 6) in seen and ("b.lat", 0, 3) in seen
    assert not any(name == "short.lat" for name, _, _ in seen) and len(seen) == 14 + 3 + 2


def test_random_crops_gains_and_padding(folder: Path) -> None:
    dataset = LatentDataset(folder / "a.lat", 5, gain_db=(-12.0, 6.0), seed=7)
    assert len(dataset) == 2 * (23 // 5)  # longer files give more items
    first = [dataset[i] for i in range(len(dataset))]
    again = [dataset[i] for i in range(len(dataset))]
    dataset.set_epoch(1)
    other = [dataset[i] for i in range(len(dataset))]
    assert [i["start_frame"] for i in first] == [i["start_frame"] for i in again]
    assert [i["start_frame"] for i in first] != [i["start_frame"] for i in other]
    stored = _stored(folder / "a.lat")
    for item in first + other:
        start, gain = item["start_frame"], item["gain_db"]
        assert 0 <= start <= 23 - 5 and -12.0 <= gain <= 6.0
        expected = stored[item["channel"], :, start : start + 5] * 10 ** (gain / 20)
        torch.testing.assert_close(item["latents"], expected, rtol=1e-6, atol=1e-6)

    padded = LatentDataset(folder / "short.lat", 5, pad=True)
    (item,) = list(padded)
    assert item["valid_frames"] == 3 and item["start_frame"] == 0
    assert torch.equal(item["latents"][:, :3], _stored(folder / "short.lat")[0])
    assert not item["latents"][:, 3:].any()


def test_items_read_only_the_bytes_of_their_crop(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = LatentDataset([folder / "sub" / "b.lat"], 4, mode="sequential")  # float16
    dataset[0]  # opens the file and reads its header
    reads: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: reads.append(n) or real_pread(fd, n, at))
    item = dataset[1]
    assert sum(reads) == 64 * 4 * 2 and len(reads) == 64  # one row of 4 float16 per channel
    assert torch.equal(item["latents"], _stored(folder / "sub" / "b.lat")[0, :, 4:8])


def test_a_catalogue_manifest_in_dataloader_workers(tmp_path: Path, tiny_model_path: Path) -> None:
    write_tone(tmp_path / "music" / "a.wav", 1.0, channels=2, seed=1)
    write_tone(tmp_path / "music" / "b.wav", 0.7, seed=2)
    inference = Inference(str(tiny_model_path), EngineOptions(precision="fp32", chunk_seconds=0.5))
    encode_files([tmp_path / "music"], str(tmp_path / "lat"), inference=inference, manifest=True)
    assert merge_manifest(tmp_path / "lat").complete

    dataset = lincae_cli.LatentDataset(tmp_path / "lat", 3, mode="sequential")
    assert [s.source for s in dataset.sources] == [
        str(tmp_path / "music" / "a.wav"),
        str(tmp_path / "music" / "b.wav"),
    ]
    alone = list(DataLoader(dataset, batch_size=4, num_workers=0))
    workers = list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert len(alone) == len(workers) and sum(len(b["source"]) for b in alone) == len(dataset)
    for one, other in zip(alone, workers, strict=True):
        assert torch.equal(one["latents"], other["latents"])
        assert one["source"] == other["source"] and torch.equal(one["channel"], other["channel"])
    first = alone[0]
    lat = read_lat(tmp_path / "lat" / "a.lat")
    assert first["latents"].shape == (4, lat.latent_channels, 3)
    assert np.array_equal(first["latents"][0], lat.latents[0, :, 0:3])
    assert np.array_equal(first["latents"][1], lat.latents[0, :, 3:6])

    # A file rewritten since the manifest was merged is an error that names it.
    make_lat(tmp_path / "lat" / "b.lat", 1, 2, seed=0)
    stale = LatentDataset(tmp_path / "lat" / "manifest.jsonl", 3, mode="sequential")
    with pytest.raises(LincaeError, match="b.lat: holds 1 channel.*the manifest says"):
        list(stale)


def test_bad_arguments_and_files(tmp_path: Path) -> None:
    with pytest.raises(LincaeError, match="crop_frames"):
        LatentDataset(tmp_path, 0)
    with pytest.raises(LincaeError, match="no such file"):
        LatentDataset(tmp_path / "missing", 4)
    (tmp_path / "bad.lat").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(LincaeError, match="bad.lat"):
        LatentDataset(tmp_path / "bad.lat", 4)
    np.save(tmp_path / "ints.npy", np.zeros((64, 8), np.int16))
    with pytest.raises(LincaeError, match="C-ordered floats"):
        LatentDataset(tmp_path / "ints.npy", 4)


def test_the_package_stays_light_until_the_dataset_is_used() -> None:
    code = (
        "import sys, lincae_cli, lincae_cli.batch\n"
        "assert 'torch' not in sys.modules\n"
        "assert lincae_cli.LatentDataset.__module__ == 'lincae_cli.data'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
