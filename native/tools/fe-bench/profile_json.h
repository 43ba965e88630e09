// The LatencyProfile (finllm_edge/schemas/latency_profile.schema.json) as JSON, plus a table.
#pragma once
#include "device_info.h"

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

struct BenchProfile {
    std::string tool_version, llama_cpp_version, created_at;
    std::string model_path, model_sha256, model_type;
    int64_t model_size_bytes = 0;
    double bits_per_weight = 0;
    DeviceInfo device;
    std::vector<int> cores_used;
    std::string variant;  // "" -> null
    bool emulated = false;
    int32_t n_threads = 0, n_ctx = 0, n_prompt = 0, n_gen = 0, repetitions = 0, warmup = 0;
    double load_ms = 0, ttft_ms = 0;
    double prefill_tok_s = 0, prefill_tok_s_min = 0, prefill_tok_s_max = 0;
    double decode_tok_s = 0, decode_tok_s_min = 0, decode_tok_s_max = 0;
    double token_ms_p50 = 0, token_ms_p90 = 0, token_ms_p99 = 0;
    std::vector<double> token_ms;
    double e2e_ms = 0, peak_rss_mb = 0;
    bool has_thermal = false;
    ThermalSample thermal_before, thermal_after;
};

std::string profile_json(const BenchProfile &p);
void print_table(FILE *out, const BenchProfile &p);
