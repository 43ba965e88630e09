// fe-bench: warm-up + N repetitions of one request (prompt processing, then generation)
// through the finllm-edge C API; prints a LatencyProfile JSON and a table.
// Exit codes: 0 ok, 1 runtime error (bad model, failed generation, I/O), 2 usage error.
#include "device_info.h"
#include "finllm_edge.h"
#include "options.h"
#include "profile_json.h"
#include "sha256.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace {

int fail(const std::string &msg) {
    fprintf(stderr, "fe-bench: error: %s\n", msg.c_str());
    return 1;
}

double median(std::vector<double> v) { return fe_percentile(v.data(), v.size(), 50.0); }

std::string utc_now() {
    char b[32];
    time_t t = time(nullptr);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

// Exactly n_prompt tokens: from a text file (repeated as needed) or a fixed pseudo-random
// sequence (like llama-bench), starting with BOS when the model uses one.
bool make_prompt(fe_model *m, const BenchOptions &o, int32_t n_vocab, std::vector<int32_t> *out, std::string *err) {
    out->clear();
    if (!o.prompt_file.empty()) {
        std::ifstream f(o.prompt_file, std::ios::binary);
        if (!f) {
            *err = "cannot read --prompt-file '" + o.prompt_file + "'";
            return false;
        }
        std::stringstream ss;
        ss << f.rdbuf();
        std::string text = ss.str();
        std::vector<int32_t> toks(text.size() + 16);
        int32_t n = 0;
        if (fe_tokenize(m, text.c_str(), true, false, toks.data(), (int32_t)toks.size(), &n) != FE_OK || n <= 0) {
            *err = "--prompt-file '" + o.prompt_file + "' gives no tokens: " + fe_last_error();
            return false;
        }
        toks.resize((size_t)n);
        size_t body = toks.size() > 1 && toks[0] == fe_token_bos(m) ? 1 : 0;
        out->assign(toks.begin(), toks.end());
        while ((int32_t)out->size() < o.n_prompt) out->insert(out->end(), toks.begin() + (long)body, toks.end());
        out->resize((size_t)o.n_prompt);
        return true;
    }
    uint64_t state = 0x2545F4914F6CDD1Dull;
    int32_t bos = fe_token_bos(m);
    for (int32_t i = 0; i < o.n_prompt; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        out->push_back(i == 0 && bos >= 0 ? bos : (int32_t)((state >> 33) % (uint64_t)n_vocab));
    }
    return true;
}

bool write_file(const std::string &path, const std::string &text, std::string *err) {
    std::string tmp = path + ".tmp";
    FILE *f = fopen(tmp.c_str(), "wb");
    if (!f || fwrite(text.data(), 1, text.size(), f) != text.size() || fclose(f) != 0) {
        *err = "cannot write '" + path + "': " + strerror(errno);
        return false;
    }
    if (rename(tmp.c_str(), path.c_str()) != 0) {
        *err = "cannot rename '" + tmp + "' to '" + path + "': " + strerror(errno);
        return false;
    }
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    BenchOptions o;
    std::string err;
    int pr = parse_options(argc, argv, &o, &err);
    if (pr == 1) {
        print_usage(argv[0]);
        return 0;
    }
    if (pr == 2) {
        fprintf(stderr, "fe-bench: error: %s\n", err.c_str());
        return 2;
    }
    fe_set_log_level(o.verbose ? FE_LOG_INFO : FE_LOG_NONE);
    if (!o.cpu_mask.empty() && !apply_cpu_mask(o.cpu_mask, &err)) return fail(err);

    BenchProfile p;
    p.device = read_device_info();
    p.n_threads = o.n_threads > 0 ? o.n_threads : std::max<int32_t>(1, (int32_t)p.device.affinity.size());
    p.cores_used = p.device.affinity;

    fe_model *model = nullptr;
    fe_model_params mp = fe_model_default_params();
    if (fe_model_load(o.model.c_str(), &mp, &model) != FE_OK)
        return fail("cannot load model '" + o.model + "': " + fe_last_error());
    fe_model_info info;
    fe_model_get_info(model, &info);

    char hex[65] = {0};
    if (fe_sha256_file(o.model.c_str(), hex) != 0) {
        fe_model_free(model);
        return fail("cannot read '" + o.model + "' to hash it");
    }

    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = (uint32_t)o.n_ctx;
    sp.n_batch = (uint32_t)std::min(o.n_batch, o.n_ctx);
    sp.n_threads = p.n_threads;
    sp.n_threads_batch = p.n_threads;
    fe_session *session = nullptr;
    if (fe_session_create(model, &sp, &session) != FE_OK) {
        std::string e = fe_last_error();
        fe_model_free(model);
        return fail("cannot create a session: " + e);
    }

    std::vector<int32_t> prompt;
    if (!make_prompt(model, o, info.n_vocab, &prompt, &err)) {
        fe_session_free(session);
        fe_model_free(model);
        return fail(err);
    }

    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = o.n_gen;
    gp.ignore_eos = true;

    auto one = [&](fe_profile *prof) -> bool {
        fe_generate_result r;
        if (fe_generate_tokens(session, prompt.data(), (int32_t)prompt.size(), &gp, &r) != FE_OK) {
            err = std::string("generation failed: ") + fe_last_error();
            return false;
        }
        fe_session_get_profile(session, prof);
        return true;
    };

    p.thermal_before = read_thermal(p.cores_used);
    fe_profile prof{};
    bool ok = true;
    for (int i = 0; ok && i < o.warmup; i++) ok = one(&prof);
    std::vector<double> pre, dec, ttft, e2e, all_tokens;  // percentiles pool every measured token, as the Engine
    for (int i = 0; ok && i < o.repetitions; i++) {
        ok = one(&prof);
        if (!ok) break;
        pre.push_back(prof.prefill_tok_s);
        dec.push_back(prof.decode_tok_s);
        ttft.push_back(prof.ttft_ms);
        e2e.push_back(prof.e2e_ms);
        all_tokens.insert(all_tokens.end(), prof.token_ms, prof.token_ms + prof.n_token_ms);
        if (i == o.repetitions - 1) p.token_ms.assign(prof.token_ms, prof.token_ms + prof.n_token_ms);
    }
    p.thermal_after = read_thermal(p.cores_used);
    fe_session_free(session);
    if (!ok) {
        fe_model_free(model);
        return fail(err);
    }

    struct stat st;
    p.tool_version = fe_version();
    p.llama_cpp_version = fe_llama_version();
    p.created_at = utc_now();
    p.model_path = o.model;
    p.model_sha256 = hex;
    p.model_type = info.desc;
    p.model_size_bytes = stat(o.model.c_str(), &st) == 0 ? (int64_t)st.st_size : (int64_t)info.file_size_bytes;
    p.bits_per_weight = info.bits_per_weight;
    p.variant = fe_build_variant();
    p.emulated = o.emulated;
    p.n_ctx = o.n_ctx;
    p.n_prompt = (int32_t)prompt.size();
    p.n_gen = o.n_gen;
    p.repetitions = o.repetitions;
    p.warmup = o.warmup;
    p.load_ms = info.load_ms;
    p.ttft_ms = median(ttft);
    p.prefill_tok_s = median(pre);
    p.prefill_tok_s_min = *std::min_element(pre.begin(), pre.end());
    p.prefill_tok_s_max = *std::max_element(pre.begin(), pre.end());
    p.decode_tok_s = median(dec);
    p.decode_tok_s_min = *std::min_element(dec.begin(), dec.end());
    p.decode_tok_s_max = *std::max_element(dec.begin(), dec.end());
    p.token_ms_p50 = fe_percentile(all_tokens.data(), all_tokens.size(), 50.0);
    p.token_ms_p90 = fe_percentile(all_tokens.data(), all_tokens.size(), 90.0);
    p.token_ms_p99 = fe_percentile(all_tokens.data(), all_tokens.size(), 99.0);
    p.e2e_ms = median(e2e);
    p.peak_rss_mb = fe_peak_rss_mb();
    p.has_thermal = !p.thermal_before.temps_c.empty() || !p.thermal_before.cur_freq_khz.empty();
    fe_model_free(model);

    std::string json = profile_json(p);
    if (!o.output.empty()) {
        if (!write_file(o.output, json, &err)) return fail(err);
    } else {
        fputs(json.c_str(), stdout);
        fflush(stdout);
    }
    if (!o.json_only) print_table(stderr, p);
    return 0;
}
