"""Pack the recipe data into a small training pack that travels with the code, and unpack it.

A GPU loan takes the working tree and nothing else (at most 64 MiB in all, no network), so the
training audio goes as Ogg Opus excerpts of the recipe data (docs/data.md, "Training pack for
a GPU loan"):
every music track and every song contributes, as short excerpts, at a bit rate chosen with
`codec-loss`. The held-out split stays here for `lincae eval`; a few short held-out excerpts
travel along only so that the run's validation records show progress. Usage::

    python -m lincae_training.recipes.pack [build] [--data DIR] [--output DIR] [--kbps 32]
    python -m lincae_training.recipes.pack unpack PACK FOLDER [--workers N]
    python -m lincae_training.recipes.pack codec-loss [--data DIR] [--kbps 16 24 32 48]

`build` gives the same bytes on a rerun with the same libraries (the Ogg stream serial number,
random in libsndfile, is set from the file name); `unpack` decodes every file to 44.1 kHz
16-bit WAV, writes each song's mixture as the sum of its decoded stems, checks the files'
SHA-256 against the manifest and says whether the decoded audio matches the build's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from lincae_cli.errors import LincaeError

from .dataset_io import DATA_ROOT, SAMPLE_RATE, TRAIN, VALID
from .opus import OPUS_RATE, decode_opus, encode_opus, to_pcm16

PACK_FORMAT = "lincae training pack"
PACK_VERSION = 1
MANIFEST = "manifest.json"
# render_stems.py's names; not imported from there, which needs pretty_midi (absent on a loan).
STEMS = ("bass", "drums", "other", "vocals")
MIXTURE = "mixture"
DEFAULT_OUTPUT = DATA_ROOT / "pack"


@dataclass(frozen=True)
class PackSettings:
    """What goes into a pack. The defaults give 2.2 h in 32.7 MiB (docs/data.md)."""

    kbps: int = 32
    music_seconds: float = 64.0  # per training track, cut into pieces spread over the track
    piece_seconds: float = 16.0
    stem_seconds: float = 8.0  # per training song, the same window of its four stems
    valid_music_seconds: float = 8.0  # one excerpt per held-out track (validation records only)
    valid_songs: int = 8  # held-out songs with one excerpt each (validation records only)
    max_mib: float = 36.0


@dataclass(frozen=True)
class Excerpt:
    """One file of the pack: `path` (in the pack, `.opus`) holds `frames` samples of `source`
    (relative to the data root) from `start`, at 44.1 kHz."""

    path: str
    source: str
    start: int
    frames: int


# -- planning ------------------------------------------------------------------------------


def spread_windows(frames: int, count: int, length: int) -> list[int]:
    """Starts of `count` windows of `length` frames centred at (k + 1/2)/count of `frames`."""
    return [
        min(frames - length, max(0, round((k + 0.5) * frames / count - length / 2)))
        for k in range(count)
    ]


def plan_pack(durations: dict[str, int], settings: PackSettings) -> list[Excerpt]:
    """The pack's files, given the frame counts of the recipe files by path relative to the
    data root (`music/{train,valid}/*.flac`, `stems/{train,valid}/song_*/<stem>.flac`)."""
    excerpts = []
    rate = SAMPLE_RATE
    valid_songs = sorted({p.rsplit("/", 1)[0] for p in durations if p.startswith("stems/valid/")})
    for source in sorted(durations):
        frames = durations[source]
        parts = source.split("/")
        if parts[0] == "music" and parts[1] in (TRAIN, VALID):
            stem = parts[-1].rsplit(".", 1)[0]
            seconds = settings.music_seconds if parts[1] == TRAIN else settings.valid_music_seconds
            piece = settings.piece_seconds if parts[1] == TRAIN else seconds
            length = min(frames, round(piece * rate))
            count = max(1, min(round(seconds / piece), frames // length))
            for k, start in enumerate(spread_windows(frames, count, length)):
                path = f"music/{parts[1]}/{stem}__p{k}.opus"
                excerpts.append(Excerpt(path, source, start, length))
        elif parts[0] == "stems" and len(parts) == 4 and parts[3][: -len(".flac")] in STEMS:
            song = "/".join(parts[:3])
            if parts[1] == VALID and song not in valid_songs[: settings.valid_songs]:
                continue
            # Every stem of a song has the mixture's length: the same window in each.
            length = min(frames, round(settings.stem_seconds * rate))
            (start,) = spread_windows(frames, 1, length)
            excerpts.append(Excerpt(f"{song}/{parts[3][:-5]}.opus", source, start, length))
    return excerpts


def recipe_durations(data_root: Path) -> dict[str, int]:
    """Frame counts of the recipe files under `data_root` (both recipes' layouts)."""
    found = sorted(data_root.glob("music/*/*.flac")) + sorted(data_root.glob("stems/*/*/*.flac"))
    if not found:
        raise LincaeError(
            f"{data_root}: no recipe data (music/ or stems/); build it first (docs/data.md)"
        )
    return {str(p.relative_to(data_root)): sf.info(str(p)).frames for p in found}


# -- build ---------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _encode_group(task: tuple[Path, list[Excerpt], float]) -> list[dict]:
    """Encode excerpts that form one unit (a music piece, or the stems of a song); returns
    their manifest entries, plus the song's mixture (the sum of the decoded stems)."""
    data_root, excerpts, kbps = task
    entries, decoded = [], []
    for excerpt in excerpts:
        audio, _ = sf.read(
            str(data_root / excerpt.source),
            start=excerpt.start,
            frames=excerpt.frames,
            dtype="float32",
        )
        data = encode_opus(audio, kbps, excerpt.path)
        decoded.append(decode_opus(data))
        entries.append(
            {
                **asdict(excerpt),
                "bytes": len(data),
                "sha256": sha256_hex(data),
                "pcm_sha256": sha256_hex(to_pcm16(decoded[-1]).tobytes()),
                "_data": data,
            }
        )
    if excerpts[0].path.startswith("stems/"):
        mixture = np.sum(decoded, axis=0)
        path = f"{excerpts[0].path.rsplit('/', 1)[0]}/{MIXTURE}.wav"
        entries.append({"path": path, "pcm_sha256": sha256_hex(to_pcm16(mixture).tobytes())})
    return entries


def _unit(path: str) -> str:
    """What a pack file is coded with: its song folder (stems), else itself (music)."""
    return path.rsplit("/", 1)[0] if path.startswith("stems/") else path


def _groups(excerpts: list[Excerpt]) -> list[list[Excerpt]]:
    by_unit: dict[str, list[Excerpt]] = {}
    for excerpt in excerpts:
        by_unit.setdefault(_unit(excerpt.path), []).append(excerpt)
    return list(by_unit.values())


def build_pack(data_root: Path, output: Path, settings: PackSettings, workers: int = 2) -> dict:
    """Write the pack to `output` (replacing it whole, never partially) and return its
    manifest; a LincaeError, with nothing written, when it exceeds `settings.max_mib`."""
    excerpts = plan_pack(recipe_durations(data_root), settings)
    tasks = [(data_root, group, settings.kbps) for group in _groups(excerpts)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        entries = [e for group in pool.map(_encode_group, tasks) for e in group]
    files = sorted((e for e in entries if "sha256" in e), key=lambda e: e["path"])
    total = sum(e["bytes"] for e in files)
    if total > settings.max_mib * 2**20:
        raise LincaeError(
            f"the pack would hold {total / 2**20:.1f} MiB, over --max-mib {settings.max_mib:g}; "
            "lower --kbps or the seconds per track and song"
        )
    staging = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for entry in files:
            target = staging / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(entry.pop("_data"))
        manifest = pack_manifest(files, entries, settings)
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        (staging / MANIFEST).write_text(text, "utf-8")
        _replace_folder(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def pack_manifest(files: list[dict], entries: list[dict], settings: PackSettings) -> dict:
    mixtures = sorted((e for e in entries if "sha256" not in e), key=lambda e: e["path"])
    seconds = {TRAIN: 0.0, VALID: 0.0}
    for entry in files:
        seconds[entry["path"].split("/")[1]] += entry["frames"] / SAMPLE_RATE
    total_bytes = sum(e["bytes"] for e in files)
    return {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "codec": {
            "container": "Ogg",
            "codec": "Opus",
            "sample_rate": OPUS_RATE,
            "kbps_asked": settings.kbps,
            "kbps_measured": round(total_bytes * 8 / sum(seconds.values()) / 1000, 1),
            "libsndfile": sf.__libsndfile_version__,
            "decoded_as": "mono 44.1 kHz int16 (soxr HQ); a song's mixture is the sum of its "
            "decoded stems",
        },
        "settings": asdict(settings),
        "hours": {split: round(value / 3600, 3) for split, value in seconds.items()},
        "bytes": total_bytes,
        "files": files,
        "mixtures": mixtures,
        # Identity of the pack (its files) and of what it decodes to (the WAVs unpack writes).
        "pack_sha256": sha256_hex("".join(f"{e['path']} {e['sha256']}\n" for e in files).encode()),
        "audio_sha256": sha256_hex(
            "".join(f"{e['path']} {e['pcm_sha256']}\n" for e in files + mixtures).encode()
        ),
    }


def _replace_folder(staging: Path, target: Path) -> None:
    """Move the complete `staging` folder to `target`, replacing what was there."""
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


# -- unpack --------------------------------------------------------------------------------


def read_manifest(pack: Path) -> dict:
    try:
        manifest = json.loads((pack / MANIFEST).read_text())
    except FileNotFoundError:
        raise LincaeError(f"{pack}: not a training pack (no {MANIFEST})") from None
    except ValueError as exc:
        raise LincaeError(f"{pack}/{MANIFEST}: unreadable ({exc})") from None
    if manifest.get("format") != PACK_FORMAT or manifest.get("version") != PACK_VERSION:
        raise LincaeError(
            f"{pack}: not a version-{PACK_VERSION} training pack "
            f"(format {manifest.get('format')!r}, version {manifest.get('version')!r})"
        )
    return manifest


def _decode_group(task: tuple[Path, Path, list[dict]]) -> list[tuple[str, str]]:
    """Decode the files of one unit to WAV under `out`; returns (path, pcm_sha256) pairs, the
    song's mixture included."""
    pack, out, entries = task
    written, decoded = [], []
    for entry in entries:
        data = (pack / entry["path"]).read_bytes()
        if sha256_hex(data) != entry["sha256"]:
            raise LincaeError(
                f"{pack / entry['path']}: damaged (SHA-256 differs from the manifest)"
            )
        decoded.append(decode_opus(data))
        written.append((entry["path"][: -len(".opus")] + ".wav", to_pcm16(decoded[-1])))
    if entries[0]["path"].startswith("stems/"):
        path = f"{entries[0]['path'].rsplit('/', 1)[0]}/{MIXTURE}.wav"
        written.append((path, to_pcm16(np.sum(decoded, axis=0))))
    for path, pcm in written:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out / path), pcm, SAMPLE_RATE, subtype="PCM_16")
    return [(path, sha256_hex(pcm.tobytes())) for path, pcm in written]


def unpack(pack: Path, output: Path, workers: int | None = None) -> dict:
    """Decode `pack` into `output` (`music/...`, `stems/...`: pass both to `lincae train
    --data`), replacing it whole; returns a report: files, hours, and whether the decoded
    audio equals the build's (`identical` of `files` WAVs, the mixtures counted)."""
    manifest = read_manifest(pack)
    units: dict[str, list[dict]] = {}
    for entry in manifest["files"]:
        units.setdefault(_unit(entry["path"]), []).append(entry)
    staging = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    workers = workers or os.cpu_count() or 1
    try:
        with ProcessPoolExecutor(workers) as pool:
            tasks = [(pack, staging, group) for group in units.values()]
            hashes = dict(pair for group in pool.map(_decode_group, tasks) for pair in group)
        expected = {e["path"].removesuffix(".opus"): e["pcm_sha256"] for e in manifest["files"]}
        expected.update(
            {e["path"].removesuffix(".wav"): e["pcm_sha256"] for e in manifest["mixtures"]}
        )
        identical = sum(
            expected.get(path.removesuffix(".wav")) == pcm for path, pcm in hashes.items()
        )
        report = {
            "pack_sha256": manifest["pack_sha256"],
            "files": len(hashes),
            "identical": identical,
            "hours": manifest["hours"],
        }
        (staging / "unpacked.json").write_text(json.dumps(report, indent=1) + "\n")
        _replace_folder(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


# -- codec loss ----------------------------------------------------------------------------


def _round_trip(task: tuple[Path, Path, float | None]) -> int:
    """Write `source` after an Opus round trip at `kbps` (None: 48 kHz resampling only) to
    `target`; returns the Opus bytes (0 without a codec)."""
    source, target, kbps = task
    audio, rate = sf.read(str(source), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if kbps is None:
        up = soxr.resample(audio, rate, OPUS_RATE, quality="VHQ")
        decoded, size = soxr.resample(up, OPUS_RATE, rate, quality="HQ"), 0
    else:
        data = encode_opus(audio, kbps, str(source))
        decoded, size = decode_opus(data), len(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Under the source's name (eval's segment names include it); 24-bit FLAC adds nothing MSS
    # can see (its noise is far below the 1e-4 magnitude floor).
    sf.write(str(target), np.clip(decoded, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_24")
    return size


def codec_loss(
    folders: Sequence[Path],
    rates: Sequence[float | None],
    seconds: float,
    max_clips: int,
    work: Path,
    workers: int = 2,
) -> list[dict]:
    """Reconstruction MSS of an Opus round trip at each rate in `rates` (kbit/s; None: the
    48 kHz resampling alone) on the segments `lincae eval --seconds S --max-clips N` cuts from
    `folders`: the distance a model that rebuilt its training audio exactly would still be
    from the originals. Song segments are scored on the sum of the round-tripped stems."""
    import torch

    from lincae_cli.eval.datasets import clip_layout, discover, load_eval_set
    from lincae_cli.eval.metrics import aligned, mss
    from lincae_cli.nn.config import PUBLISHED

    layout = clip_layout(seconds, PUBLISHED)  # every preset shares the frontend and latent hop
    original = load_eval_set(discover(folders), layout, max_clips)
    files = [
        (index, path)
        for index, folder in enumerate(folders)
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in (".flac", ".wav") and path.stem != MIXTURE
    ]
    audio_seconds = sum(sf.info(str(path)).duration for _, path in files)
    rows = []
    for kbps in rates:
        mirror = work / f"kbps-{kbps}"
        roots = [mirror / f"{index}" / folder.name for index, folder in enumerate(folders)]
        tasks = [(path, roots[i] / path.relative_to(folders[i]), kbps) for i, path in files]
        with ProcessPoolExecutor(workers) as pool:
            sizes = list(pool.map(_round_trip, tasks))
        coded = load_eval_set(discover(roots), layout, max_clips)
        if coded.clip_names != original.clip_names or coded.segment_names != original.segment_names:
            raise LincaeError("the round trip changed which segments are selected; compare by hand")
        estimate = torch.cat([coded.clips, coded.stems.sum(1)])
        reference = torch.cat([original.clips, original.stems.sum(1)])
        values = mss(*aligned(estimate, reference, layout.margin))
        clips = original.clips.shape[0]
        rows.append(
            {
                "kbps": kbps,
                "kbps_measured": round(sum(sizes) * 8 / audio_seconds / 1000, 1) if kbps else 0,
                "mss": round(float(values.double().mean()), 4),
                "mss_clips": round(float(values[:clips].double().mean()), 4),
                "mss_songs": round(float(values[clips:].double().mean()), 4),
                "segments": int(values.shape[0]),
            }
        )
        shutil.rmtree(mirror, ignore_errors=True)
    return rows


# -- command line --------------------------------------------------------------------------

COMMANDS = ("build", "unpack", "codec-loss")
SETTING_HELP = {
    "kbps": "Opus bit rate in kbit/s (mono)",
    "music_seconds": "seconds taken from each training track",
    "piece_seconds": "...in pieces of this length, spread over the track",
    "stem_seconds": "seconds taken from each training song (the same window of each stem)",
    "valid_music_seconds": "seconds from each held-out track, for validation records",
    "valid_songs": "held-out songs with one excerpt each, for validation records",
    "max_mib": "fail rather than write a larger pack",
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name if __spec__ else 'pack'}",
        description=__doc__.split("\n\n")[0],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = PackSettings()
    build = commands.add_parser("build", help="build the pack (the default command)")
    build.add_argument("--data", type=Path, default=DATA_ROOT, help="recipe data (%(default)s)")
    build.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="(%(default)s)")
    for key, value in asdict(defaults).items():
        build.add_argument(
            f"--{key.replace('_', '-')}",
            type=type(value),
            default=value,
            help=f"{SETTING_HELP[key]} (default: %(default)s)",
        )
    build.add_argument("--workers", type=int, default=2, help="encoding processes (2)")
    unpack_parser = commands.add_parser("unpack", help="decode a pack to WAV folders")
    unpack_parser.add_argument("pack", type=Path)
    unpack_parser.add_argument("output", type=Path)
    unpack_parser.add_argument("--workers", type=int, default=None, help="(default: all cores)")
    loss = commands.add_parser("codec-loss", help="measure the codec's MSS on held-out data")
    loss.add_argument("--data", type=Path, default=DATA_ROOT, help="recipe data (%(default)s)")
    loss.add_argument("--kbps", type=float, nargs="+", default=[16, 24, 32, 48, 64])
    loss.add_argument("--seconds", type=float, default=3.0, help="as lincae eval (3)")
    loss.add_argument("--max-clips", type=int, default=10, help="as lincae eval (10)")
    loss.add_argument("--json", type=Path, default=None, help="also write the rows here")
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["build", *argv]
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "build":
            names = asdict(PackSettings()).keys()
            settings = PackSettings(**{key: getattr(args, key) for key in names})
            manifest = build_pack(args.data.expanduser(), args.output, settings, args.workers)
            print(
                f"{len(manifest['files'])} files, {manifest['bytes'] / 2**20:.1f} MiB, "
                f"train {manifest['hours'][TRAIN]:.2f} h, valid {manifest['hours'][VALID]:.2f} h, "
                f"{manifest['codec']['kbps_measured']} kbit/s; pack {manifest['pack_sha256'][:16]} "
                f"in {args.output}"
            )
        elif args.command == "unpack":
            report = unpack(args.pack, args.output, args.workers)
            print(
                f"{report['files']} WAV files in {args.output}, decoded audio identical to the "
                f"build for {report['identical']}/{report['files']}"
            )
        else:
            data = args.data.expanduser()
            folders = [data / "stems" / VALID, data / "music" / VALID]
            with tempfile.TemporaryDirectory(prefix="lincae-codec-loss-") as work:
                rows = codec_loss(
                    folders, [None, *args.kbps], args.seconds, args.max_clips, Path(work)
                )
            for row in rows:
                print(json.dumps(row))
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
    except LincaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
