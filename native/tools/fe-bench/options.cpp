#include "options.h"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

void print_usage(const char *argv0) {
    printf("usage: %s -m MODEL.gguf [options]\n\n"
           "Runs warm-up + N repetitions of one request (prompt processing, then generation)\n"
           "through the finllm-edge C API and prints a LatencyProfile JSON (stdout or -o) and a\n"
           "table (stderr).\n\n"
           "  -m, --model PATH        GGUF model (required)\n"
           "  -t, --threads N         threads (default: the performance cores in the affinity mask)\n"
           "      --cpu-mask HEX      pin the process to these CPUs, e.g. 0x3 = cpu0,cpu1\n"
           "  -p, --n-prompt N        prompt tokens (default 64)\n"
           "      --prompt-file PATH  take the prompt tokens from this text (repeated to length;\n"
           "                          default: the library's built-in finance text, fe_bench_text())\n"
           "      --random-prompt     llama-bench's prompt instead: BOS + fixed pseudo-random token ids\n"
           "  -n, --n-gen N           tokens to generate (default 64; EOS is ignored)\n"
           "  -r, --repetitions N     measured repetitions (default 5)\n"
           "      --warmup N          warm-up repetitions, not measured (default 1)\n"
           "  -c, --ctx N             context size (default n_prompt + n_gen + 16)\n"
           "  -b, --batch N           prompt batch size (default 2048, capped at the context)\n"
           "  -fa, --flash-attn 0|1   llama.cpp's flash attention (default 0, the session default;\n"
           "                          llama-bench's default is 1)\n"
           "  -o, --output PATH       write the JSON here instead of stdout\n"
           "      --json-only         no table\n"
           "      --emulated          mark the profile as emulated (under qemu)\n"
           "  -v, --verbose           show llama.cpp logs\n"
           "  -h, --help\n",
           argv0);
}

static bool parse_int(const char *s, int32_t lo, int32_t hi, int32_t *out) {
    if (!s || !*s) return false;
    errno = 0;
    char *end = nullptr;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = (int32_t)v;
    return true;
}

int parse_options(int argc, char **argv, BenchOptions *o, std::string *err) {
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&](const char *name) -> const char * {
            if (i + 1 >= argc) {
                *err = std::string("option ") + name + " needs a value";
                return nullptr;
            }
            return argv[++i];
        };
        auto int_opt = [&](const char *name, int32_t lo, int32_t hi, int32_t *dst) -> bool {
            const char *v = value(name);
            if (!v) return false;
            if (!parse_int(v, lo, hi, dst)) {
                *err = std::string("option ") + name + ": '" + v + "' is not an integer in [" + std::to_string(lo) +
                       ", " + std::to_string(hi) + "]";
                return false;
            }
            return true;
        };
        const char *v = nullptr;
        if (a == "-h" || a == "--help") return 1;
        else if (a == "-m" || a == "--model") { if (!(v = value("-m"))) return 2; o->model = v; }
        else if (a == "--prompt-file") { if (!(v = value("--prompt-file"))) return 2; o->prompt_file = v; }
        else if (a == "-o" || a == "--output") { if (!(v = value("-o"))) return 2; o->output = v; }
        else if (a == "--cpu-mask") { if (!(v = value("--cpu-mask"))) return 2; o->cpu_mask = v; }
        else if (a == "-t" || a == "--threads") { if (!int_opt("-t", 1, 1024, &o->n_threads)) return 2; }
        else if (a == "-p" || a == "--n-prompt") { if (!int_opt("-p", 1, 1 << 20, &o->n_prompt)) return 2; }
        else if (a == "-n" || a == "--n-gen") { if (!int_opt("-n", 1, 1 << 20, &o->n_gen)) return 2; }
        else if (a == "-r" || a == "--repetitions") { if (!int_opt("-r", 1, 100000, &o->repetitions)) return 2; }
        else if (a == "--warmup") { if (!int_opt("--warmup", 0, 100000, &o->warmup)) return 2; }
        else if (a == "-c" || a == "--ctx") { if (!int_opt("-c", 0, 1 << 24, &o->n_ctx)) return 2; }
        else if (a == "-b" || a == "--batch") { if (!int_opt("-b", 1, 1 << 20, &o->n_batch)) return 2; }
        else if (a == "-fa" || a == "--flash-attn") { if (!int_opt("-fa", 0, 1, &o->flash_attn)) return 2; }
        else if (a == "--json-only") o->json_only = true;
        else if (a == "--random-prompt") o->random_prompt = true;
        else if (a == "--emulated") o->emulated = true;
        else if (a == "-v" || a == "--verbose") o->verbose = true;
        else {
            *err = "unknown option '" + a + "' (see --help)";
            return 2;
        }
    }
    if (o->model.empty()) {
        *err = "no model given; use -m MODEL.gguf";
        return 2;
    }
    if (o->n_ctx == 0) o->n_ctx = o->n_prompt + o->n_gen + 16;
    return 0;
}
