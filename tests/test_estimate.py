"""Roofline estimate: device files, bounds, monotonicity, GGUF reading, host measurements."""

import json
from dataclasses import replace

import pytest

from finllm_edge.lab.estimate import (
    ModelStats,
    estimate,
    host_device,
    list_devices,
    load_device,
    measure_bandwidth_gbs,
    measure_matmul_gops,
    model_stats,
)
from finllm_edge.models import default_model_path

STATS = ModelStats(path="m.gguf", n_params=135_000_000, matmul_params=134_000_000, weight_bytes=86_000_000,
                   decode_weight_bytes=86_000_000, n_layer=30, n_head=9, n_head_kv=3, head_dim=64,
                   tied_embeddings=True)


def test_shipped_devices_load_with_their_assumptions():
    assert {"snapdragon-865", "snapdragon-8-gen-2", "raspberry-pi-5"} <= set(list_devices())
    for name in list_devices():
        d = load_device(name)
        assert d.clusters and d.memory_bandwidth_gbs > 0 and d.assumptions and d.sources
        assert 0 < d.bandwidth_efficiency <= 1 and 0 < d.compute_efficiency <= 1
        assert d.default_threads <= sum(c.count for c in d.clusters)
    sd = load_device("snapdragon-865")
    assert [c.count for c in sd.clusters] == [1, 3, 4]
    assert sd.peak_int8_gops(4) == pytest.approx((2.84 + 3 * 2.42) * 64)  # the 4 big cores
    assert sd.peak_int8_gops(5) == pytest.approx((2.84 + 3 * 2.42) * 64 + 1.8 * 16)
    with pytest.raises(ValueError, match="unknown device"):
        load_device("pentium-4")


def test_device_from_user_json(tmp_path):
    d = json.loads((load_device.__globals__["resources"].files("finllm_edge.lab") / "devices" / "raspberry-pi-5.json")
                   .read_text())
    d["id"], d["memory_bandwidth_gbs"] = "my-board", 34.2
    f = tmp_path / "my-board.json"
    f.write_text(json.dumps(d))
    assert load_device(str(f)).memory_bandwidth_gbs == 34.2


def test_decode_estimate_stays_under_both_roofs():
    dev = load_device("snapdragon-865")
    e = estimate(STATS, dev, n_prompt=64, n_gen=64)
    assert e.kind == "estimate" and e.assumptions[0].startswith("ESTIMATE")
    bw_roof = dev.usable_bandwidth_gbs * 1e9 / STATS.decode_weight_bytes
    compute_roof = dev.usable_gops() * 1e9 / (2 * STATS.matmul_params)
    assert e.decode_tok_s < bw_roof and e.decode_tok_s <= compute_roof
    assert e.decode_bound == "memory"  # batch-1 decode of a 4-bit model
    assert e.prefill_tok_s > e.decode_tok_s  # prefill reuses weights across the batch
    assert e.ttft_ms == pytest.approx(64 / e.prefill_tok_s * 1e3)


def test_estimate_moves_the_right_way():
    dev = load_device("snapdragon-865")
    base = estimate(STATS, dev)
    faster_mem = estimate(STATS, replace(dev, memory_bandwidth_gbs=dev.memory_bandwidth_gbs * 2))
    assert faster_mem.decode_tok_s > 1.9 * base.decode_tok_s
    assert faster_mem.ttft_ms == pytest.approx(base.ttft_ms)  # prefill is compute-bound
    bigger = estimate(replace(STATS, decode_weight_bytes=STATS.decode_weight_bytes * 2,
                              weight_bytes=STATS.weight_bytes * 2), dev)
    assert bigger.decode_tok_s < base.decode_tok_s
    assert estimate(STATS, dev, n_prompt=256).ttft_ms > 3.5 * base.ttft_ms
    weak = replace(dev, compute_efficiency=0.001)
    assert estimate(STATS, weak).decode_bound == "compute"
    assert estimate(STATS, dev, n_threads=1).ttft_ms > estimate(STATS, dev, n_threads=4).ttft_ms


@pytest.mark.slow
def test_model_stats_of_smollm2_q4_1():
    s = model_stats(default_model_path())
    assert s.n_layer == 30 and s.n_head == 9 and s.n_head_kv == 3 and s.head_dim == 64
    assert s.tied_embeddings  # SmolLM2 reuses token_embd as the output head
    assert 134e6 < s.n_params < 135e6
    assert s.decode_weight_bytes == s.weight_bytes  # tied: the whole embedding is read per token
    assert set(s.bytes_by_type) == {"Q4_1", "Q8_0", "F32"}
    assert s.weight_bytes == sum(s.bytes_by_type.values())
    assert s.kv_bytes_per_position == 2 * 30 * 3 * 64 * 2


def test_host_measurements_are_plausible():
    bw = measure_bandwidth_gbs(n_threads=1, mb_per_thread=16, reps=2)
    gops = measure_matmul_gops(size=256, reps=2)
    assert 0.5 < bw < 2000 and 0.5 < gops < 100_000
    host = host_device(2, bw, gops)
    assert host.usable_bandwidth_gbs == bw and host.usable_gops(2) == pytest.approx(gops)
