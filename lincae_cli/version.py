"""The version of lincae: the one place it is defined (pyproject reads it from here)."""

__version__ = "0.1.0"
