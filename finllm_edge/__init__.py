"""finllm-edge: a finance-tuned LLM on a phone.

The runtime is light (numpy + the pinned llama-cpp-python); the conversion toolchain
lives in `finllm_edge_convert` (the `convert/` folder) behind the `convert` extra.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ContextOverflowError,
    CorruptModelError,
    FinLLMEdgeError,
    ModelNotFoundError,
)
from .models import default_model_path  # noqa: E402

__all__ = [
    "__version__",
    "ContextOverflowError",
    "CorruptModelError",
    "FinLLMEdgeError",
    "ModelNotFoundError",
    "default_model_path",
]


def __getattr__(name):
    # Engine pulls in llama_cpp; import it on first use so `import finllm_edge` stays cheap.
    if name == "Engine":
        from .engine import Engine

        return Engine
    if name == "Scheduler":
        from .scheduler import Scheduler

        return Scheduler
    if name == "LatencyProfile":
        from . import profile

        return profile
    raise AttributeError(name)
