"""The one user-facing error type, and how foreign exceptions are quoted in its messages."""


class LincaeError(Exception):
    """A problem the user can fix (bad input, missing model, incompatible files).

    The CLI catches it once and prints its message as a single line; anything else
    that escapes is a bug and keeps its traceback.
    """


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (or its type name): what a one-line error quotes
    of a library's exception (libsndfile and safetensors messages span several lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
