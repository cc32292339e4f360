"""Weights shipped with lincae (safetensors files and their model card)."""
