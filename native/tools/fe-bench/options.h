// fe-bench command line.
#pragma once
#include <cstdint>
#include <string>

struct BenchOptions {
    std::string model;
    std::string prompt_file;
    std::string output;          // JSON destination ("" = stdout)
    std::string cpu_mask;        // hex affinity mask, e.g. 0x3 ("" = inherit)
    int32_t n_threads = 0;       // 0 = CPUs in the affinity mask
    int32_t n_prompt = 64;
    int32_t n_gen = 64;
    int32_t repetitions = 5;
    int32_t warmup = 1;
    int32_t n_ctx = 0;           // 0 = n_prompt + n_gen + 16
    int32_t n_batch = 2048;
    int32_t flash_attn = 0;      // fe_session_params.flash_attn
    bool random_prompt = false;  // llama-bench's pseudo-random token ids instead of text
    bool json_only = false;
    bool emulated = false;
    bool verbose = false;
};

// 0: run; 1: printed help, exit 0; 2: usage error (message in *err).
int parse_options(int argc, char **argv, BenchOptions *opt, std::string *err);
void print_usage(const char *argv0);
