// Clocks, percentiles and peak RSS.
#include "internal.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sys/resource.h>

namespace fe {

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

double elapsed_ms(double since_ms) { return now_ms() - since_ms; }

fe_profile request_profile(const RequestTimes &t, const std::vector<double> &token_ms) {
    fe_profile p{};
    p.load_ms = t.load_ms;
    p.tokenize_ms = t.tokenize_ms;
    p.prefill_ms = t.prefill_ms;
    p.ttft_ms = t.ttft_ms;
    p.prefill_tok_s = t.prefill_ms > 0 ? 1000.0 * (double)t.n_evaluated / t.prefill_ms : 0.0;
    double sum = 0;
    for (double v : token_ms) sum += v;
    p.decode_tok_s = sum > 0 ? 1000.0 * (double)token_ms.size() / sum : 0.0;
    p.token_ms_p50 = fe_percentile(token_ms.data(), token_ms.size(), 50);
    p.token_ms_p90 = fe_percentile(token_ms.data(), token_ms.size(), 90);
    p.token_ms_p99 = fe_percentile(token_ms.data(), token_ms.size(), 99);
    p.e2e_ms = elapsed_ms(t.t_start);
    p.peak_rss_mb = fe_peak_rss_mb();
    p.n_prompt = t.n_prompt;
    p.n_gen = t.n_gen;
    p.n_prompt_reused = t.n_reused;
    return p;
}

}  // namespace fe

extern "C" {

double fe_percentile(const double *values, size_t n, double q) {
    if (!values || n == 0) return 0.0;
    if (!(q >= 0.0)) q = 0.0;  // also catches NaN
    if (q > 100.0) q = 100.0;
    std::vector<double> xs;
    try {
        xs.assign(values, values + n);
    } catch (...) {
        return 0.0;
    }
    std::sort(xs.begin(), xs.end());
    double pos = (double)(n - 1) * q / 100.0;
    size_t lo = (size_t)std::floor(pos);
    size_t hi = std::min(lo + 1, n - 1);
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - (double)lo);
}

double fe_peak_rss_mb(void) {
    // VmHWM is the peak RSS on Linux/Android; getrusage is the portable fallback.
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            long kb = 0;
            if (strncmp(line, "VmHWM:", 6) == 0 && sscanf(line + 6, "%ld", &kb) == 1) {
                fclose(f);
                return (double)kb / 1024.0;
            }
        }
        fclose(f);
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) return (double)ru.ru_maxrss / 1024.0;
    return 0.0;
}

}  // extern "C"
