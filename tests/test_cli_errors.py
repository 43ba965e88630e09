"""The CLI never prints a traceback for a user error: one paragraph on stderr and exit code 2
(argparse's code for usage errors). --debug or FINLLM_EDGE_DEBUG=1 adds the traceback.

Every case runs the real `python -m finllm_edge.lab` in a subprocess; none loads a model.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "FINLLM_EDGE_DEBUG"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "finllm_edge.lab", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd or ROOT, timeout=120)


def assert_user_error(proc, *needles):
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    # one message line, after argparse's usage block for option errors
    assert lines[-1].startswith("finllm-edge") and "error:" in lines[-1], proc.stderr
    assert len(lines) == 1 or lines[0].startswith("usage:"), proc.stderr


# A quality report as `finllm-edge convert` writes it (finllm_edge_convert.quality.to_json: schema_version,
# the run's metadata, seed_claim, artifacts) and a convert manifest (finllm_edge_convert.manifest).
QUALITY = {"schema_version": 1, "eval_file": "finance_heldout.txt", "n_ctx": 256,
           "seed_claim": "98% of the original accuracy kept at 4 bits",
           "artifacts": [{"name": "model-q4_0.gguf", "ppl": 12.3, "ppl_ratio": 1.05, "mean_kld": 0.04}]}
MANIFEST = {"schema_version": 1, "created_utc": "2026-01-01T00:00:00Z", "inputs": {"base": []}, "merged": [],
            "artifacts": [], "options": {}, "llama_cpp": {}, "versions": {}, "stages_seconds": {}, "notes": []}


@pytest.mark.parametrize("args,needles", [
    (["run", "-t", "0", "-p", "hi"], ["--threads", "out of range"]),
    (["run", "-t", "two", "-p", "hi"], ["--threads", "not an integer"]),
    (["run", "-n", "0", "-p", "hi"], ["--max-tokens"]),
    (["run", "--top-p", "1.5", "-p", "hi"], ["--top-p"]),
    (["run", "--temp", "-1", "-p", "hi"], ["--temp"]),
    (["bench", "-r", "0"], ["--repetitions"]),
    (["bench", "--n-gen", "-4"], ["--n-gen"]),
    (["emulate", "--threads", "0", "--no-build"], ["--threads"]),
    (["device", "bench", "--n-prompt", "0"], ["--n-prompt"]),
])
def test_out_of_range_options_are_usage_errors(args, needles):
    assert_user_error(cli(*args), *needles)


def test_report_on_a_missing_file(tmp_path):
    missing = tmp_path / "nope.json"
    proc = cli("report", missing, "-o", tmp_path / "rep")
    assert_user_error(proc, str(missing), "No such file or directory")
    assert not (tmp_path / "rep").exists()


def test_report_on_a_file_that_is_not_json(tmp_path):
    bad = tmp_path / "profile.json"
    bad.write_text("load 12 ms, ttft 40 ms\n")
    assert_user_error(cli("report", bad, "-o", tmp_path / "rep"), str(bad), "is not JSON", "--profile-out")
    binary = tmp_path / "model.gguf"
    binary.write_bytes(b"GGUF\x03\x00\x00\x00\xff\xfe\x00")
    assert_user_error(cli("report", binary, "-o", tmp_path / "rep"), str(binary), "is not JSON")


def test_report_on_a_quality_report_says_what_it_is_and_what_to_pass(tmp_path):
    q = tmp_path / "quality.json"
    q.write_text(json.dumps(QUALITY))
    assert_user_error(cli("report", q, "-o", tmp_path / "rep"), "quality report of `finllm-edge convert`",
                      "finllm-edge bench")
    m = tmp_path / "manifest.json"
    m.write_text(json.dumps(MANIFEST))
    assert_user_error(cli("report", m, "-o", tmp_path / "rep"), "manifest", "finllm-edge bench MODEL -o FILE")


def test_report_on_json_that_is_no_profile(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    assert_user_error(cli("report", other, "-o", tmp_path / "rep"), "not a valid LatencyProfile")
    assert_user_error(cli("report", tmp_path, "-o", tmp_path / "rep"), "is a folder")


def test_bench_with_an_unknown_estimate_device(tmp_path):
    proc = cli("bench", "--estimate", "unknown-device", "-o", tmp_path / "b.json")
    assert_user_error(proc, "unknown device 'unknown-device'", "snapdragon-865")
    assert not (tmp_path / "b.json").exists()


def test_run_with_a_missing_model_file(tmp_path):
    proc = cli("run", tmp_path / "missing.gguf", "-p", "hi", "-n", "2")
    assert_user_error(proc, "missing.gguf")


@pytest.mark.parametrize("how", ["flag-before", "flag-after", "env"])
def test_debug_shows_the_traceback_with_the_same_exit_code(tmp_path, how):
    missing = tmp_path / "nope.json"
    if how == "flag-before":
        proc = cli("--debug", "report", missing, "-o", tmp_path / "rep")
    elif how == "flag-after":
        proc = cli("report", missing, "-o", tmp_path / "rep", "--debug")
    else:
        proc = cli("report", missing, "-o", tmp_path / "rep", env_extra={"FINLLM_EDGE_DEBUG": "1"})
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr
    assert "No such file or directory" in proc.stderr.strip().splitlines()[-1]


def test_an_operation_failure_is_exit_1_without_a_traceback(tmp_path):
    # no adb on PATH: a typed DeviceError (not the user's command line) -> exit 1, still one paragraph
    proc = cli("device", "list", env_extra={"PATH": str(tmp_path), "ADB": str(tmp_path / "no-adb")})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1 and "adb" in proc.stderr
