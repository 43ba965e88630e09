// Internal: drift references and monitors (see "drift monitoring" in finllm_edge.h).
#pragma once

#include "finllm_edge.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct fe_drift_ref {
    std::string tokenizer_sha256;      // 64 hex digits
    int32_t n_vocab = 0;
    fe_drift_params params{};          // n_named = the named tokens actually kept
    std::vector<int32_t> named;        // bucket i < n_named holds token named[i]
    std::vector<double> probs;         // smoothed reference distribution over the buckets
    std::vector<double> log_probs;
    std::vector<uint16_t> bucket_of;   // token id -> bucket (n_vocab entries)
    double watch_threshold = 0, drift_threshold = 0, watch_rate = 0, drift_rate = 0;
    uint64_t n_ref_tokens = 0, n_calibration_windows = 0, calibration_seed = 0;
};

namespace fe {

// drift_ref.cpp: fills bucket_of and log_probs from named/probs (after building or loading).
void drift_ref_index(fe_drift_ref &ref);
// drift_ref.cpp: checks a reference's values (params, named ids, probs); FE_ERR_BAD_MODEL naming
// the field, `what` prefixing the message.
fe_status drift_ref_check(const fe_drift_ref &ref, const char *what);

}  // namespace fe
