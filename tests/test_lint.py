"""`ruff check .` passes with the committed config ([tool.ruff] in pyproject.toml).

Fast lane: no model, no build. ruff comes from the `dev` extra, pinned so everyone gets the
same verdict; `ruff check --fix .` fixes import order and unused imports.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pinned_ruff() -> str:
    m = re.search(r'"ruff==([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert m, "pyproject.toml's dev extra must pin ruff (ruff==X.Y.Z)"
    return m.group(1)


def test_ruff_is_the_pinned_version():
    proc = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, f"ruff is not installed in this environment: pip install -e '.[dev]'\n{proc.stderr}"
    assert proc.stdout.split()[-1] == _pinned_ruff(), proc.stdout


def test_ruff_check_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ruff check . found violations:\n{proc.stdout}{proc.stderr}"
