// Constrained decoding inside the core (grammar.cpp): bounds-checked GBNF / JSON Schema -> a
// llama.cpp grammar sampler, and the grammar step of the token loop. Not installed.
#pragma once

#include "internal.h"

#include <vector>

namespace fe {

// fe_sampling_check's part: at most one of grammar/json_schema, each within FE_GRAMMAR_MAX_BYTES.
fe_status check_grammar_params(const fe_sampling_params &p);

// The grammar sampler of a request (*out NULL when neither is set). With vocab NULL only the
// bounds and the conversion are checked. FE_ERR_INVALID_ARG with the reason on a refusal.
fe_status make_grammar(const llama_vocab *vocab, const char *grammar, const char *json_schema, llama_sampler **out);

// One constrained token: greedy checks the unconstrained choice (argmax, or `chain` with
// penalties) against the grammar and masks the vocabulary only when it is refused; sampled
// requests mask first, then run `chain`. Accepts the token into `chain` (not the grammar:
// the caller does that after its end-of-generation check). `cur` is scratch space.
// `idx` is the logits row (llama_get_logits_ith: -1 = the last).
fe_status sample_constrained(llama_context *ctx, int32_t idx, llama_sampler *chain, llama_sampler *grammar,
                             bool greedy, int32_t n_vocab, std::vector<llama_token_data> &cur, llama_token *out);

// CPU time of the calling thread in ms (the per-token grammar bound: load on other cores does
// not trip it, unlike wall time).
double thread_cpu_ms();

}  // namespace fe
