"""GGUF validation from Python: a binding of the core's validator, with no rules of its own.

Every rule lives once, in C (native/src/gguf_validate.c behind ``fe_gguf_preflight``), which
is what every model load runs first (``fe_model_load``: Python ``Engine``, JNI, fe-bench).
This module only calls it, so a script or test can check a file without loading it::

    from finllm_edge.gguf_validate import validate_gguf
    validate_gguf("model.gguf")   # raises GGUFValidationError (a CorruptModelError)

Errors carry the core's message, and, for structural and semantic rules, the GGUF field it
names (``llama.block_count``, ``tokenizer.ggml.merges``, ``tensor[3].offset``, ...) and its
byte offset, parsed from that message.
"""
from __future__ import annotations

import os
import re

from finllm_edge.errors import CorruptModelError

_FIELD = re.compile(r"invalid GGUF field '(?P<field>[^']*)' at byte (?P<offset>\d+): (?P<reason>.*?)\. The model file")


class GGUFValidationError(CorruptModelError):
    """The core refused the file. ``field``/``offset`` name the GGUF field when the message
    has one (the four header checks of fe_gguf_preflight use their own words: then None)."""

    def __init__(self, message: str):
        super().__init__(message)
        m = _FIELD.search(message)
        self.field: str | None = m["field"] if m else None
        self.offset: int | None = int(m["offset"]) if m else None
        self.reason: str = m["reason"] if m else message


def validate_gguf(path: str | os.PathLike) -> None:
    """Runs the core's pre-flight validator on ``path``.

    Raises ModelNotFoundError for a missing file, GGUFValidationError (a CorruptModelError)
    for a file the core refuses; returns None for a file it accepts.
    """
    from finllm_edge import _native

    lib = _native.lib()
    status = lib.fe_gguf_preflight(os.fsencode(os.fspath(path)))
    if status == _native.FE_OK:
        return None
    err = lib.error(status)
    if isinstance(err, CorruptModelError):
        raise GGUFValidationError(str(err))
    raise err
