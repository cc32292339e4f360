"""Files and folders in, files and folders out: the library's batch API (see files.py)."""

from lincae_cli.batch.files import (
    DecodeTarget,
    Inference,
    decode_files,
    encode_files,
    save_result,
)
from lincae_cli.batch.result import BatchResult, Record

__all__ = [
    "BatchResult",
    "DecodeTarget",
    "Inference",
    "Record",
    "decode_files",
    "encode_files",
    "save_result",
]
