"""Convert published checkpoints (linear-cae, Music2Latent) to our safetensors format.

`.pth` / `.pt` files are only ever opened with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from lincae_cli.errors import LincaeError
from lincae_cli.hub.converted import CONVERTED_FRAME_ROUNDING
from lincae_cli.hub.store import save_model
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
from lincae_cli.nn.config import ModelConfig

# Music2Latent's inference code divides encoder outputs by 0.06 (`sigma_rescale`); we express
# that as a scale factor so our latents equal theirs.
MUSIC2LATENT_SCALE = 1.0 / 0.06
MUSIC2LATENT_FRONTEND = {
    "hop_size": 512,
    "n_fft_factor": 4,
    "alpha_rescale": 0.65,
    "beta_rescale": 0.34,
    "sample_rate": 44100,
}

# (pattern, replacement) applied in order to published generator keys.
_RENAMES = [
    (re.compile(r"^decoder\."), "pyramid."),
    (re.compile(r"^(?!encoder\.|decoder\.|pyramid\.)"), "unet."),
    (re.compile(r"\.att\.mha\.in_proj_weight$"), ".att.qkv.weight"),
    (re.compile(r"\.att\.mha\.in_proj_bias$"), ".att.qkv.bias"),
    (re.compile(r"\.att\.mha\.out_proj\."), ".att.out."),
]
# Parameters the published code creates but never uses (the pyramid's blocks get no noise
# embedding), so our model does not have them.
_UNUSED = re.compile(r"^pyramid\.bottleneck_layers\.\d+\.proj_emb\.")


def rename_generator_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published generator (UNet) state dict -> our ConsistencyAutoencoder state dict."""
    out = {}
    for key, tensor in state.items():
        new = key
        for pattern, replacement in _RENAMES:
            new = pattern.sub(replacement, new)
        if not _UNUSED.match(new):
            out[new] = tensor
    return out


def _load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad or unsafe pickles
        raise LincaeError(f"{path}: cannot read checkpoint safely ({exc})") from None


def _build(config: ModelConfig, generator_state: dict[str, torch.Tensor], source: Path):
    model = ConsistencyAutoencoder(config)
    state = rename_generator_state(generator_state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LincaeError(
            f"{source}: checkpoint does not match its config "
            f"(missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]})"
        )
    return model.eval()


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LincaeError(f"{path}: unreadable config ({exc})") from None
    return data or {}


def convert_linear_cae(
    files: dict[str, Path], out_path: Path, name: str, scale_factor: float
) -> Path:
    """`files` maps the basenames of a `<hash>_weights/` folder to local paths."""
    by_kind = {key.split("/")[-1]: Path(value) for key, value in files.items()}
    try:
        frontend = _read_yaml(by_kind["frontend_kwargs_last.yaml"])
        generator = _read_yaml(by_kind["generator_kwargs_last.yaml"])
        diffusion = _read_yaml(by_kind["diffusion_kwargs_last.yaml"])
        weights = by_kind["autoencoder_inference_model_last.pth"]
    except KeyError as exc:
        raise LincaeError(f"linear-cae model '{name}' is missing file {exc}") from None
    config = ModelConfig.from_published(
        frontend, generator, diffusion, scale_factor=scale_factor
    ).replace(latent_frame_rounding=CONVERTED_FRAME_ROUNDING["linear-cae"])
    state = _load_torch(weights)
    if not isinstance(state, dict):
        raise LincaeError(f"{weights}: expected a state dict")
    prefix = "generator."
    generator_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    model = _build(config, generator_state, weights)
    provenance = {"converted_from": "linear-cae", "files": sorted(by_kind)}
    return save_model(model, out_path, name, provenance)


def convert_music2latent(
    files: dict[str, Path], out_path: Path, name: str, config: ModelConfig | None = None
) -> Path:
    """`files` holds `music2latent.pt`: a checkpoint dict with `gen_state_dict`.

    Music2Latent's checkpoint carries no config; `config` overrides the published one. Either
    way the model crops to whole latent frames as music2latent's inference does
    (``latent_frame_rounding`` "floor").
    """
    path = next((Path(p) for k, p in files.items() if k.endswith(".pt")), None)
    if path is None:
        raise LincaeError(f"music2latent model '{name}' is missing music2latent.pt")
    checkpoint = _load_torch(path)
    state = checkpoint.get("gen_state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise LincaeError(f"{path}: no 'gen_state_dict' in checkpoint")
    if config is None:
        config = ModelConfig.from_published(
            MUSIC2LATENT_FRONTEND, {}, None, scale_factor=MUSIC2LATENT_SCALE, clamp_output=True
        )
    config = config.replace(latent_frame_rounding=CONVERTED_FRAME_ROUNDING["music2latent"])
    model = _build(config, state, path)
    provenance = {"converted_from": "music2latent", "files": [path.name]}
    return save_model(model, out_path, name, provenance)
