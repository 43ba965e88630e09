"""Latency estimate: model terms, ranges, bounds, published data, calibration plumbing."""

import json
from dataclasses import replace

import pytest

from finllm_edge.lab.calibrate import HostCalibration, Rate
from finllm_edge.lab.estimate import ModelStats, estimate, list_devices, load_device, model_stats
from finllm_edge.lab.latency_model import fit_arm, host_terms, loo_errors, published
from finllm_edge.models import default_model_path

STATS = ModelStats(path="m.gguf", n_params=135_000_000, matmul_params=134_000_000, weight_bytes=90_000_000,
                   decode_weight_bytes=90_000_000, n_layer=30, n_head=9, n_head_kv=3, head_dim=64,
                   tied_embeddings=True, matmul_bytes_by_type={"Q4_0": 60_000_000},
                   matmul_params_by_type={"Q4_0": 106_000_000}, head_type="Q8_0", head_bytes=30_000_000,
                   head_params=28_000_000, n_embd=576, n_vocab=49152)


def cal(dram=10e9, cache=30e9, gemm=100e9, node=50e-9) -> HostCalibration:
    per = {1: Rate(dram, dram / 2), 2: Rate(dram * 1.5, dram)}
    c = HostCalibration(variant="test", cpu="test")
    for ty in ("F16", "Q8_0", "Q4_0"):
        c.decode_bytes_s[ty] = dict(per)
        c.cache_bytes_s[ty] = {1: Rate(cache, cache / 2), 2: Rate(cache * 1.5, cache)}
        c.prefill_ops_s[ty] = {1: Rate(gemm, gemm / 2), 2: Rate(gemm * 1.8, gemm)}
    c.node_s = {1: Rate(node, node * 2), 2: Rate(node * 1.5, node * 3)}
    return c


def test_shipped_devices_load_and_published_file_is_not_a_device():
    assert {"snapdragon-865", "snapdragon-8-gen-2", "raspberry-pi-5"} <= set(list_devices())
    assert "published_arm" not in list_devices()
    sd = load_device("snapdragon-865")
    assert [c.count for c in sd.clusters] == [1, 3, 4]
    with pytest.raises(ValueError, match="unknown device"):
        load_device("pentium-4")


def test_published_measurements_are_sourced_data():
    doc = published()
    assert len(doc["measurements"]) >= 5
    for m in doc["measurements"]:
        assert m["url"].startswith("https://") and m["quote"] and m["device"] in doc["devices"]
        assert m["pp_tok_s"] > 0 and m["tg_tok_s"] > 0
        for f in ("size", "threads"):  # a missing field is declared unknown and its stand-in stated
            key = {"size": "size_gib", "threads": "threads"}[f]
            if m[key] is None:
                assert f in m["unknown"] and f in m["assumed_for_estimate"]


def test_host_terms_add_up_and_move_the_right_way():
    t = host_terms(STATS, cal(), 1, 64, 64)
    assert t.decode_s == pytest.approx(sum(t.decode.values()))
    assert t.decode["weights, memory-bound types"] == pytest.approx(60e6 / 10e9)
    assert t.decode_bound == "memory bandwidth" and "DRAM" in t.why  # cache 3x faster than DRAM
    slow_mem = host_terms(STATS, cal(dram=5e9), 1, 64, 64)
    assert slow_mem.decode_s > 1.5 * t.decode_s
    assert slow_mem.prefill["matmul compute"] == pytest.approx(t.prefill["matmul compute"])
    assert host_terms(STATS, cal(), 1, 256, 64).prefill_s > 3.5 * t.prefill["matmul compute"]
    # a type whose kernel is no faster on cache-resident weights is compute-bound
    assert host_terms(STATS, cal(cache=10e9), 1, 64, 64).decode_bound == "kernel compute"
    # per-op overhead dominates when ops are expensive
    assert host_terms(STATS, cal(node=1e-4), 1, 64, 64).decode_bound == "per-op overhead"
    median = host_terms(STATS, cal(), 1, 64, 64, "median")
    assert median.decode_s > t.decode_s and median.prefill_s > t.prefill_s


def test_device_estimate_is_an_ordered_range_with_error_and_source():
    dev = load_device("snapdragon-865")
    e = estimate(STATS, dev, n_prompt=64, n_gen=64)
    assert e.kind == "estimate" and e.assumptions[0].startswith("ESTIMATE")
    for lo_hi, mid in ((e.decode_tok_s_range, e.decode_tok_s), (e.prefill_tok_s_range, e.prefill_tok_s),
                       (e.ttft_ms_range, e.ttft_ms)):
        assert lo_hi[0] <= mid <= lo_hi[1]
    assert e.e2e_ms_range[0] < e.e2e_ms_range[1]
    assert e.decode_bound == "memory bandwidth"  # batch-1 decode of a 4-bit model on a phone
    assert "published" in e.calibration
    err = e.measured_error
    assert err["n"] >= 10 and 0 <= err["median_abs_error"] <= err["worst_abs_error"]
    assert e.prefill_tok_s > e.decode_tok_s
    faster_mem = estimate(STATS, replace(dev, memory_bandwidth_gbs=dev.memory_bandwidth_gbs * 2))
    assert faster_mem.decode_tok_s > 1.8 * e.decode_tok_s
    assert faster_mem.prefill_terms_ms["matmul compute"] == pytest.approx(e.prefill_terms_ms["matmul compute"])
    assert estimate(STATS, dev, n_threads=1).ttft_ms > 2 * estimate(STATS, dev, n_threads=4).ttft_ms
    assert estimate(STATS, dev, n_prompt=16).ttft_ms < e.ttft_ms  # prefix reuse: fewer new tokens


def test_arm_fit_and_leave_one_out():
    fit = fit_arm()
    assert fit.eta[0] <= fit.eta[1] <= fit.eta[2] <= 1 and fit.k[0] <= fit.k[1] <= fit.k[2] <= 1
    rows = loo_errors()
    assert len(rows) == len(published()["measurements"])
    for r in rows:  # the point left out is not in its own fit
        assert fit_arm(exclude=r["id"]).n_points == fit.n_points - 1


def test_calibration_round_trips_and_merges_best():
    a, b = cal(dram=10e9), cal(dram=12e9, node=20e-9)
    c = HostCalibration.from_dict(json.loads(json.dumps(a.to_dict())))
    assert c.decode_bytes_s["Q4_0"][1].best == 10e9
    c.merge_best(b)
    assert c.decode_bytes_s["Q4_0"][1].best == 12e9 and c.node_s[1].best == 20e-9


@pytest.mark.slow
def test_model_stats_of_smollm2_q4_1():
    s = model_stats(default_model_path())
    assert s.n_layer == 30 and s.n_head == 9 and s.n_head_kv == 3 and s.head_dim == 64
    assert s.tied_embeddings and s.head_params == 49152 * 576 and s.n_vocab == 49152
    assert set(s.bytes_by_type) == {"Q4_1", "Q8_0", "F32"}
    assert sum(s.matmul_bytes_by_type.values()) + s.head_bytes + s.bytes_by_type["F32"] == s.weight_bytes
    assert s.kv_bytes_per_position == 2 * 30 * 3 * 64 * 2


def test_prefill_per_op_cost_is_its_own_term():
    c = cal()
    base = host_terms(STATS, c, 1, 64, 64)
    c.node_prefill_s = {1: Rate(1e-5, 2e-5), 2: Rate(1e-5, 2e-5)}
    t = host_terms(STATS, c, 1, 64, 64)
    assert t.prefill["per-op overhead"] == pytest.approx(484 * 1e-5)  # SmolLM2-like: 30 x 16 + 4 ops
    assert t.decode == base.decode  # decode keeps c_node
    off = host_terms(STATS, c, 1, 64, 64, per_op=False)
    assert off.decode["per-op overhead"] == 0 and off.prefill["per-op overhead"] == 0
    # calibrations written before these fields existed still load
    d = cal().to_dict()
    for k in ("node_prefill_s", "node_chain_s", "graph"):
        d.pop(k)
    assert HostCalibration.from_dict(d).node_prefill_s == {}


def test_tiny_graph_model_runs_in_the_core(tmp_path):
    """The graph that calibrates the per-op cost is a valid 30-layer Llama GGUF the core loads and runs."""
    from finllm_edge import Engine
    from finllm_edge.lab import graph_calibration as gc
    from finllm_edge.lab.latency_model import n_ops

    path = gc.write_tiny_gguf(tmp_path / "tiny.gguf")
    s = model_stats(path)
    assert (s.n_layer, s.n_head, s.n_head_kv, s.n_vocab) == (30, 4, 2, 312) and n_ops(s) == 484
    assert s.weight_bytes < 3e6  # its weights are negligible: the measured time is the graph's
    with Engine(path, n_ctx=128, n_threads=1) as e:
        out = e.generate_tokens(e.tokenize("abc"), max_tokens=8, ignore_eos=True)
        "".join(out)
        assert len(out.tokens) == 8


def test_per_op_cost_is_measured_minus_predicted_over_ops(monkeypatch, tmp_path):
    from finllm_edge.lab import graph_calibration as gc

    monkeypatch.setattr(gc, "measure", lambda bench, model, t, reps: {"tg": [3e-3, 2e-3, 4e-3],
                                                                      "pp": [5e-2, 4e-2, 6e-2]})
    c = cal(node=0.0)
    g = gc.per_op_costs(c, tmp_path / "llama-bench", tmp_path, [1], 3)
    stats = model_stats(g["model"])
    pred = host_terms(stats, c, 1, 64, 64, per_op=False)
    assert g["n_ops"] == 484
    assert g["decode"][1].best == pytest.approx((2e-3 - pred.decode_s) / 484)
    assert g["decode"][1].median == pytest.approx((3e-3 - host_terms(stats, c, 1, 64, 64, "median",
                                                                    per_op=False).decode_s) / 484)
    assert g["prefill"][1].best == pytest.approx((4e-2 - pred.prefill_s) / 484)
    monkeypatch.setattr(gc, "measure", lambda *a: {"tg": [1e-9], "pp": [1e-9]})  # faster than predicted
    assert gc.per_op_costs(c, tmp_path / "llama-bench", tmp_path, [1], 1)["decode"][1].best == 0.0


def test_model_stats_groups_matrices_by_shape(tmp_path):
    from finllm_edge.lab import graph_calibration as gc
    from finllm_edge.lab.estimate import parse_shape_key, shape_key

    s = model_stats(gc.write_tiny_gguf(tmp_path / "tiny.gguf"))
    n, d, kv, ff = gc.N_LAYER, gc.N_EMBD, gc.N_HEAD_KV * (gc.N_EMBD // gc.N_HEAD), gc.N_FF
    want = {shape_key("F16", d, d): 2 * n * d * d, shape_key("F16", d, kv): 2 * n * d * kv,
            shape_key("F16", d, ff): 2 * n * d * ff, shape_key("F16", ff, d): n * ff * d}
    assert s.matmul_params_by_shape == want
    assert s.matmul_bytes_by_shape == {k: 2 * p for k, p in want.items()}  # F16: 2 bytes per weight
    assert sum(s.matmul_bytes_by_shape.values()) == sum(s.matmul_bytes_by_type.values())
    assert s.head_shape == shape_key("F16", d, 312)  # tied: the embedding is the head
    assert parse_shape_key(s.head_shape) == ("F16", d, 312)


def test_measured_shape_rates_replace_the_type_rate_for_their_matrices():
    from finllm_edge.lab.estimate import shape_key

    a, b = shape_key("Q4_0", 576, 576), shape_key("Q4_0", 576, 1536)
    shaped = replace(STATS, matmul_bytes_by_shape={a: 20_000_000, b: 30_000_000},
                     matmul_params_by_shape={a: 35_000_000, b: 55_000_000}, head_shape=shape_key("Q8_0", 576, 49152))
    c = cal()  # per type: DRAM 10 GB/s, 64-column products 100 Gops/s at 1 thread
    base = host_terms(shaped, c, 1, 64, 0)
    # unmeasured shapes and the unshaped rest (10 MB, 16 M params of Q4_0) run at the type's rates
    assert base.decode_s == pytest.approx(host_terms(STATS, c, 1, 64, 0).decode_s)
    c.shape_decode_bytes_s[a] = {1: Rate(5e9, 4e9)}
    c.shape_prefill_ops_s[b] = {1: Rate(50e9, 40e9)}
    c.shape_decode_bytes_s[shaped.head_shape] = {1: Rate(20e9, 10e9)}
    t = host_terms(shaped, c, 1, 64, 0)
    assert t.decode["weights, memory-bound types"] == pytest.approx(20e6 / 5e9 + 30e6 / 10e9 + 10e6 / 10e9)
    assert t.decode["output head"] == pytest.approx(30e6 / 20e9)
    assert t.prefill["matmul compute"] == pytest.approx(2 * 64 * (35e6 / 100e9 + 55e6 / 50e9 + 16e6 / 100e9))
    # another thread count has no shape rate: the type's rate again
    assert host_terms(shaped, c, 2, 64, 0).decode_s == pytest.approx(host_terms(STATS, c, 2, 64, 0).decode_s)
    # shape rates survive the cache file and merge as best-of; older files without them still load
    back = HostCalibration.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back.shape_decode_bytes_s[a][1] == Rate(5e9, 4e9)
    back.merge_best(replace(cal(), shape_decode_bytes_s={a: {1: Rate(6e9, 3e9)}}))
    assert back.shape_decode_bytes_s[a][1] == Rate(6e9, 4e9)
    d = c.to_dict()
    d.pop("shape_decode_bytes_s"), d.pop("shape_prefill_ops_s")
    assert HostCalibration.from_dict(d).shape_decode_bytes_s == {}


@pytest.mark.slow
def test_calibrate_shapes_times_the_given_shape_with_llama_cpp_kernels():
    """The per-shape micro-benchmark (fe-kernel-bench from the pinned llama.cpp) fills only the shapes asked for."""
    from finllm_edge.lab.calibrate import calibrate_shapes
    from finllm_edge.lab.estimate import shape_key

    c = HostCalibration(variant="host-avx512", cpu="test")
    key = shape_key("Q8_0", 576, 1536)
    calibrate_shapes(c, [key], [1], reps=2)
    assert set(c.shape_decode_bytes_s) == {key} and set(c.shape_prefill_ops_s) == {key}
    r = c.shape_decode_bytes_s[key][1]
    assert 1e8 < r.median <= r.best < 1e12  # bytes/s: between 0.1 GB/s and 1 TB/s
    assert c.shape_prefill_ops_s[key][1].best > 1e8 and c.seconds > 0


def test_arm_relative_kernel_speed_comes_from_the_host_only_for_like_kernels():
    from finllm_edge.lab.latency_model import relative_kernel_speed

    c = cal()
    for ty, rate in (("Q4_0", 100e9), ("Q8_0", 50e9), ("Q4_K", 80e9), ("F16", 40e9)):
        c.prefill_ops_s[ty] = {1: Rate(rate, rate / 2)}
    c.repacked = {"Q4_0": True, "Q4_K": True, "Q8_0": False, "F16": False}  # as on AVX-512 hosts
    assert relative_kernel_speed(c, "Q4_K") == pytest.approx(0.8)  # repacked on both
    assert relative_kernel_speed(c, "F16") == pytest.approx(0.4)  # plain on both
    assert relative_kernel_speed(c, "Q8_0") == 1.0  # ARM repacks Q8_0, this host does not
    assert relative_kernel_speed(c, "Q5_K") == 1.0  # not measured
    # before runtime repacking ARM ran Q4_0 on a plain dot product too: no host ratio applies
    assert all(relative_kernel_speed(c, t, "pre-repack") == 1.0 for t in ("Q4_K", "F16", "Q8_0"))
    c.repacked = {}  # calibrations that did not record it
    assert relative_kernel_speed(c, "Q4_K") == 1.0
    assert relative_kernel_speed(None, "Q4_K") == 1.0
