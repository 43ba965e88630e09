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
