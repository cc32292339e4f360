"""The one user-facing error type."""


class LincaeError(Exception):
    """A problem the user can fix (bad input, missing model, incompatible files).

    The CLI catches it once and prints its message as a single line; anything else
    that escapes is a bug and keeps its traceback.
    """
