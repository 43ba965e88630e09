"""Every bad GGUF of the corpus through the real entry points: Engine, and fe-bench (the C API).

Contracts: `finllm_edge.Engine(path)` raises CorruptModelError whose message names the bad
field; `fe-bench -m path` exits 1 (not a signal, not a sanitizer exit) and names the field
(for the four header fields, fe_gguf_preflight's own words will do).
Both run in subprocesses: a file that slipped past validation could abort llama.cpp, and
that must show up as a failure naming the file, not kill pytest.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_bad_gguf as gen  # noqa: E402
from finllm_edge.models import default_model_path

ENGINE_WORKER = r"""
import sys, finllm_edge
from finllm_edge.errors import CorruptModelError
for path in sys.argv[1:]:
    print("@@try", path, flush=True)
    try:
        finllm_edge.Engine(path, n_ctx=64).close()
        print("@@accepted", flush=True)
    except CorruptModelError as e:
        print("@@corrupt", str(e).replace("\n", " "), flush=True)
    except BaseException as e:
        print("@@other", type(e).__name__, str(e).replace("\n", " "), flush=True)
"""


# fe_gguf_preflight() checks the 24-byte header itself first, in its own words.
SHORT = "shorter than the 24-byte GGUF header"
HEADER_WORDS = {"magic": ["magic", SHORT], "version": ["GGUF version", SHORT],
                "tensor_count": ["tensor count", "tensors and", SHORT], "kv_count": ["key count", "keys, which", SHORT]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_gguf_e2e")
    return out, gen.write_corpus(out, smollm2=default_model_path())


def _engine_results(paths: list[Path]) -> dict[str, tuple[str, str]]:
    """{path: (kind, message)}; a worker that dies is restarted after the file that killed it."""
    results: dict[str, tuple[str, str]] = {}
    todo = list(map(str, paths))
    while todo:
        proc = subprocess.run([sys.executable, "-c", ENGINE_WORKER, *todo],
                              capture_output=True, text=True, errors="replace", timeout=1800)
        current = None
        for line in proc.stdout.splitlines():
            if line.startswith("@@try "):
                current = line[6:]
            elif line.startswith("@@") and current:
                kind, _, msg = line[2:].partition(" ")
                results[current] = (kind, msg)
                current = None
        if current:
            results[current] = ("died", f"exit status {proc.returncode}: {proc.stderr[-300:]}")
        todo = [p for p in todo if p not in results]
        if proc.returncode == 0 and todo:
            raise AssertionError(f"worker finished without results for {todo[:3]}")
    return results


@pytest.mark.slow
def test_engine_rejects_every_bad_file_naming_the_field(corpus):
    out, manifest = corpus
    paths = [out / f"{n}.gguf" for n in sorted(manifest)]
    results = _engine_results(paths)
    # The Engine loads through the core: the same words as fe-bench (fe_gguf_preflight's).
    bad = {p.name: results.get(str(p)) for p in paths
           if results.get(str(p), ("missing", ""))[0] != "corrupt"
           or not any(n in results[str(p)][1]
                      for n in [f"'{manifest[p.stem]}'", *HEADER_WORDS.get(manifest[p.stem], [])])}
    assert not bad, json.dumps(dict(list(bad.items())[:10]), indent=1)


@pytest.mark.slow
@pytest.mark.native
def test_fe_bench_rejects_every_bad_file_naming_the_field(corpus):
    from finllm_edge.native.build import ensure_built

    fe_bench = ensure_built("host").fe_bench
    out, manifest = corpus
    bad = {}
    for name in sorted(manifest):
        proc = subprocess.run([str(fe_bench), "-m", str(out / f"{name}.gguf")], capture_output=True,
                              text=True, errors="replace", timeout=120)
        said = proc.stdout + proc.stderr
        names = [f"'{manifest[name]}'", *HEADER_WORDS.get(manifest[name], [])]
        if proc.returncode != 1 or not any(n in said for n in names):
            bad[name] = (proc.returncode, said[-300:])
    assert not bad, json.dumps(dict(list(bad.items())[:10]), indent=1)
