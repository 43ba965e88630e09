"""Where finllm-edge keeps things outside the git tree."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The build/download cache: $FINLLM_EDGE_CACHE, else ~/.cache/finllm-edge."""
    env = os.environ.get("FINLLM_EDGE_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "finllm-edge"
    base.mkdir(parents=True, exist_ok=True)
    return base


def repo_root() -> Path:
    """The source checkout this package was installed from (editable installs)."""
    return Path(__file__).resolve().parent.parent
