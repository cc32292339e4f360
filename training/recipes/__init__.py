"""Data preparation recipes."""
