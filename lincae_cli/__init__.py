"""lincae: encode audio into linear latents, operate on them, decode them back."""

__version__ = "0.1.0"
