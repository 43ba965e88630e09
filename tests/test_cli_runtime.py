"""`finllm-edge run | bench | report` end to end on the embedded SmolLM2 (few tokens)."""

import json
import subprocess
import sys

import pytest

from finllm_edge.lab import cli
from finllm_edge.profile import load_profiles


def test_cli_verbs_import_nothing_heavy():
    code = ("import sys, finllm_edge.lab.cli as c; p = c.build_parser(); "
            "bad = [m for m in ('llama_cpp', 'matplotlib', 'torch', 'numpy', 'gguf', 'jinja2') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_run_with_missing_model_is_a_clean_error(tmp_path, capsys):
    rc = cli.main(["run", str(tmp_path / "missing.gguf"), "-p", "hi", "--max-tokens", "2"])
    assert rc == 2  # a user error (finllm_edge.lab.cli.exit_code)
    err = capsys.readouterr().err
    assert "missing.gguf" in err and err.startswith("finllm-edge run: error:") and "Traceback" not in err


@pytest.mark.slow
def test_run_bench_report(tmp_path, capsys):
    prof = tmp_path / "demo" / "profile.json"
    rc = cli.main(["run", "--max-tokens", "8", "--profile-out", str(prof), "-p",
                   "In two sentences, what does a falling interest coverage ratio tell a credit analyst?"])
    assert rc == 0
    out = capsys.readouterr().out
    answer, profile_line = out.rstrip("\n").rsplit("\n", 1)
    assert answer.strip() and profile_line.startswith("[profile] load")
    (p,) = load_profiles(prof)
    assert p["n_gen"] <= 8 and p["n_prompt"] > 20  # the chat template wrapped the question

    bench = tmp_path / "bench.json"
    rc = cli.main(["bench", "-r", "1", "--warmup", "0", "--n-prompt", "8", "--n-gen", "4", "-o", str(bench),
                   "--estimate", "snapdragon-865"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "ESTIMATE snapdragon-865" in table and "| measured" in table and "assumptions of the" in table
    data = json.loads(bench.read_text())
    assert len(data["profiles"]) == 1 and data["estimates"][0]["kind"] == "estimate"
    assert load_profiles(bench)[0]["n_gen"] == 4

    rc = cli.main(["report", str(prof), str(bench), "-o", str(tmp_path / "rep")])
    assert rc == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in md and "ESTIMATE" in md
    assert (tmp_path / "rep" / "compare.png").stat().st_size > 10_000
