"""Typed errors. Each message says what went wrong and what to do about it."""


class FinLLMEdgeError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelNotFoundError(FinLLMEdgeError, FileNotFoundError):
    pass


class CorruptModelError(FinLLMEdgeError, ValueError):
    pass


class ContextOverflowError(FinLLMEdgeError, ValueError):
    pass


class NativeBuildError(FinLLMEdgeError, RuntimeError):
    pass


class FetchError(FinLLMEdgeError, RuntimeError):
    pass


class TemplateError(FinLLMEdgeError, ValueError):
    pass


class ConversionError(FinLLMEdgeError, RuntimeError):
    pass


class UnsupportedArchitectureError(ConversionError):
    pass


class AdapterMismatchError(ConversionError):
    pass


class InvalidArgumentError(FinLLMEdgeError, ValueError):
    """An option or argument out of its valid range (the message names it and the range)."""


class GrammarError(InvalidArgumentError):
    """A grammar or JSON Schema was refused by the core: invalid, unsupported, past one of its
    bounds (nesting, enum size, repetition counts, ...), or too ambiguous to decode in bounded
    time. The message names the problem and where."""


class UnsupportedFeatureError(FinLLMEdgeError, NotImplementedError):
    """The backend cannot do what was asked (e.g. a grammar on the ONNX backend); the message says
    which backend can."""


class EngineBusyError(FinLLMEdgeError, RuntimeError):
    """The engine already runs a generation: finish it, close it or cancel() it first."""


class CancelledError(FinLLMEdgeError, RuntimeError):
    """The generation was cancelled."""


class DecodeError(FinLLMEdgeError, RuntimeError):
    """llama.cpp failed to evaluate a batch."""


class NativeMemoryError(FinLLMEdgeError, MemoryError):
    """The core ran out of memory."""


class NativeError(FinLLMEdgeError, RuntimeError):
    """An unexpected failure inside the core (the message says where)."""


class StateFileError(CorruptModelError):
    """A saved prompt-state file was refused: truncated, altered, hand-made, or made for another
    model or llama.cpp build (the message says which). Save the state again with this model."""


class DriftReferenceError(CorruptModelError):
    """A drift reference file was refused: truncated, altered, hand-made, or made for another
    tokenizer (the message says which). Make it again with `finllm-edge convert --drift-ref`."""


class AdapterFileError(CorruptModelError):
    """A LoRA adapter file was refused: corrupt, of an unsupported kind or type, or made for another
    base model (the message names the key or tensor). Export the adapter for this base model."""
