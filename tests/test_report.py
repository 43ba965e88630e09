"""`finllm-edge report`: Markdown + PNGs from profiles of several tools (synthetic, no model)."""

import json

import pytest

from finllm_edge.lab.cli_report import ReportInputError, build_report
from finllm_edge.lab.estimate import ModelStats, estimate, load_device
from finllm_edge.profiler import ModelInfo, RunTimings, build_profile

DEVICE = {"cpu_model": "Intel Xeon", "arch": "x86_64", "cores_total": 2, "cores_used": [0, 1], "affinity": [0, 1],
          "governor": {}, "max_freq_khz": {}, "mem_total_mb": 24000.0}


def make_profile(tmp_path, name, decode_ms, tool="finllm_edge.Engine", emulated=False, variant=None):
    f = tmp_path / name
    f.write_bytes(b"GGUF" + name.encode())
    t = RunTimings(t_request=0.0, t_prefill_start=0.001, t_prefill_end=0.101, t_first_token=0.102, n_prompt=64)
    t.token_ms = [decode_ms * (1 + 0.05 * (i % 7)) for i in range(31)]
    t.n_gen, t.t_end = 32, 0.102 + sum(t.token_ms) / 1e3
    p = build_profile([t], model=ModelInfo(str(f), 100, "llama ?B Q4_0", 4.5), device=DEVICE, n_threads=2,
                      n_ctx=256, load_ms=50.0, llama_cpp_version="0.3.36 (test)", variant=variant)
    p["tool"], p["emulated"] = tool, emulated
    return p


def test_report_from_engine_fe_bench_and_qemu_profiles(tmp_path):
    ours = make_profile(tmp_path, "a-q4_0.gguf", 8.0)
    fe = make_profile(tmp_path, "a-q4_0.gguf", 7.9, tool="fe-bench")
    qemu = make_profile(tmp_path, "a-q4_0.gguf", 3000.0, tool="fe-bench", emulated=True,
                        variant="armv8.2-a+dotprod+fp16")
    stats = ModelStats("a-q4_0.gguf", 135_000_000, 134_000_000, 86_000_000, 86_000_000, 30, 9, 3, 64, True)
    est = estimate(stats, load_device("snapdragon-865")).to_dict()
    (tmp_path / "single.json").write_text(json.dumps(ours))
    (tmp_path / "bench.json").write_text(json.dumps({"profiles": [fe], "estimates": [est]}))
    (tmp_path / "list.json").write_text(json.dumps([qemu]))
    out = tmp_path / "report"
    files = build_report([tmp_path / "single.json", tmp_path / "bench.json", tmp_path / "list.json"], out)
    md = files["markdown"].read_text()
    assert md.count("\n| 1 |") == 2 and "\n| 3 |" in md  # main table and provenance table
    assert "fe-bench **EMULATED**" in md and "Never quote them as device speed" in md
    assert "Estimates (roofline model — NOT measurements)" in md and "Assumptions for Qualcomm" in md
    assert "armv8.2-a+dotprod+fp16" in md
    for key in ("token_latency", "compare"):
        png = files[key].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        assert f"({files[key].name})" in md


def test_report_rejects_invalid_profiles(tmp_path):
    bad = make_profile(tmp_path, "m.gguf", 5.0)
    del bad["ttft_ms"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ReportInputError, match="ttft_ms"):
        build_report([tmp_path / "bad.json"], tmp_path / "out")
