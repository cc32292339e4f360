"""Model registry, Hub downloads and caches, against a fake Hub on 127.0.0.1 (no network)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from lincae_cli.errors import LincaeError
from lincae_cli.hub import download
from lincae_cli.hub.cache import atomic_output, atomic_write_bytes, lincae_cache_dir
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
    isolate_hub_environment,
    skip_hub_retry_sleeps,
)

REPO = "lincae-tests/tiny-models"
FILENAME = "tiny/model.safetensors"
SPEC = f"hf://{REPO}/{FILENAME}"
PAYLOAD = b"not really safetensors, the download layer does not look inside" * 50


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


def test_unreachable_hub_names_the_endpoint(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    endpoint = closed_port_url()
    isolate_hub_environment(monkeypatch, tmp_path, endpoint)
    slept = skip_hub_retry_sleeps(monkeypatch)
    with pytest.raises(LincaeError) as caught:
        resolve_model_file(SPEC)
    assert str(caught.value) == (
        f"could not reach the Hugging Face Hub at {endpoint} to download model '{SPEC}'; "
        "check your network or HF_ENDPOINT, or pass a local file with --model PATH"
    )
    assert slept  # huggingface_hub retried before giving up
    assert hub.count() == 0


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
