// fe-bench: warm-up + N repetitions of one request (prompt processing, then generation)
// through the finllm-edge C API; prints a LatencyProfile JSON and a table. The loop is the
// library's fe_benchmark and the JSON its fe_profile_json: fe-bench parses options, pins
// CPUs, writes the file and prints the table.
// Exit codes: 0 ok, 1 runtime error (bad model, failed generation, I/O), 2 usage error.
#include "cpu_mask.h"
#include "finllm_edge.h"
#include "options.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

int fail(const std::string &msg) {
    fprintf(stderr, "fe-bench: error: %s\n", msg.c_str());
    return 1;
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

// A top-level field of the library's profile JSON (one "  \"key\": value" line each).
std::string field(const std::string &json, const char *key) {
    std::string k = std::string("\n  \"") + key + "\": ";
    size_t at = json.find(k);
    if (at == std::string::npos) return "";
    at += k.size();
    size_t end = json.find('\n', at);
    std::string v = json.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (!v.empty() && v.back() == ',') v.pop_back();
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return v;
}

double num(const std::string &json, const char *key) { return atof(field(json, key).c_str()); }

void print_table(FILE *out, const std::string &j) {
    std::string dev = field(j, "device");
    auto devfield = [&](const char *k) {
        std::string key = std::string("\"") + k + "\": ";
        size_t at = dev.find(key);
        if (at == std::string::npos) return std::string("?");
        at += key.size();
        size_t end = dev[at] == '"' ? dev.find('"', at + 1) + 1 : dev.find_first_of(",}", dev[at] == '[' ? dev.find(']', at) : at);
        std::string v = dev.substr(at, end - at);
        if (v.size() >= 2 && v.front() == '"') v = v.substr(1, v.size() - 2);
        return v;
    };
    fprintf(out, "\nfe-bench %s | llama.cpp %s\n", field(j, "tool_version").c_str(), field(j, "llama_cpp_version").c_str());
    fprintf(out, "model    %s (%s, %.2f bpw, %.1f MiB)\n", field(j, "model_path").c_str(), field(j, "model_type").c_str(),
            num(j, "bits_per_weight"), num(j, "model_size_bytes") / (1024.0 * 1024.0));
    fprintf(out, "device   %s, %s, %s threads, cpus %s\n", devfield("cpu_model").c_str(), devfield("arch").c_str(),
            field(j, "n_threads").c_str(), devfield("cores_used").c_str());
    fprintf(out, "workload pp%s + tg%s, n_ctx %s, %s reps (+%s warm-up)%s\n\n", field(j, "n_prompt").c_str(),
            field(j, "n_gen").c_str(), field(j, "n_ctx").c_str(), field(j, "repetitions").c_str(),
            field(j, "warmup").c_str(), field(j, "emulated") == "true" ? ", EMULATED" : "");
    fprintf(out, "| metric            |     median |        min |        max |\n");
    fprintf(out, "|-------------------|-----------:|-----------:|-----------:|\n");
    fprintf(out, "| prefill tok/s     | %10.2f | %10.2f | %10.2f |\n", num(j, "prefill_tok_s"), num(j, "prefill_tok_s_min"),
            num(j, "prefill_tok_s_max"));
    fprintf(out, "| decode tok/s      | %10.2f | %10.2f | %10.2f |\n", num(j, "decode_tok_s"), num(j, "decode_tok_s_min"),
            num(j, "decode_tok_s_max"));
    fprintf(out, "| metric            |      value |\n");
    fprintf(out, "|-------------------|-----------:|\n");
    fprintf(out, "| load ms           | %10.2f |\n", num(j, "load_ms"));
    fprintf(out, "| ttft ms           | %10.2f |\n", num(j, "ttft_ms"));
    fprintf(out, "| token ms p50      | %10.3f |\n", num(j, "token_ms_p50"));
    fprintf(out, "| token ms p90      | %10.3f |\n", num(j, "token_ms_p90"));
    fprintf(out, "| token ms p99      | %10.3f |\n", num(j, "token_ms_p99"));
    fprintf(out, "| e2e ms            | %10.2f |\n", num(j, "e2e_ms"));
    fprintf(out, "| peak RSS MiB      | %10.1f |\n\n", num(j, "peak_rss_mb"));
}

// A user-supplied prompt file: a regular file (not /dev/zero, a FIFO or a directory, which
// would block or never end) of at most kMaxPromptFile bytes, read with a bound.
constexpr size_t kMaxPromptFile = 16u << 20;

bool read_prompt_file(const std::string &path, std::string *out, std::string *err) {
    const std::string what = "--prompt-file '" + path + "'";
    // O_NONBLOCK: opening a FIFO nobody writes to would block; fstat then refuses it
    int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *f = fd < 0 ? nullptr : fdopen(fd, "rb");
    if (!f) {
        *err = "cannot read " + what + ": " + strerror(errno);
        if (fd >= 0) close(fd);
        return false;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        *err = what + " is not a regular file (devices, FIFOs and directories are refused)";
        return false;
    }
    if ((uint64_t)st.st_size > kMaxPromptFile) {
        fclose(f);
        *err = what + " is " + std::to_string((long long)st.st_size) + " bytes; the limit is " +
               std::to_string(kMaxPromptFile) + " (16 MiB)";
        return false;
    }
    out->assign(kMaxPromptFile + 1, '\0');
    size_t n = fread(&(*out)[0], 1, kMaxPromptFile + 1, f);  // bounded even if the file grows
    fclose(f);
    out->resize(n);
    if (n > kMaxPromptFile) {
        *err = what + " grew past the limit of " + std::to_string(kMaxPromptFile) + " bytes (16 MiB) while being read";
        return false;
    }
    if (out->empty() || out->find('\0') != std::string::npos) {
        *err = what + " is empty or not text";
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

    std::string prompt_text;
    if (!o.prompt_file.empty() && !read_prompt_file(o.prompt_file, &prompt_text, &err)) return fail(err);

    const int32_t n_threads = o.n_threads > 0 ? o.n_threads : fe_default_n_threads();  // after --cpu-mask
    fe_model *model = nullptr;
    fe_model_params mp = fe_model_default_params();
    if (fe_model_load(o.model.c_str(), &mp, &model) != FE_OK)
        return fail("cannot load model '" + o.model + "': " + fe_last_error());

    fe_session_params sp = fe_session_default_params();
    sp.n_ctx = (uint32_t)o.n_ctx;
    sp.n_batch = (uint32_t)std::min(o.n_batch, o.n_ctx);
    sp.n_threads = n_threads;
    sp.n_threads_batch = n_threads;
    sp.flash_attn = o.flash_attn != 0;
    fe_session *session = nullptr;
    if (fe_session_create(model, &sp, &session) != FE_OK) {
        std::string e = fe_last_error();
        fe_model_free(model);
        return fail("cannot create a session: " + e);
    }

    fe_bench_params bp = fe_bench_default_params();
    bp.n_prompt = o.n_prompt;
    bp.n_gen = o.n_gen;
    bp.repetitions = o.repetitions;
    bp.warmup = o.warmup;
    bp.prompt_text = o.prompt_file.empty() ? nullptr : prompt_text.c_str();
    bp.random_tokens = o.random_prompt;
    fe_bench_result br;
    fe_status st = fe_benchmark(session, &bp, &br);
    if (st != FE_OK) {
        std::string e = fe_last_error();
        fe_session_free(session);
        fe_model_free(model);
        if (!o.prompt_file.empty() && st == FE_ERR_INVALID_ARG)
            return fail("--prompt-file '" + o.prompt_file + "': " + e);
        return fail("benchmark failed: " + e);
    }

    fe_profile_meta meta = fe_profile_default_meta();
    meta.tool = "fe-bench";
    meta.model = model;
    meta.model_path = o.model.c_str();
    meta.emulated = o.emulated;
    meta.n_threads = n_threads;
    meta.n_ctx = o.n_ctx;
    meta.warmup = o.warmup;
    meta.thermal_before_json = br.thermal_before_json;
    char *json = fe_profile_json(br.runs, br.n_runs, &meta);
    std::string jerr = json ? "" : fe_last_error();
    fe_bench_result_free(&br);
    fe_session_free(session);
    fe_model_free(model);
    if (!json) return fail("cannot write the profile: " + jerr);
    std::string text = json;
    fe_free(json);

    if (!o.output.empty()) {
        if (!write_file(o.output, text, &err)) return fail(err);
    } else {
        fputs(text.c_str(), stdout);
        fflush(stdout);
    }
    if (!o.json_only) print_table(stderr, text);
    return 0;
}
