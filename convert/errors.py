"""Conversion errors. They extend the package-wide ones in finllm_edge.errors, and every
message says what to do next."""

from finllm_edge.errors import (  # noqa: F401  (re-exported for convenience)
    AdapterMismatchError,
    ConversionError,
    CorruptModelError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
)


class InputNotFoundError(ConversionError, FileNotFoundError):
    """A base model, adapter or text file the conversion needs is missing."""


class UnsupportedAdapterError(ConversionError):
    """The adapter uses a PEFT feature the merge does not implement (DoRA, modules_to_save, ...)."""


class OutputNotWritableError(ConversionError, PermissionError):
    """The output folder cannot be created or written."""


class InsufficientDiskError(ConversionError, OSError):
    """Not enough free space for the outputs."""


class ParityError(ConversionError):
    """The F16 GGUF does not reproduce the merged model within tolerance."""


class QualityGateError(ConversionError):
    """An artifact is worse than --max-kld / --min-top1 allow."""


class ToolError(ConversionError):
    """An upstream llama.cpp tool failed or is missing."""


class AdapterConfigError(ConversionError, ValueError):
    """adapter_config.json is malformed (wrong types, out-of-range values, bad or runaway regex patterns),
    or PEFT itself refuses it."""


class TokenizerMismatchError(ConversionError):
    """llama.cpp would tokenize text differently from the HF tokenizer with the chosen pre-tokenizer."""


class OutputFolderError(ConversionError):
    """--out holds files convert did not write (a foreign folder); it is refused unless --force."""


class EvalTextError(ConversionError, ValueError):
    """The held-out text for the quality report (--eval-text) is too short for --eval-ctx, or empty."""


class TaskSetError(ConversionError, ValueError):
    """The finance task set (--task-set) is missing, too large or malformed."""
