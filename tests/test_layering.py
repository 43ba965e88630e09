"""The runtime (what an app embeds) never imports the lab tools, the build driver or convert.

Runtime modules are found by directory, not from a list of names: every .py file under
finllm_edge/ except the lab subpackage (finllm_edge/lab/) and the build driver
(finllm_edge/native/). A module added to the runtime is checked without editing this file.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "finllm_edge"
NOT_RUNTIME_DIRS = ("lab", "native")  # finllm_edge/<dir>/: tools for people and the build driver
# Module prefixes the runtime must never import (statically) nor load (at import time).
FORBIDDEN = ("finllm_edge.lab", "finllm_edge.native", "finllm_edge_convert", "torch", "matplotlib",
             "transformers", "peft")


def runtime_files() -> list[Path]:
    files = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] in NOT_RUNTIME_DIRS or path.name == "__main__.py":
            continue
        files.append(path)
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module name `source` (the text of `module`) may import: import statements anywhere
    (function-level ones included), relative imports resolved, and importlib.import_module("...")
    / __import__("...") calls with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.append((node.lineno, mod))
            names += [(node.lineno, f"{mod}.{a.name}") for a in node.names if a.name != "*"]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            names.append((node.lineno, node.args[0].value))
    return names


def test_runtime_is_found_by_directory():
    mods = [module_name(p) for p in runtime_files()]
    assert "finllm_edge" in mods and len(mods) >= 3, mods
    assert not any(m.startswith(("finllm_edge.lab", "finllm_edge.native")) for m in mods)


@pytest.mark.parametrize("source,module,expected", [
    ("from .lab import cli", "finllm_edge.engine", "finllm_edge.lab"),
    ("from . import lab", "finllm_edge.engine", "finllm_edge.lab"),
    ("def f():\n    from .native.fetch import x", "finllm_edge.profiler", "finllm_edge.native.fetch"),
    ("import finllm_edge_convert.pipeline", "finllm_edge.engine", "finllm_edge_convert.pipeline"),
    ("from ..lab.estimate import x", "finllm_edge.sub.mod", "finllm_edge.lab.estimate"),
    ("from .lab import x", "finllm_edge", "finllm_edge.lab"),  # in finllm_edge/__init__.py
    ("import importlib\nimportlib.import_module('torch')", "finllm_edge.engine", "torch"),
    ("import matplotlib.pyplot as plt", "finllm_edge.x", "matplotlib.pyplot"),
])
def test_the_static_check_sees_forbidden_imports(source, module, expected):
    names = [n for _, n in imported_names(source, module, is_package=module == "finllm_edge")]
    assert expected in names and any(forbidden(n) for n in names)


def test_the_static_check_allows_the_runtime_and_lookalikes():
    src = "from .errors import E\nfrom . import labels\nimport finllm_edge.nativeish\nimport numpy"
    assert not any(forbidden(n) for _, n in imported_names(src, "finllm_edge.engine"))


@pytest.mark.parametrize("path", runtime_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_source_imports_no_lab_native_or_convert(path):
    src = path.read_text(encoding="utf-8")
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {name}"
           for line, name in imported_names(src, module_name(path), path.name == "__init__.py") if forbidden(name)]
    assert not bad, "the runtime must not import the lab tools, the build driver or convert:\n" + "\n".join(bad)


def test_importing_the_runtime_loads_no_lab_native_or_convert():
    mods = [module_name(p) for p in runtime_files()]
    code = f"""
import importlib, json, sys
FORBIDDEN = {FORBIDDEN!r}
bad, errors = {{}}, {{}}
for mod in {mods!r}:
    before = set(sys.modules)
    try:
        importlib.import_module(mod)
    except Exception as exc:  # reported below: a runtime module that does not import is a failure too
        errors[mod] = f"{{type(exc).__name__}}: {{exc}}"
        continue
    new = [m for m in set(sys.modules) - before if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    if new:
        bad[mod] = sorted(new)
print(json.dumps({{"bad": bad, "errors": errors}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}, f"runtime modules that fail to import: {result['errors']}"
    assert result["bad"] == {}, f"runtime modules that load lab/build-driver/convert/heavy modules: {result['bad']}"
