// The one LatencyProfile writer (finllm_edge/schemas/latency_profile.schema.json), for every
// binding: fe-bench, the Python Engine (ctypes), the ONNX backend, JNI.
#include "device.h"
#include "internal.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <sys/stat.h>

namespace {

constexpr int kSchemaVersion = 1;

std::string utc_now() {
    char b[32];
    time_t t = time(nullptr);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

bool bad_time(double v) { return !std::isfinite(v) || v < 0.0; }

double median(const std::vector<double> &v) { return fe_percentile(v.data(), v.size(), 50.0); }

// A thermal sample with no reading at all: {"temps_c": {}, "cur_freq_khz": {}}.
bool empty_sample(const std::string &s) {
    std::string t;
    for (char c : s)
        if (!isspace((unsigned char)c)) t += c;
    return t == "{\"temps_c\":{},\"cur_freq_khz\":{}}";
}

fe_status build(const fe_run_timing *runs, size_t n_runs, const fe_profile_meta *meta, std::string &o) {
    if (!runs || n_runs == 0) return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: no runs (runs NULL or n_runs 0)");
    if (!meta) return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: meta is NULL");
    for (size_t i = 0; i < n_runs; i++) {
        const fe_run_timing &r = runs[i];
        if (bad_time(r.ttft_ms) || bad_time(r.prefill_ms) || bad_time(r.e2e_ms))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: run %zu has a negative or non-finite time", i);
        if (r.n_prompt < 0 || r.n_gen < 0 || r.n_prompt_reused < 0 || r.n_prompt_reused > r.n_prompt)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: run %zu has negative token counts or n_prompt_reused > n_prompt", i);
        if (r.n_token_ms > 0 && !r.token_ms)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: run %zu: token_ms is NULL but n_token_ms = %zu",
                                 i, r.n_token_ms);
        for (size_t k = 0; k < r.n_token_ms; k++)
            if (bad_time(r.token_ms[k]))
                return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: run %zu: token_ms[%zu] is negative or non-finite",
                                     i, k);
    }
    if (meta->n_threads < 1 || meta->n_ctx < 1 || meta->warmup < 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: n_threads = %d, n_ctx = %d, warmup = %d; use n_threads >= 1, "
                             "n_ctx >= 1, warmup >= 0", meta->n_threads, meta->n_ctx, meta->warmup);
    if (meta->cores_used == nullptr && meta->n_cores_used > 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: cores_used is NULL but n_cores_used = %zu", meta->n_cores_used);
    if (bad_time(meta->load_ms) || !std::isfinite(meta->bits_per_weight) || meta->bits_per_weight < 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: load_ms or bits_per_weight is negative or non-finite");
    if (meta->thermal_before_json && !fe::json_valid(meta->thermal_before_json, '{'))
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: thermal_before_json is not a JSON object "
                             "(pass the string fe_thermal_json() returned, or NULL)");

    // Model provenance: explicit fields first, then the loaded model.
    fe_model_info info{};
    bool have_info = meta->model && fe_model_get_info(meta->model, &info) == FE_OK;
    std::string model_path = meta->model_path ? meta->model_path : (meta->model ? meta->model->path : "");
    if (model_path.empty())
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_profile_json: no model path (set meta.model_path or meta.model)");
    std::string model_type = meta->model_type ? meta->model_type : have_info ? info.desc : "unknown";
    double bpw = meta->bits_per_weight > 0 ? meta->bits_per_weight : have_info ? info.bits_per_weight : 0.0;
    double load_ms = meta->load_ms > 0 ? meta->load_ms : have_info ? info.load_ms : 0.0;
    uint64_t size = meta->model_size_bytes;
    struct stat st;
    if (size == 0 && stat(model_path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) size = (uint64_t)st.st_size;
    if (size == 0 && have_info) size = info.file_size_bytes;
    std::string sha;
    if (meta->model_sha256) {
        sha = meta->model_sha256;
    } else {
        char hex[65];
        bool same_file = meta->model && model_path == meta->model->path;
        fe_status s = same_file ? fe::model_sha256(meta->model, hex) : fe_file_sha256(model_path.c_str(), hex);
        if (s != FE_OK) return s;  // message names the path
        sha = hex;
    }

    std::string root = fe::sysfs_root();
    std::vector<int> affinity = fe::process_affinity();
    std::vector<int> cores;
    if (meta->cores_used) {
        cores.assign(meta->cores_used, meta->cores_used + meta->n_cores_used);
    } else {
        fe_thread_choice c;
        fe::choose_threads(meta->n_threads, root, affinity, &c);
        cores.assign(c.cores, c.cores + c.n_cores);
    }

    std::vector<double> ttft, e2e, pre, dec, pooled;
    for (size_t i = 0; i < n_runs; i++) {
        const fe_run_timing &r = runs[i];
        ttft.push_back(r.ttft_ms);
        e2e.push_back(r.e2e_ms);
        pre.push_back(r.prefill_ms > 0 ? 1000.0 * (r.n_prompt - r.n_prompt_reused) / r.prefill_ms : 0.0);
        double sum = 0;
        for (size_t k = 0; k < r.n_token_ms; k++) sum += r.token_ms[k];
        dec.push_back(sum > 0 ? 1000.0 * (double)r.n_token_ms / sum : 0.0);
        if (r.n_token_ms) pooled.insert(pooled.end(), r.token_ms, r.token_ms + r.n_token_ms);
    }
    const fe_run_timing &last = runs[n_runs - 1];
    std::string variant = meta->variant ? meta->variant : fe_build_variant();
    std::string before = meta->thermal_before_json ? meta->thermal_before_json : "null";
    std::string after = fe::thermal_json(root);
    bool no_thermal = (before == "null" || empty_sample(before)) && empty_sample(after);

    using fe::json_num;
    using fe::json_str;
    o = "{\n";
    auto field = [&](const char *k, const std::string &v, bool end = false) {
        o += "  " + json_str(k) + ": " + v + (end ? "\n" : ",\n");
    };
    auto i32 = [](long long v) { return std::to_string(v); };
    field("schema_version", i32(kSchemaVersion));
    field("tool", json_str(meta->tool ? meta->tool : "libfinllm_edge"));
    field("tool_version", json_str(fe_version()));
    field("llama_cpp_version", json_str(meta->runtime_version ? meta->runtime_version : fe_llama_version()));
    field("created_at", json_str(utc_now()));
    field("model_path", json_str(model_path));
    field("model_sha256", json_str(sha));
    field("model_type", json_str(model_type));
    field("model_size_bytes", i32((long long)size));
    field("bits_per_weight", json_num(bpw));
    field("device", fe::device_json(root, cores, affinity));
    field("variant", variant.empty() ? "null" : json_str(variant));
    field("emulated", meta->emulated ? "true" : "false");
    field("n_threads", i32(meta->n_threads));
    field("n_ctx", i32(meta->n_ctx));
    field("n_prompt", i32(last.n_prompt));
    field("n_prompt_reused", i32(last.n_prompt_reused));
    field("n_gen", i32(last.n_gen));
    field("repetitions", i32((long long)n_runs));
    field("warmup", i32(meta->warmup));
    field("load_ms", json_num(load_ms));
    field("ttft_ms", json_num(median(ttft)));
    field("prefill_tok_s", json_num(median(pre)));
    field("prefill_tok_s_min", json_num(*std::min_element(pre.begin(), pre.end())));
    field("prefill_tok_s_max", json_num(*std::max_element(pre.begin(), pre.end())));
    field("decode_tok_s", json_num(median(dec)));
    field("decode_tok_s_min", json_num(*std::min_element(dec.begin(), dec.end())));
    field("decode_tok_s_max", json_num(*std::max_element(dec.begin(), dec.end())));
    field("token_ms_p50", json_num(fe_percentile(pooled.data(), pooled.size(), 50.0)));
    field("token_ms_p90", json_num(fe_percentile(pooled.data(), pooled.size(), 90.0)));
    field("token_ms_p99", json_num(fe_percentile(pooled.data(), pooled.size(), 99.0)));
    std::string tl = "[";
    for (size_t k = 0; k < last.n_token_ms; k++) tl += (k ? ", " : "") + json_num(last.token_ms[k]);
    field("token_ms", tl + "]");
    field("e2e_ms", json_num(median(e2e)));
    field("peak_rss_mb", json_num(fe_peak_rss_mb()));
    field("thermal", no_thermal ? std::string("null") : "{\"before\": " + before + ", \"after\": " + after + "}", true);
    o += "}\n";
    return FE_OK;
}

}  // namespace

extern "C" {

fe_profile_meta fe_profile_default_meta(void) {
    fe_profile_meta m;
    memset(&m, 0, sizeof m);
    m.n_threads = fe_default_n_threads();  // n_ctx stays 0: the caller must say it
    return m;
}

char *fe_profile_json(const fe_run_timing *runs, size_t n_runs, const fe_profile_meta *meta) {
    std::string o;
    fe_status st = fe::guard("fe_profile_json", [&]() -> fe_status { return build(runs, n_runs, meta, o); });
    if (st != FE_OK) return nullptr;
    char *s = fe::c_string(o);
    if (!s) fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_profile_json: out of memory");
    return s;
}

}  // extern "C"
