#include "profile_json.h"

#include <cmath>

namespace {

std::string esc(const std::string &s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': o += "\\\""; break;
            case '\\': o += "\\\\"; break;
            case '\n': o += "\\n"; break;
            case '\r': o += "\\r"; break;
            case '\t': o += "\\t"; break;
            default:
                if (c < 0x20) {
                    char b[8];
                    snprintf(b, sizeof b, "\\u%04x", c);
                    o += b;
                } else {
                    o += (char)c;
                }
        }
    }
    return o + "\"";
}

std::string num(double v) {
    if (!std::isfinite(v)) v = 0.0;  // JSON has no NaN/Inf; the schema wants finite numbers
    char b[64];
    snprintf(b, sizeof b, "%.6f", v);
    std::string s = b;  // trim trailing zeros but keep one decimal so it stays a JSON float
    while (s.size() > 1 && s.back() == '0' && s[s.size() - 2] != '.') s.pop_back();
    return s;
}

template <typename T>
std::string int_list(const std::vector<T> &v) {
    std::string o = "[";
    for (size_t i = 0; i < v.size(); i++) o += (i ? ", " : "") + std::to_string(v[i]);
    return o + "]";
}

std::string thermal_obj(const ThermalSample &t) {
    std::string o = "{\"temps_c\": {";
    size_t i = 0;
    for (auto &kv : t.temps_c) o += (i++ ? ", " : "") + esc(kv.first) + ": " + num(kv.second);
    o += "}, \"cur_freq_khz\": {";
    i = 0;
    for (auto &kv : t.cur_freq_khz) o += (i++ ? ", " : "") + esc(std::to_string(kv.first)) + ": " + std::to_string(kv.second);
    return o + "}}";
}

}  // namespace

std::string profile_json(const BenchProfile &p) {
    std::string o = "{\n";
    auto field = [&](const char *k, const std::string &v, bool last = false) {
        o += "  " + esc(k) + ": " + v + (last ? "\n" : ",\n");
    };
    field("schema_version", "1");
    field("tool", esc("fe-bench"));
    field("tool_version", esc(p.tool_version));
    field("llama_cpp_version", esc(p.llama_cpp_version));
    field("created_at", esc(p.created_at));
    field("model_path", esc(p.model_path));
    field("model_sha256", esc(p.model_sha256));
    field("model_type", esc(p.model_type));
    field("model_size_bytes", std::to_string(p.model_size_bytes));
    field("bits_per_weight", num(p.bits_per_weight));
    std::string gov = "{", mf = "{";
    size_t i = 0;
    for (auto &kv : p.device.governor) gov += (i++ ? ", " : "") + esc(std::to_string(kv.first)) + ": " + esc(kv.second);
    i = 0;
    for (auto &kv : p.device.max_freq_khz) mf += (i++ ? ", " : "") + esc(std::to_string(kv.first)) + ": " + std::to_string(kv.second);
    field("device", "{\"cpu_model\": " + esc(p.device.cpu_model) + ", \"arch\": " + esc(p.device.arch) +
                        ", \"cores_total\": " + std::to_string(p.device.cores_total) +
                        ", \"cores_used\": " + int_list(p.cores_used) + ", \"affinity\": " + int_list(p.device.affinity) +
                        ", \"governor\": " + gov + "}, \"max_freq_khz\": " + mf +
                        "}, \"mem_total_mb\": " + num(p.device.mem_total_mb) + "}");
    field("variant", p.variant.empty() ? "null" : esc(p.variant));
    field("emulated", p.emulated ? "true" : "false");
    field("n_threads", std::to_string(p.n_threads));
    field("n_ctx", std::to_string(p.n_ctx));
    field("n_prompt", std::to_string(p.n_prompt));
    field("n_gen", std::to_string(p.n_gen));
    field("repetitions", std::to_string(p.repetitions));
    field("warmup", std::to_string(p.warmup));
    field("load_ms", num(p.load_ms));
    field("ttft_ms", num(p.ttft_ms));
    field("prefill_tok_s", num(p.prefill_tok_s));
    field("prefill_tok_s_min", num(p.prefill_tok_s_min));
    field("prefill_tok_s_max", num(p.prefill_tok_s_max));
    field("decode_tok_s", num(p.decode_tok_s));
    field("decode_tok_s_min", num(p.decode_tok_s_min));
    field("decode_tok_s_max", num(p.decode_tok_s_max));
    field("token_ms_p50", num(p.token_ms_p50));
    field("token_ms_p90", num(p.token_ms_p90));
    field("token_ms_p99", num(p.token_ms_p99));
    std::string tl = "[";
    for (size_t k = 0; k < p.token_ms.size(); k++) tl += (k ? ", " : "") + num(p.token_ms[k]);
    field("token_ms", tl + "]");
    field("e2e_ms", num(p.e2e_ms));
    field("peak_rss_mb", num(p.peak_rss_mb));
    field("thermal", p.has_thermal ? "{\"before\": " + thermal_obj(p.thermal_before) +
                                         ", \"after\": " + thermal_obj(p.thermal_after) + "}"
                                   : std::string("null"),
          true);
    return o + "}\n";
}

void print_table(FILE *out, const BenchProfile &p) {
    fprintf(out, "\nfe-bench %s | llama.cpp %s\n", p.tool_version.c_str(), p.llama_cpp_version.c_str());
    fprintf(out, "model    %s (%s, %.2f bpw, %.1f MiB)\n", p.model_path.c_str(), p.model_type.c_str(),
            p.bits_per_weight, (double)p.model_size_bytes / (1024.0 * 1024.0));
    fprintf(out, "device   %s, %s, %d threads, cpus %s\n", p.device.cpu_model.c_str(), p.device.arch.c_str(),
            p.n_threads, [&] {
                std::string s;
                for (size_t i = 0; i < p.cores_used.size(); i++) s += (i ? "," : "") + std::to_string(p.cores_used[i]);
                return s;
            }().c_str());
    fprintf(out, "workload pp%d + tg%d, n_ctx %d, %d reps (+%d warm-up)%s\n\n", p.n_prompt, p.n_gen, p.n_ctx,
            p.repetitions, p.warmup, p.emulated ? ", EMULATED" : "");
    fprintf(out, "| metric            |     median |        min |        max |\n");
    fprintf(out, "|-------------------|-----------:|-----------:|-----------:|\n");
    fprintf(out, "| prefill tok/s     | %10.2f | %10.2f | %10.2f |\n", p.prefill_tok_s, p.prefill_tok_s_min, p.prefill_tok_s_max);
    fprintf(out, "| decode tok/s      | %10.2f | %10.2f | %10.2f |\n", p.decode_tok_s, p.decode_tok_s_min, p.decode_tok_s_max);
    fprintf(out, "| metric            |      value |\n");
    fprintf(out, "|-------------------|-----------:|\n");
    fprintf(out, "| load ms           | %10.2f |\n", p.load_ms);
    fprintf(out, "| ttft ms           | %10.2f |\n", p.ttft_ms);
    fprintf(out, "| token ms p50      | %10.3f |\n", p.token_ms_p50);
    fprintf(out, "| token ms p90      | %10.3f |\n", p.token_ms_p90);
    fprintf(out, "| token ms p99      | %10.3f |\n", p.token_ms_p99);
    fprintf(out, "| e2e ms            | %10.2f |\n", p.e2e_ms);
    fprintf(out, "| peak RSS MiB      | %10.1f |\n\n", p.peak_rss_mb);
}
