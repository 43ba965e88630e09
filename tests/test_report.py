"""`finllm-edge report`: Markdown + PNGs from profiles of several tools (synthetic, no model)."""

import json

import pytest

from finllm_edge.lab.cli_report import ReportInputError, build_report
from finllm_edge.lab.estimate import ModelStats, estimate, load_device
from finllm_edge.profile import percentile, schema, validate_profile


def minimal_instance(sch: dict, root: dict):
    """The smallest value the LatencyProfile schema accepts, built from the schema itself
    (required fields only), so the synthetic profiles below follow the schema as it changes."""
    if "$ref" in sch:
        return minimal_instance(root["$defs"][sch["$ref"].rsplit("/", 1)[-1]], root)
    if "const" in sch:
        return sch["const"]
    types = sch.get("type", "object")
    kind = next(t for t in (types if isinstance(types, list) else [types]) if t != "null")
    if kind == "object":
        return {k: minimal_instance(sch["properties"][k], root) for k in sch.get("required", [])}
    return {"array": [], "string": "x", "integer": 1, "number": 1.0, "boolean": False}[kind]


def make_profile(tmp_path, name, decode_ms, tool="finllm_edge.Engine", emulated=False, variant=None):
    f = tmp_path / name
    f.write_bytes(b"GGUF" + name.encode())
    root = schema()
    p = minimal_instance(root, root)
    token_ms = [decode_ms * (1 + 0.05 * (i % 7)) for i in range(31)]
    tg = 1000.0 / (sum(token_ms) / len(token_ms))
    p.update(tool=tool, emulated=emulated, variant=variant, model_path=str(f), model_type="llama ?B Q4_0",
             model_sha256="ab" * 32, bits_per_weight=4.5, n_threads=2, n_ctx=256, n_prompt=64, n_gen=32,
             repetitions=1, warmup=0, load_ms=50.0, ttft_ms=102.0, prefill_tok_s=640.0, prefill_tok_s_min=640.0,
             prefill_tok_s_max=640.0, decode_tok_s=tg, decode_tok_s_min=tg, decode_tok_s_max=tg, token_ms=token_ms,
             token_ms_p50=percentile(token_ms, 50), token_ms_p90=percentile(token_ms, 90),
             token_ms_p99=percentile(token_ms, 99), e2e_ms=102.0 + sum(token_ms), peak_rss_mb=180.0,
             llama_cpp_version="0.3.36 (test)", created_at="2026-01-01T00:00:00Z")
    p["device"].update(cpu_model="Intel Xeon", arch="x86_64", cores_total=2, cores_used=[0, 1])
    return validate_profile(p)


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
