"""Metrics and the linearity evaluation behind `lincae eval` (definitions: docs/metrics.md).

metrics.py: audio distances; linearity.py: what is compared with what, as pure functions of an
encoder and a decoder; codec.py: those two callables for a model; references.py: the MSS of
familiar degradations; datasets.py: which audio segments; plots.py: spectrogram figures.
"""
