"""Metrics and the linearity evaluation behind `lincae eval` (definitions: docs/metrics.md).

metrics.py: audio distances; linearity.py: what is compared with what, as pure functions of an
encoder and a decoder; datasets.py: which audio segments; plots.py: spectrogram figures.
"""
