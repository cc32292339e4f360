"""Model registry, Hub downloads and caches, against a fake Hub on 127.0.0.1 (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from lincae_cli.errors import LincaeError
from lincae_cli.hub import download
from lincae_cli.hub.cache import atomic_output, atomic_write_bytes, lincae_cache_dir
from lincae_cli.hub.converted import convert_local_files, identify
from lincae_cli.hub.download import fetch_files, hub_settings, resolve_model_file
from lincae_cli.hub.registry import (
    DEFAULT_MODEL,
    REGISTRY,
    ModelSource,
    list_models,
    parse_model_spec,
)
from tests.hubserver import (
    FakeHub,
    closed_port_url,
    commit_hash_for,
    hub_environment,
    isolate_hub_environment,
    skip_hub_retry_sleeps,
)

REPO = "lincae-tests/tiny-models"
FILENAME = "tiny/model.safetensors"
SPEC = f"hf://{REPO}/{FILENAME}"
PAYLOAD = b"not really safetensors, the download layer does not look inside" * 50
UNRESOLVABLE = "http://lincae-no-such-host.invalid"  # .invalid never resolves (RFC 6761)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_file(REPO, FILENAME, PAYLOAD)
        isolate_hub_environment(monkeypatch, tmp_path, fake.url)
        yield fake


def _hf_cache_files(tmp_path: Path) -> list[Path]:
    return [path for path in (tmp_path / "hf-home" / "hub").rglob("*") if path.is_file()]


# -- downloads -----------------------------------------------------------------------------


def test_first_download_goes_to_hf_home_and_second_call_reuses_it(
    hub: FakeHub, tmp_path: Path
) -> None:
    first = resolve_model_file(SPEC)
    assert first.read_bytes() == PAYLOAD
    assert tmp_path / "hf-home" / "hub" in first.parents
    assert hub.count("GET", "model.safetensors") == 0  # the bytes come from the CDN
    assert hub.count("GET") == 1

    second = resolve_model_file(SPEC)
    assert second == first
    assert hub.count("GET") == 1  # only a metadata HEAD, no new download


def test_revision_pinned_to_a_commit_needs_no_request_once_cached(hub: FakeHub) -> None:
    spec = f"{SPEC}@{commit_hash_for(REPO)}"
    assert resolve_model_file(spec).read_bytes() == PAYLOAD
    requests_after_download = hub.count()
    assert resolve_model_file(spec).read_bytes() == PAYLOAD
    assert hub.count() == requests_after_download


def test_small_files_are_served_without_redirect(hub: FakeHub) -> None:
    hub.add_file(REPO, "config.yaml", b"channels: 4\n")
    source = ModelSource(
        name="t", kind="lincae", repo_id=REPO, filenames=("config.yaml",), revision="main"
    )
    assert fetch_files(source)["config.yaml"].read_bytes() == b"channels: 4\n"
    assert hub.count("GET", "config.yaml") == 1


def test_offline_mode_uses_the_cached_copy(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    online = resolve_model_file(SPEC)
    requests_online = hub.count()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_file(SPEC) == online
    assert hub.count() == requests_online


def test_offline_mode_without_cached_copy_says_how_to_fix_it(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LincaeError) as caught:
        resolve_model_file(SPEC)
    message = str(caught.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert str(tmp_path / "hf-home" / "hub") in message
    assert f"lincae models pull {SPEC}" in message
    assert hub.count() == 0


def test_missing_file_names_repo_file_and_revision(hub: FakeHub) -> None:
    hub.missing.add(FILENAME)
    with pytest.raises(LincaeError, match="was not found") as caught:
        resolve_model_file(SPEC)
    message = str(caught.value)
    assert REPO in message and FILENAME in message and "revision 'main'" in message


def test_missing_repo_and_missing_revision_are_named(hub: FakeHub) -> None:
    with pytest.raises(LincaeError, match="Hub repo 'nobody/nothing' .* was not found"):
        resolve_model_file("hf://nobody/nothing/model.safetensors")
    with pytest.raises(LincaeError, match=f"revision 'v9' does not exist in Hub repo '{REPO}'"):
        resolve_model_file(f"{SPEC}@v9")


def test_corrupted_download_is_rejected_and_removed(hub: FakeHub, tmp_path: Path) -> None:
    expected = hashlib.sha256(PAYLOAD).hexdigest()
    source = ModelSource(
        name="tiny-checked",
        kind="lincae",
        repo_id=REPO,
        filenames=(FILENAME,),
        revision="main",
        sha256={FILENAME: expected},
    )
    hub.corrupt.add(FILENAME)
    with pytest.raises(LincaeError, match="checksum mismatch") as caught:
        resolve_model_file(source)
    message = str(caught.value)
    assert expected in message and "removed" in message and "tiny-checked" in message
    assert all(path.read_bytes() != hub_corrupted(PAYLOAD) for path in _hf_cache_files(tmp_path))
    assert not list((tmp_path / "hf-home" / "hub").rglob("model.safetensors"))

    hub.corrupt.clear()
    assert resolve_model_file(source).read_bytes() == PAYLOAD


def hub_corrupted(data: bytes) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:]


def _hub_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings huggingface_hub logged (printed on stderr in a program without logging set up)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("huggingface_hub") and record.levelno >= logging.WARNING
    ]


def test_unreachable_hub_names_the_endpoint_and_retries_quietly(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = closed_port_url()
    isolate_hub_environment(monkeypatch, tmp_path, endpoint)
    slept = skip_hub_retry_sleeps(monkeypatch)
    with caplog.at_level(logging.INFO, logger="lincae_cli"), pytest.raises(LincaeError) as caught:
        resolve_model_file(SPEC)
    assert str(caught.value) == (
        f"could not reach the Hugging Face Hub at {endpoint} to download model '{SPEC}'; "
        f"check your network or HF_ENDPOINT; to work offline, download "
        f"{endpoint}/{REPO}/resolve/main/{FILENAME} on a machine that is online, then pass it "
        "with --model PATH; set HF_HUB_OFFLINE=1 to use only the models already on this machine"
    )
    assert slept  # a refused connection may be transient: huggingface_hub retried
    assert hub.count() == 0
    # The retries are INFO messages of lincae (shown by --verbose), not warnings.
    assert _hub_warnings(caplog) == []
    retries = [r for r in caplog.records if r.name == "lincae_cli.hub.network"]
    assert any("Retrying in" in r.getMessage() for r in retries)
    assert all(r.levelno == logging.INFO for r in retries)


def _unresolvable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.lower(), raising=False)
    isolate_hub_environment(monkeypatch, tmp_path, UNRESOLVABLE)
    return UNRESOLVABLE


@pytest.mark.parametrize("name", ["lin-cae", SPEC])
def test_unresolvable_hub_host_fails_at_once_with_the_offline_routes(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _unresolvable_hub(monkeypatch, tmp_path)
    slept = skip_hub_retry_sleeps(monkeypatch)
    with pytest.raises(LincaeError) as caught:
        resolve_model_file(name)
    message = str(caught.value)
    assert message.startswith(
        "cannot reach the Hugging Face Hub: its host 'lincae-no-such-host.invalid' "
        f"({UNRESOLVABLE}) cannot be resolved"
    )
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message
    route = "lincae models convert FILE... --name lin-cae" if name == "lin-cae" else "--model PATH"
    assert route in message
    assert slept == []  # no retries: no name, no point


def test_unresolvable_hub_host_still_serves_the_cache(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Failing fast must not cost the cached copy (downloaded when the Hub was reachable)."""
    cached = resolve_model_file(SPEC)
    monkeypatch.setenv("HF_ENDPOINT", _unresolvable_hub(monkeypatch, tmp_path / "elsewhere"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    slept = skip_hub_retry_sleeps(monkeypatch)
    assert resolve_model_file(SPEC) == cached
    assert slept == []


def test_models_pull_offline_prints_one_line(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "HF_HUB_OFFLINE")
    }
    env.update(hub_environment(tmp_path, UNRESOLVABLE))
    command = [sys.executable, "-m", "lincae_cli.cli.app", "models", "pull", "lin-cae"]
    # The timeout only stops a hung run; before the fix this took 23 s and printed 11 lines.
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("lincae: error: cannot reach the Hugging Face Hub")
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_server_errors_are_reported_with_their_status(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_hub_retry_sleeps(monkeypatch)
    hub.status_override = 503
    with pytest.raises(LincaeError, match="answered HTTP 503"):
        resolve_model_file(SPEC)


def test_settings_follow_the_environment_at_call_time(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert hub_settings().endpoint == hub.url
    assert hub_settings().cache_dir == tmp_path / "hf-home" / "hub"
    assert hub_settings().offline is False
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert hub_settings().cache_dir == tmp_path / "elsewhere"
    assert hub_settings().offline is True


# -- published checkpoints and conversion ---------------------------------------------------


class RecordingConverter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, bytes], Path]] = []

    def __call__(self, source: ModelSource, files: dict[str, Path], out_path: Path) -> None:
        self.calls.append((source.name, {k: v.read_bytes() for k, v in files.items()}, out_path))
        out_path.write_bytes(b"converted " + source.name.encode())


@pytest.mark.parametrize("name", ["lin-cae", "music2latent"])
def test_published_checkpoint_is_downloaded_converted_once_and_cached(
    name: str, hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = REGISTRY[name]
    assert source.repo_id is not None
    for filename in source.filenames:
        hub.add_file(source.repo_id, filename, f"contents of {filename}".encode())
    converter = RecordingConverter()

    path = resolve_model_file(name, convert=converter)

    assert path == tmp_path / "lincae-cache" / "models" / f"{name}-main.safetensors"
    assert path.read_bytes() == b"converted " + name.encode()
    assert len(converter.calls) == 1
    _, files, _ = converter.calls[0]
    expected_files = {PurePosixPath(f).name: f"contents of {f}".encode() for f in source.filenames}
    assert files == expected_files
    assert hub.count("GET") == len(source.filenames)
    assert list(path.parent.iterdir()) == [path]  # no partial file left behind

    requests = hub.count()
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    assert resolve_model_file(name, convert=converter) == path
    assert len(converter.calls) == 1
    assert hub.count() == requests


def test_linear_cae_entries_fetch_the_four_files_of_their_hash() -> None:
    source = REGISTRY["lin-cae"]
    assert source.kind == "linear-cae" and source.scale_factor == 33.0
    assert source.filenames == (
        "0a3afbec_weights/autoencoder_inference_model_last.pth",
        "0a3afbec_weights/frontend_kwargs_last.yaml",
        "0a3afbec_weights/generator_kwargs_last.yaml",
        "0a3afbec_weights/diffusion_kwargs_last.yaml",
    )
    assert REGISTRY["m2l"].filenames[0].startswith("1511f18a_weights/")
    assert REGISTRY["lin-cae-2"].scale_factor == 40.0


def test_failed_conversion_leaves_no_file(hub: FakeHub, tmp_path: Path) -> None:
    source = REGISTRY["music2latent"]
    assert source.repo_id is not None
    hub.add_file(source.repo_id, source.filenames[0], b"checkpoint")

    def broken_converter(source: ModelSource, files: dict[str, Path], out_path: Path) -> None:
        out_path.write_bytes(b"half a model")
        raise LincaeError("unexpected checkpoint layout")

    with pytest.raises(LincaeError, match="unexpected checkpoint layout"):
        resolve_model_file("music2latent", convert=broken_converter)
    assert not any((tmp_path / "lincae-cache" / "models").iterdir())


# -- embedded models and local files --------------------------------------------------------


def test_embedded_model_is_used_in_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "lincae-small.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(download, "embedded_weights_dir", lambda: tmp_path)
    assert resolve_model_file("lincae-small") == tmp_path / "lincae-small.safetensors"


def test_missing_embedded_model_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(download, "embedded_weights_dir", lambda: tmp_path)
    with pytest.raises(LincaeError, match="embedded model 'm2l-small' is not in this installation"):
        resolve_model_file("m2l-small")
    monkeypatch.setattr(download, "embedded_weights_dir", lambda: None)
    with pytest.raises(LincaeError, match="embedded model 'lincae-small' is not in this"):
        resolve_model_file(DEFAULT_MODEL)


def test_file_and_directory_specs(tmp_path: Path) -> None:
    model = tmp_path / "mine.safetensors"
    model.write_bytes(b"weights")
    assert resolve_model_file(str(model)) == model
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    assert resolve_model_file(str(folder)) == folder / "model.safetensors"

    with pytest.raises(LincaeError, match="does not exist"):
        resolve_model_file(str(tmp_path / "absent.safetensors"))
    with pytest.raises(LincaeError, match="has no model.safetensors"):
        resolve_model_file(str(tmp_path))
    (tmp_path / "music2latent.pt").write_bytes(b"pickle")
    with pytest.raises(LincaeError, match="not a .safetensors file"):
        resolve_model_file(str(tmp_path / "music2latent.pt"))


# -- spec parsing ---------------------------------------------------------------------------


def test_hf_uri_parsing() -> None:
    plain = parse_model_spec("hf://owner/repo/sub/dir/model.safetensors")
    assert (plain.kind, plain.repo_id, plain.filenames, plain.revision) == (
        "lincae",
        "owner/repo",
        ("sub/dir/model.safetensors",),
        "main",
    )
    assert parse_model_spec("hf://owner/repo/model.safetensors@v1.2").revision == "v1.2"
    assert parse_model_spec("hf://owner/repo/m.safetensors@refs/pr/3").revision == "refs/pr/3"
    early = parse_model_spec("hf://owner/repo@abc123/model.safetensors")
    assert (early.revision, early.filenames) == ("abc123", ("model.safetensors",))


@pytest.mark.parametrize(
    "spec",
    [
        "hf://owner/repo",
        "hf://owner/repo/",
        "hf://owner/repo/model.pt",
        "hf://owner/repo/model.safetensors@",
        "hf://own er/repo/model.safetensors",
        "hf://owner/repo/../model.safetensors",
    ],
)
def test_bad_hf_uris_are_rejected(spec: str) -> None:
    with pytest.raises(LincaeError, match="bad model URI"):
        parse_model_spec(spec)


def test_unknown_name_lists_known_models_and_accepted_forms() -> None:
    with pytest.raises(LincaeError) as caught:
        parse_model_spec("lin-cea")
    message = str(caught.value)
    assert "unknown model 'lin-cea'" in message
    for name in ("lincae-small", "m2l-small", "m2l", "lin-cae", "lin-cae-2", "music2latent"):
        assert name in message
    assert "hf://" in message and ".safetensors" in message


def test_registry_contents() -> None:
    assert DEFAULT_MODEL in REGISTRY and REGISTRY[DEFAULT_MODEL].kind == "embedded"
    assert [source.name for source in list_models()] == list(REGISTRY)
    assert all(source.licence and source.description for source in list_models())
    assert parse_model_spec("lin-cae") is REGISTRY["lin-cae"]
    assert parse_model_spec("./lin-cae").kind == "file"


def test_malformed_registry_entries_are_bugs() -> None:
    with pytest.raises(ValueError):
        ModelSource(
            name="x", kind="lincae", repo_id="a/b", filenames=("f",), sha256={"g": "0" * 64}
        )
    with pytest.raises(ValueError):
        ModelSource(name="x", kind="linear-cae", repo_id="a/b", filenames=(), revision="main")


# -- lincae's cache ---------------------------------------------------------------------------


def test_lincae_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LINCAE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lincae_cache_dir() == tmp_path / "xdg" / "lincae"
    monkeypatch.setenv("LINCAE_CACHE", str(tmp_path / "explicit"))
    assert lincae_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("LINCAE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert lincae_cache_dir() == Path.home() / ".cache" / "lincae"


def test_atomic_writes_replace_whole_files_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out.bin"
    target.parent.mkdir()
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"

    with pytest.raises(RuntimeError), atomic_output(target) as partial:
        assert partial.suffix == ".bin" and partial.parent == target.parent
        partial.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"second"
    assert sorted(path.name for path in target.parent.iterdir()) == ["out.bin"]


def test_verbose_shows_the_retries(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from lincae_cli.cli.app import app

    isolate_hub_environment(monkeypatch, tmp_path, closed_port_url())
    skip_hub_retry_sleeps(monkeypatch)
    runner = CliRunner()
    quiet = runner.invoke(app, ["models", "pull", SPEC])
    assert quiet.exit_code == 1
    assert quiet.stderr.splitlines() == [
        line for line in quiet.stderr.splitlines() if line.startswith("lincae: error: ")
    ]
    verbose = runner.invoke(app, ["--verbose", "models", "pull", SPEC])
    assert "lincae: Retrying in 1s [Retry 1/5]." in verbose.stderr.splitlines()


# -- checkpoints downloaded by hand: lincae models convert ------------------------------------


def _fake_linear_cae_folder(root: Path, folder: str = "0a3afbec_weights") -> Path:
    """The four files of a linear-cae checkpoint, named as on the Hub (contents not read)."""
    weights = root / folder
    weights.mkdir(parents=True)
    for filename in REGISTRY["lin-cae"].filenames:
        (weights / PurePosixPath(filename).name).write_bytes(b"x")
    return weights


def test_convert_recognises_the_model_by_its_files_and_folder(tmp_path: Path) -> None:
    weights = _fake_linear_cae_folder(tmp_path)
    assert identify([weights])[0] is REGISTRY["lin-cae"]
    assert identify(sorted(weights.iterdir()))[0] is REGISTRY["lin-cae"]
    assert identify([_fake_linear_cae_folder(tmp_path, "1511f18a_weights")])[0] is REGISTRY["m2l"]
    renamed = _fake_linear_cae_folder(tmp_path, "my-download")
    assert identify([renamed], name="lin-cae-2")[0] is REGISTRY["lin-cae-2"]
    (tmp_path / "music2latent.pt").write_bytes(b"x")
    source, files = identify([tmp_path / "music2latent.pt"])
    assert source is REGISTRY["music2latent"] and files == {
        "music2latent.pt": tmp_path / "music2latent.pt"
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "model 'lin-cae' also needs diffusion_kwargs_last.yaml"),
        ("unknown", "notes.txt: not a file of a published checkpoint (expected linear-cae: "),
        ("absent", "nothing-here: no such file or folder"),
        ("empty", "no checkpoint file in this folder"),
        ("renamed", "cannot tell which linear-cae model these files are"),
        ("wrong-name", "the files are in 0a3afbec_weights/, the Hub folder of model 'lin-cae'"),
        ("wrong-kind", "--name music2latent: not a published linear-cae model"),
        ("mixed", "belong to different kinds of checkpoint"),
    ],
)
def test_convert_says_in_one_line_what_is_wrong(case: str, message: str, tmp_path: Path) -> None:
    weights = _fake_linear_cae_folder(tmp_path)
    if case == "missing":
        (weights / "diffusion_kwargs_last.yaml").unlink()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "music2latent.pt").write_bytes(b"x")
    paths = {
        "unknown": [weights, tmp_path / "notes.txt"],
        "absent": [tmp_path / "nothing-here"],
        "empty": [tmp_path / "empty"],
        "renamed": [_fake_linear_cae_folder(tmp_path, "download")],
        "mixed": [weights, tmp_path / "music2latent.pt"],
    }.get(case, [weights])
    name = {"wrong-name": "lin-cae-2", "wrong-kind": "music2latent"}.get(case)
    with pytest.raises(LincaeError) as caught:
        convert_local_files(paths, name)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "lincae-cache").exists()


def test_convert_reads_checkpoints_with_weights_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch

    isolate_hub_environment(monkeypatch, tmp_path, UNRESOLVABLE)
    checkpoint = {"gen_state_dict": {"w": torch.zeros(1)}, "run": PickledCode()}
    torch.save(checkpoint, tmp_path / "music2latent.pt")
    with pytest.raises(LincaeError, match="cannot read checkpoint safely"):
        convert_local_files([tmp_path / "music2latent.pt"])
    assert not any((tmp_path / "lincae-cache" / "models").iterdir())


class PickledCode:
    """Stands for arbitrary code in a pickle: torch's weights_only loader refuses it."""


def test_convert_music2latent_then_use_it_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The published music2latent.pt (reduced in size; the converter is given its config)."""
    pytest.importorskip("music2latent")
    from lincae_cli.hub.convert import MUSIC2LATENT_SCALE, convert_music2latent
    from lincae_cli.hub.store import load_model
    from lincae_cli.nn.config import ModelConfig
    from tests import reference

    isolate_hub_environment(monkeypatch, tmp_path, UNRESOLVABLE)
    _, files = reference.build_music2latent(tmp_path / "download", reduced=True)
    reduced = ModelConfig.from_published(
        reference.REDUCED_FRONTEND, reference.REDUCED_GENERATOR, None, MUSIC2LATENT_SCALE, True
    )

    def convert(source: ModelSource, files: dict[str, Path], out: Path) -> None:
        convert_music2latent(files, out, name=source.name, config=reduced)

    source, path = convert_local_files([tmp_path / "download"], convert=convert)
    assert source.name == "music2latent"
    assert path == tmp_path / "lincae-cache" / "models" / "music2latent-main.safetensors"
    assert resolve_model_file("music2latent") == path  # no network needed any more
    loaded = load_model(path)
    assert loaded.config.hop == reference.REDUCED_FRONTEND["hop_size"]
    # The conversion records the converted model's silence latent b (affine default: off).
    recorded = loaded.silence_latent_values
    assert recorded is not None and loaded.affine_default is False
    loaded.silence_latent_values = None
    assert loaded.silence_latent().tolist() == pytest.approx(recorded, abs=1e-5)


def test_models_convert_command_then_encode_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("linear_cae")
    from typer.testing import CliRunner

    from lincae_cli.cli.app import app
    from tests import reference
    from tests.conftest import write_tone

    isolate_hub_environment(monkeypatch, tmp_path, UNRESOLVABLE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    download = tmp_path / "Downloads" / "0a3afbec_weights"
    reference.build_linear_cae(
        download, reference.REDUCED_GENERATOR, reference.REDUCED_FRONTEND, 33.0
    )
    runner = CliRunner()
    done = runner.invoke(app, ["models", "convert", str(download)])
    assert done.exit_code == 0, done.stderr
    converted = tmp_path / "lincae-cache" / "models" / "lin-cae-main.safetensors"
    assert done.stdout.strip() == str(converted)
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert '"available": true' in listed.stdout.split('"lin-cae"')[1].split("}")[0]

    write_tone(tmp_path / "a.wav", 0.3)
    encoded = runner.invoke(
        app, ["encode", str(tmp_path / "a.wav"), "--model", "lin-cae", "--precision", "fp32"]
    )
    assert encoded.exit_code == 0, encoded.stderr
    assert (tmp_path / "a.lat").is_file()
    failed = runner.invoke(app, ["models", "convert", str(tmp_path / "Downloads")])
    assert failed.exit_code == 1
    assert failed.stderr.splitlines() == [
        f"lincae: error: {tmp_path / 'Downloads'}: no checkpoint file in this folder, but in "
        f"its subfolder 0a3afbec_weights: give that"
    ]


def test_models_convert_help_teaches_the_files_and_names() -> None:
    from typer.testing import CliRunner

    from lincae_cli.cli.app import app

    text = CliRunner().invoke(app, ["models", "convert", "--help"], env={"COLUMNS": "200"}).stdout
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "models convert [OPTIONS] PATH..." in usage
    for fragment in ("Examples", "weights_only", "<hash>_weights", "music2latent.pt", "--name"):
        assert fragment in text, fragment
    assert "<path>" not in text and "<str>" not in text


# -- the model file: silence latent and affine default ----------------------------------------


def _without_affine_keys(source: Path, target: Path, name: str) -> None:
    """``source`` rewritten as a model file of format 1.0 called ``name`` (no b, no default)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    del metadata["silence_latent"], metadata["affine_default"]
    save_file(tensors, str(target), metadata={**metadata, "format_version": "1", "name": name})


def test_model_file_records_silence_latent_and_affine_default(tmp_path: Path) -> None:
    from lincae_cli.hub.store import load_model, read_model_metadata, save_model
    from tests.conftest import make_tiny_model

    model = make_tiny_model(0)
    expected = model.silence_latent().tolist()
    model.silence_latent_values = [0.0] * len(expected)  # stale: b is computed from the weights
    path = save_model(model, tmp_path / "m.safetensors", "tiny", affine_default=True)
    metadata = read_model_metadata(path)
    assert metadata["format_version"] == "1.1"
    assert metadata["silence_latent"] == pytest.approx(expected, abs=1e-6)
    assert metadata["affine_default"] is True
    loaded = load_model(path)
    assert loaded.silence_latent_values == metadata["silence_latent"]
    assert loaded.affine_default is True
    assert loaded.silence_latent().tolist() == pytest.approx(expected, abs=1e-6)
    # Without an explicit default the model's own is written: a loaded model keeps its default.
    again = load_model(save_model(loaded, tmp_path / "again.safetensors", "tiny"))
    assert again.affine_default is True
    model.affine_default = False
    assert load_model(save_model(model, tmp_path / "off.safetensors", "t")).affine_default is False


def test_file_without_the_keys_takes_its_registered_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lincae_cli.hub import registry
    from lincae_cli.hub.store import file_sha256, load_model, save_model
    from tests.conftest import make_tiny_model

    saved = save_model(make_tiny_model(0), tmp_path / "new.safetensors", "tiny")
    old = tmp_path / "old.safetensors"
    _without_affine_keys(saved, old, name="lincae-small")
    loaded = load_model(old)  # an unregistered digest: b computed on use, default off
    assert loaded.silence_latent_values is None and loaded.affine_default is False
    shipped = dataclasses.replace(
        registry.REGISTRY["lincae-small"],
        sha256={"lincae-small.safetensors": file_sha256(old)},
        affine_default=True,
    )
    monkeypatch.setitem(registry.REGISTRY, "lincae-small", shipped)
    assert load_model(old).affine_default is True
    _without_affine_keys(saved, tmp_path / "other.safetensors", name="m2l-small")
    assert load_model(tmp_path / "other.safetensors").affine_default is False  # name and digest
    with pytest.raises(ValueError, match="sha256 it was measured on"):
        ModelSource(name="x", kind="embedded", filenames=("x.safetensors",), affine_default=True)


def test_shipped_files_are_the_registered_digests() -> None:
    """The registry's measured defaults apply to exactly the shipped bytes (never rewritten)."""
    from lincae_cli.hub.store import file_sha256, load_model, read_model_metadata

    for name in ("lincae-small", "m2l-small"):
        source = REGISTRY[name]
        path = resolve_model_file(name)
        assert file_sha256(path) == source.sha256[source.filenames[0]]
        assert read_model_metadata(path)["affine_default"] is None  # v1: not in the file
        assert source.affine_default is not None, name
        assert load_model(path).affine_default is source.affine_default


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"zero"', "silence_latent must list numbers"),
        ("[1, null]", "silence_latent must list numbers"),
        ("[0.5, 0.25]", "silence_latent has 2 values for 64 latent channels"),
    ],
)
def test_corrupt_silence_latent_is_one_line(value: str, message: str, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from lincae_cli.hub.store import load_model, save_model
    from tests.conftest import make_tiny_model

    saved = save_model(make_tiny_model(0), tmp_path / "m.safetensors", "tiny")
    with safe_open(str(saved), framework="pt") as handle:
        metadata = {**handle.metadata(), "silence_latent": value}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(saved), metadata=metadata)
    with pytest.raises(LincaeError, match=message):
        load_model(saved)
