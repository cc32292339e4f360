"""Reference models (linear-cae, music2latent) with random weights, saved in their own layouts.

These packages are installed with `pip install --no-deps` by the test extra's set-up (see
.ci/run); tests that need them skip when they are absent.
"""

from __future__ import annotations

from pathlib import Path

import torch

REDUCED_GENERATOR = {
    "base_channels": 16,
    "layers_list": [1, 1, 1, 1, 1],
    "multipliers_list": [1, 2, 4, 4, 4],
    "attention_list": [0, 0, 1, 1, 1],
    "freq_downsample_list": [1, 0, 0, 0],
    "layers_list_encoder": [1, 1, 1, 1, 1],
    "attention_list_encoder": [0, 0, 1, 1, 1],
    "bottleneck_base_channels": 64,
    "num_bottleneck_layers": 1,
    "hop": 128,
    "cond_channels": 32,
    "heads": 4,
}
REDUCED_FRONTEND = {
    "hop_size": 128,
    "n_fft_factor": 4,
    "alpha_rescale": 0.65,
    "beta_rescale": 0.34,
    "sample_rate": 44100,
}
PUBLISHED_GENERATOR = {"hop": 512}  # linear-cae's UNet defaults are the published size, hop aside
PUBLISHED_FRONTEND = dict(REDUCED_FRONTEND, hop_size=512)
DIFFUSION = {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Perturb every trainable parameter, so zero-initialised layers do real work too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.requires_grad:
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(noise * scale)


def build_linear_cae(
    folder: Path, generator_kwargs: dict, frontend_kwargs: dict, scale_factor: float, seed: int = 0
):
    """Build linear-cae's Autoencoder with random weights and save it as a `<hash>_weights/`
    folder: returns (model, {filename: path})."""
    import yaml
    from linear_cae.inference import Autoencoder

    torch.manual_seed(seed)
    model = Autoencoder(
        frontend_kwargs, generator_kwargs, DIFFUSION, name="ref", scale_factor=scale_factor
    ).eval()
    randomize(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "autoencoder_inference_model_last.pth")
    for kind, values in (
        ("frontend", frontend_kwargs),
        ("generator", generator_kwargs),
        ("diffusion", DIFFUSION),
    ):
        (folder / f"{kind}_kwargs_last.yaml").write_text(yaml.safe_dump(values))
    return model, {p.name: p for p in folder.iterdir()}


def build_music2latent(folder: Path, reduced: bool, seed: int = 0):
    """Build music2latent's UNet with random weights (optionally with the reduced generator
    hyper-parameters patched into its module globals) and save `music2latent.pt`."""
    import music2latent.models as m2l

    if reduced:
        patch = {
            "base_channels": 16,
            "layers_list": [1, 1, 1, 1, 1],
            "layers_list_encoder": [1, 1, 1, 1, 1],
            "bottleneck_base_channels": 64,
            "num_bottleneck_layers": 1,
            "hop": 128,
            "cond_channels": 32,
        }
    else:
        patch = {}
    saved = {key: getattr(m2l, key) for key in patch}
    for key, value in patch.items():
        setattr(m2l, key, value)
    try:
        torch.manual_seed(seed)
        model = m2l.UNet().eval()
    finally:
        for key, value in saved.items():
            setattr(m2l, key, value)
    randomize(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "music2latent.pt"
    torch.save({"gen_state_dict": model.state_dict()}, path)
    return model, {path.name: path}
