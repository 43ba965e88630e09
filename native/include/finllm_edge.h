/*
 * finllm_edge.h - C API of finllm-edge: run a GGUF language model on a phone or a PC.
 *
 * Usage:
 *
 *     fe_model *model = NULL;
 *     fe_model_params mp = fe_model_default_params();
 *     if (fe_model_load("model.gguf", &mp, &model) != FE_OK) {
 *         fprintf(stderr, "load failed: %s\n", fe_last_error());
 *         return 1;
 *     }
 *     fe_session *s = NULL;
 *     fe_session_params sp = fe_session_default_params();
 *     sp.n_ctx = 2048;
 *     if (fe_session_create(model, &sp, &s) != FE_OK) { ... fe_last_error() ... }
 *
 *     fe_chat_message msgs[] = {{"user", "What is a bond coupon?"}};
 *     char prompt[4096];
 *     size_t len = 0;
 *     fe_chat_format(model, msgs, 1, true, prompt, sizeof prompt, &len);
 *
 *     fe_generate_params gp = fe_generate_default_params();
 *     gp.max_tokens = 128;
 *     gp.on_token = my_print_piece;           // bool (*)(const char*, size_t, int32_t, void*)
 *     fe_generate_result r;
 *     fe_status st = fe_generate(s, prompt, &gp, &r);
 *     fe_profile prof;
 *     fe_session_get_profile(s, &prof);       // ttft_ms, decode_tok_s, token_ms[], ...
 *
 *     fe_session_free(s);
 *     fe_model_free(model);
 *
 * Thread safety:
 *   - One session per thread at a time: never call into the same fe_session from two
 *     threads at once. Different sessions may run on different threads concurrently.
 *   - An fe_model is read-only after loading and may be shared by sessions on several
 *     threads; free it only after all its sessions are freed.
 *   - fe_session_cancel() is the exception: it may be called from any thread, at any time
 *     while the session is alive, to stop the generation in progress.
 *   - fe_last_error() is thread-local: it describes the last failed call on this thread.
 *   - fe_set_log_callback()/fe_set_log_level() are process-global; call them at startup.
 *
 * Errors: functions return fe_status (FE_OK = 0, negative = error) or NULL; they never
 * abort the process on bad input (NULL arguments, missing or non-GGUF files, zero
 * context). Every *_free accepts NULL.
 */
#ifndef FINLLM_EDGE_H
#define FINLLM_EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(FE_BUILDING_LIB)
#    define FE_API __declspec(dllexport)
#  else
#    define FE_API
#  endif
#else
#  define FE_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status and errors */

typedef enum fe_status {
    FE_OK                   = 0,
    FE_ERR_INVALID_ARG      = -1,  /* NULL pointer, zero/negative size, bad option value */
    FE_ERR_FILE_NOT_FOUND   = -2,  /* model path does not exist or cannot be opened */
    FE_ERR_BAD_MODEL        = -3,  /* not a GGUF file, truncated, or rejected by llama.cpp */
    FE_ERR_OUT_OF_MEMORY    = -4,
    FE_ERR_CONTEXT_OVERFLOW = -5,  /* prompt (+ generation) does not fit in n_ctx */
    FE_ERR_CANCELLED        = -6,  /* fe_session_cancel() stopped the generation */
    FE_ERR_DECODE           = -7,  /* llama.cpp failed to evaluate a batch */
    FE_ERR_TEMPLATE         = -8,  /* the model has no usable chat template */
    FE_ERR_BUFFER_TOO_SMALL = -9,  /* output buffer too small; *n_out holds the size needed */
    FE_ERR_INTERNAL         = -10, /* unexpected failure (a C++ exception caught at the boundary) */
    FE_ERR_BUSY             = -11  /* the session already runs a request (one at a time) */
} fe_status;

/* Name of a status code ("FE_ERR_BAD_MODEL"); never NULL. */
FE_API const char *fe_status_str(fe_status status);

/* Message of the last failed call on this thread ("" if none). Valid until the next
 * failing call on this thread. */
FE_API const char *fe_last_error(void);
FE_API void fe_clear_error(void);

/* ---------------------------------------------------------------- versions and logs */

FE_API const char *fe_version(void);            /* finllm-edge version, e.g. "0.1.0" */
FE_API const char *fe_llama_version(void);      /* e.g. "0.3.36 (0c1e57098bba)" */
FE_API const char *fe_build_variant(void);      /* CPU variant this lib was built for (native/variants.json), e.g. "x86-64-avx512-vnni" */

typedef enum fe_log_level {
    FE_LOG_DEBUG = 1,
    FE_LOG_INFO  = 2,
    FE_LOG_WARN  = 3,
    FE_LOG_ERROR = 4,
    FE_LOG_NONE  = 5
} fe_log_level;

typedef void (*fe_log_callback)(fe_log_level level, const char *text, void *user_data);

/* Messages below `level` (from finllm-edge and llama.cpp) are dropped; default
 * FE_LOG_NONE (silent). llama.cpp errors always reach fe_last_error() regardless. */
FE_API void fe_set_log_level(fe_log_level level);
/* NULL restores the default sink (stderr). */
FE_API void fe_set_log_callback(fe_log_callback callback, void *user_data);

/* ---------------------------------------------------------------- model */

typedef struct fe_model fe_model;

typedef struct fe_model_params {
    bool use_mmap;        /* map the file instead of reading it (default true) */
    bool use_mlock;       /* lock the weights in RAM (default false) */
    bool check_tensors;   /* let llama.cpp validate tensor data (slow; default false) */
} fe_model_params;

FE_API fe_model_params fe_model_default_params(void);

/* Load a GGUF model. The file is checked (exists, GGUF magic, version, plausible header)
 * before llama.cpp sees it. On failure *out is set to NULL. */
FE_API fe_status fe_model_load(const char *path, const fe_model_params *params, fe_model **out);
FE_API void fe_model_free(fe_model *model);

typedef struct fe_model_info {
    char     desc[128];        /* llama.cpp's description, e.g. "llama ?B Q4_0" */
    uint64_t size_bytes;       /* bytes of tensor data */
    uint64_t file_size_bytes;
    uint64_t n_params;
    double   bits_per_weight;  /* 8 * size_bytes / n_params */
    int32_t  n_ctx_train;
    int32_t  n_vocab;
    bool     has_chat_template;
    double   load_ms;          /* wall time of fe_model_load (mmap + first touch) */
} fe_model_info;

FE_API fe_status fe_model_get_info(const fe_model *model, fe_model_info *out);

/* A GGUF metadata value as text (e.g. "tokenizer.chat_template", "general.name").
 * FE_ERR_INVALID_ARG when the key is absent; buffer rules as fe_detokenize. */
FE_API fe_status fe_model_meta(const fe_model *model, const char *key, char *buf, size_t buf_size, size_t *n_out);

/* Check that `path` looks like a GGUF file llama.cpp may open (magic, version, counts
 * against the file size), without loading it. FE_OK or FE_ERR_FILE_NOT_FOUND /
 * FE_ERR_BAD_MODEL with a message naming the field. (Full structural validation of
 * every key and tensor lives here too as it grows.) */
FE_API fe_status fe_gguf_preflight(const char *path);

/* ---------------------------------------------------------------- tokens and text */

/* Tokenize `text`. On FE_ERR_BUFFER_TOO_SMALL, *n_out is the number of tokens needed. */
FE_API fe_status fe_tokenize(const fe_model *model, const char *text, bool add_special,
                             bool parse_special, int32_t *tokens, int32_t max_tokens,
                             int32_t *n_out);

/* Text of tokens (no NUL counted in *n_out; a NUL is written when it fits). On
 * FE_ERR_BUFFER_TOO_SMALL, *n_out is the number of bytes needed (without the NUL). */
FE_API fe_status fe_detokenize(const fe_model *model, const int32_t *tokens, int32_t n_tokens,
                               bool render_special, char *buf, size_t buf_size, size_t *n_out);

/* Text of one token; special tokens (<|im_end|>) rendered when `special`. Same buffer rules
 * as fe_detokenize; FE_ERR_INVALID_ARG for an id outside the vocabulary. */
FE_API fe_status fe_token_piece(const fe_model *model, int32_t token, bool special, char *buf, size_t buf_size,
                                size_t *n_out);

FE_API int32_t fe_token_eos(const fe_model *model);   /* -1 if none or model is NULL */
FE_API int32_t fe_token_bos(const fe_model *model);   /* -1 if none or model is NULL */
FE_API bool fe_token_is_eog(const fe_model *model, int32_t token);

typedef struct fe_chat_message {
    const char *role;     /* "system", "user", "assistant" */
    const char *content;
} fe_chat_message;

/* Render messages with the model's own Jinja chat template (tokenizer.chat_template, or the
 * override set by fe_model_set_chat_template), with Jinja semantics, by llama.cpp's C++
 * Jinja engine: the same bytes in every binding. Variables: messages, bos_token,
 * eos_token, add_generation_prompt (= add_assistant). A template is untrusted input: it
 * has no file or process access, and its work (loop iterations, string growth, macro
 * depth, time) is bounded; a template past a bound is FE_ERR_TEMPLATE naming it.
 * NUL-terminated when it fits; see FE_ERR_BUFFER_TOO_SMALL. */
FE_API fe_status fe_chat_format(const fe_model *model, const fe_chat_message *messages,
                                size_t n_messages, bool add_assistant, char *buf,
                                size_t buf_size, size_t *n_out);

/* The same renderer for a template that is not in a loaded GGUF (e.g. an ONNX model folder's
 * chat_template): `template_source` with the given bos/eos token texts (may be NULL = ""). */
FE_API fe_status fe_chat_render(const char *template_source, const char *bos_token, const char *eos_token,
                                const fe_chat_message *messages, size_t n_messages, bool add_assistant,
                                char *buf, size_t buf_size, size_t *n_out);

/* Use `template_source` (Jinja text; NULL restores the GGUF's own) for this model's chat
 * prompts. The template is parsed and checked now: FE_ERR_TEMPLATE on a syntax error or a
 * bound. Call it before sharing the model with sessions on other threads. */
FE_API fe_status fe_model_set_chat_template(fe_model *model, const char *template_source);

/* Declare the sha256 of the model file (64 hex digits): one the app already knows, e.g. from
 * `finllm-edge convert`'s manifest or from its check of the download. The core then uses it
 * wherever it needs the model's identity (saved prompt state: the tag written on save and the
 * "made for another model" check on load; profiles) instead of hashing the file, which costs
 * a cold process ~60 ms for a 100 MB model here and several hundred ms for a 1B model on a
 * phone. The core trusts it: declare only a hash you verified for this file. NULL clears it
 * (the file is hashed again). FE_ERR_INVALID_ARG for anything but 64 hex digits (either case).
 * Call it before sharing the model with sessions on other threads. */
FE_API fe_status fe_model_set_sha256(fe_model *model, const char *sha256_hex);

/* ---------------------------------------------------------------- session */

typedef struct fe_session fe_session;

/* A fresh random seed per request (the default). Any other value makes sampled requests
 * repeatable: the same model, prompt, settings and seed give the same tokens in every
 * binding (Python, JNI, fe-bench, aarch64). */
#define FE_SEED_RANDOM 0xFFFFFFFFu

/* Sampling of one request. The defaults are the product's defaults everywhere: every
 * binding starts from fe_sampling_default_params() and changes only what its caller set.
 * Out-of-range values are refused (FE_ERR_INVALID_ARG naming the field and its range). */
typedef struct fe_sampling_params {
    float    temperature;    /* 0 = greedy (default 0); finite, 0 <= t <= 100 */
    int32_t  top_k;          /* 0 = off (default 40); >= 0 */
    float    top_p;          /* 1 = off (default 0.95); 0 < p <= 1 */
    float    min_p;          /* 0 = off (default 0.05); 0 <= p < 1 */
    float    repeat_penalty; /* 1 = off (default 1.0); 0 < r <= 10 */
    int32_t  repeat_last_n;  /* tokens the penalty looks back at; -1 = the whole context (default 64) */
    uint32_t seed;           /* FE_SEED_RANDOM (default) or a fixed seed */
    /* Constrained decoding (see "constrained decoding" below); at most one of the two, NULL = none.
     * The text is copied when a request starts. */
    const char *grammar;     /* a GBNF grammar (llama.cpp's syntax, start rule "root") */
    const char *json_schema; /* a JSON Schema (text), converted to a grammar by the core */
} fe_sampling_params;

FE_API fe_sampling_params fe_sampling_default_params(void);

/* Check sampling values; FE_OK or FE_ERR_INVALID_ARG with the field and its valid range. */
FE_API fe_status fe_sampling_check(const fe_sampling_params *params);

typedef struct fe_session_params {
    uint32_t n_ctx;          /* context length in tokens; 1..(what fits in RAM) (default 2048).
                                Above the model's training context: allowed, with a warning log */
    uint32_t n_batch;        /* prompt tokens per decode call (default 512) */
    int32_t  n_threads;      /* decode threads, 1..CPUs online (default: the performance cores) */
    int32_t  n_threads_batch;/* prefill threads, 1..CPUs online (default: same as n_threads) */
    bool     prefix_reuse;   /* keep the KV cache between requests and reuse the longest common token
                                prefix (default true); false: every request starts from an empty cache */
    bool     flash_attn;     /* llama.cpp's flash attention (default false). true: prefill of prompts of
                                >= 64 tokens is faster (x1.2-1.3 on x86 here), but a reused prefix must
                                have been evaluated in batches of >= 64 tokens and the last 64 prompt
                                tokens are always evaluated again (see "prefix reuse" below) */
    bool     reuse_generated;/* with prefix_reuse: also reuse cached tokens whose K/V a fresh prefill
                                would not reproduce bit for bit: generated tokens (decoded one at a
                                time) and rows of the other flash-attention kernel path, as
                                llama-cpp-python and llama-server do (default false). A chat whose
                                app sends back the model's own answers then evaluates only the new
                                message (at least its last token, not 2); the output may differ
                                slightly from a fresh evaluation (logits by up to ~1 here): no longer
                                token-identical to no reuse */
} fe_session_params;

FE_API fe_session_params fe_session_default_params(void);
/* The ranges of a session's parameters, without a model: FE_ERR_INVALID_ARG naming the field
 * (fe_session_create checks them too, and the KV cache's size against RAM). A binding calls it
 * before loading a model, so that a bad parameter costs no load. */
FE_API fe_status fe_session_params_check(const fe_session_params *params);

/* Number of CPUs online: the upper bound of n_threads. */
FE_API int32_t fe_cpu_count(void);
/* The default thread count: the performance cores this process may run on (native/src/threads.cpp). */
FE_API int32_t fe_default_n_threads(void);

/* Create a session (a llama.cpp context over a loaded model). Out-of-range parameters are
 * FE_ERR_INVALID_ARG, refused before anything is allocated. */
FE_API fe_status fe_session_create(fe_model *model, const fe_session_params *params,
                                   fe_session **out);
FE_API void fe_session_free(fe_session *session);

/* Forget the conversation (KV cache). FE_ERR_BUSY while a request is active. */
FE_API fe_status fe_session_reset(fe_session *session);

/* Prefix reuse (fe_session_params.prefix_reuse, default on). A session remembers exactly which
 * tokens its KV cache holds: the prompt tokens and the generated tokens that were decoded
 * (the last sampled token of a request is not). A new request keeps the longest common token
 * prefix of its prompt with the cached tokens that came from prompt evaluation, and evaluates
 * only the rest. The output is token-identical to a session without reuse (greedy and seeded
 * sampling; penalties look back over generated tokens only, as without reuse). That rests on
 * a property of llama.cpp's CPU kernels measured on the pinned build: a token's K/V bits depend
 * on the tokens before it and on the kernel path of the batch it was evaluated in, nothing else.
 * With flash attention off (the default) every batch of >= 2 tokens takes one path and a token
 * decoded alone another (logits differ by up to ~1). With flash_attn on, batches of >= 64 tokens
 * take a tiled kernel, batches of 2..63 a row kernel, and a lone token a third. Hence:
 *   - prompts are evaluated in chunks on one path (>= 2 tokens with flash attention off; with it
 *     on, >= 64 tokens for prompts of >= 64 tokens when n_batch >= 128, else 2..63), with or
 *     without reuse, and at least the last 2 (flash attention on, long prompts: 64) prompt
 *     tokens are always evaluated again;
 *   - cached tokens are reused only when they came from the path this prompt's prefill takes
 *     (with flash attention on, a cached prompt of < 64 tokens is not reused by a longer one);
 *   - generated tokens (decoded one at a time) are not reused: a chat's next turn reuses the
 *     system prompt and earlier prompts, and evaluates the previous answer again (unless
 *     reuse_generated is set: then every cached token is reusable, and exactness is given up);
 *   - with n_batch < 3 reuse is off.
 * So flash attention trades a faster cold prefill for a coarser reuse: a short follow-up
 * question after a long cached prompt costs a 64-token prefill instead of a few tokens.
 * After a cancel or an error during prefill only the fully evaluated chunks stay cached; after
 * an error while generating the cache is cleared. fe_profile.n_prompt_reused says how many
 * prompt tokens were reused. */

/* Tokens the session's KV cache holds now (copies up to max_tokens; *n_out = count). */
FE_API fe_status fe_session_cached_tokens(const fe_session *session, int32_t *tokens, int32_t max_tokens,
                                          int32_t *n_out);

/* Settle: evaluate again, as a prompt, the cached tokens after the reusable prefix (in a chat:
 * the answer just generated, whose tokens were decoded one at a time), so that the next request
 * reuses them exactly instead of evaluating them itself. Call it while the session is idle (the
 * user reads the answer): a chat's next-turn time to first token then drops to what it costs to
 * evaluate the new message, with outputs still token-identical to no reuse. The work is what the
 * next request would otherwise do, moved out of its time to first token; a next prompt that does
 * not repeat the answer gains nothing. *n_evaluated (may be NULL) = tokens evaluated (0: nothing
 * to settle, or prefix_reuse off). fe_session_cancel stops it (FE_ERR_CANCELLED; the chunks
 * evaluated before stay cached); FE_ERR_BUSY while a request is active. */
FE_API fe_status fe_session_settle(fe_session *session, int32_t *n_evaluated);

/* ------------------------------------------------ saved prompt state (prefix KV files)
 *
 * Save the KV state of a token prefix (e.g. a system prompt) to a file and load it in a later
 * process, so that the first request after launch reuses it instead of evaluating it:
 *
 *     fe_session_save_prompt(s, system_prompt, "sys.festate");  // prefills it if needed
 *     ...later, in another process, same model file and llama.cpp build:
 *     fe_session_load_state(s, "sys.festate");                   // cache := that prefix
 *     fe_generate(s, system_prompt_plus_question, &gp, &r);      // reuses the prefix
 *
 * The file records the model's sha256, the llama.cpp version and CPU variant of this library
 * (fe_llama_version(), fe_build_variant(): K/V bits depend on both), the active LoRA adapter set
 * (see runtime LoRA adapters), the n_ctx and n_vocab of
 * the session that wrote it, the token prefix and llama.cpp's sequence state, with a sha256 over
 * everything before it. It is written atomically (temporary file, fsync, rename). A state
 * file is untrusted input: sizes and counts are checked against the file size before anything
 * is allocated, then the checksum, then the model hash, the llama.cpp version and the
 * vocabulary and the flash-attention setting; a file made for another model, llama.cpp build, CPU
 * variant or flash-attention setting, truncated, altered or
 * hand-made is refused with FE_ERR_BAD_MODEL and a message naming what is wrong ("state
 * file ...: checksum mismatch", "...: made for another model ..."), and the session's cache
 * is then empty. A missing file is FE_ERR_FILE_NOT_FOUND. The prefix must be shorter than the
 * loading session's n_ctx. These calls are FE_ERR_BUSY while a request is active; saving
 * runs a prefill (max_tokens 0) when the prefix is not cached, which replaces the session's
 * profile. Loading works with prefix_reuse off too, but only a session with it on reuses.
 * Verifying the model hashes the model file once per process (fe_file_sha256: 98 MB in ~0.2 s
 * with the CPU's SHA instructions on a loaded 2-core host, 3.7x faster than without); it is
 * cached for later loads and profiles. A model whose sha256 was declared (fe_model_set_sha256)
 * is not hashed. */

/* Save the state of `tokens` (1..n_ctx-1 tokens). */
FE_API fe_status fe_session_save_prefix(fe_session *session, const int32_t *tokens, int32_t n_tokens,
                                        const char *path);
/* Save the state of `text`, tokenized as fe_request_start does by default (BOS added,
 * special tokens parsed). */
FE_API fe_status fe_session_save_prompt(fe_session *session, const char *text, const char *path);
/* Save the state of `messages` rendered with the chat template without the generation
 * prompt, tokenized as fe_request_start_chat does: a later fe_request_start_chat whose
 * messages start with these (e.g. the same system message) reuses it. */
FE_API fe_status fe_session_save_chat(fe_session *session, const fe_chat_message *messages, size_t n_messages,
                                      const char *path);
/* Replace the session's KV cache with the prefix saved in `path` (see above). */
FE_API fe_status fe_session_load_state(fe_session *session, const char *path);

/* Ask the request in progress on `session` to stop; safe from any thread. Checked before
 * each token and, during prefill, inside llama.cpp's compute loop (between graph nodes),
 * so a long prefill stops within milliseconds. The request is cleared when the next
 * request starts. */
FE_API void fe_session_cancel(fe_session *session);

/* ---------------------------------------------------------------- runtime LoRA adapters
 *
 * One base model, several domain adapters: a GGUF LoRA adapter (general.type = "adapter",
 * adapter.type = "lora", tensors <base tensor>.lora_a / .lora_b, as `finllm-edge convert
 * --adapter-gguf` and llama.cpp's convert_lora_to_gguf.py write them) is loaded against a
 * loaded model and attached to sessions, with a scale, without reloading the base:
 *
 *     fe_adapter *research = NULL, *credit = NULL;
 *     fe_adapter_load(model, "research.gguf", &research);
 *     fe_adapter_load(model, "credit.gguf", &credit);
 *     float one = 1.0f;
 *     fe_session_set_adapters(s, &research, &one, 1);   // requests now run base + research
 *     ...
 *     fe_session_set_adapters(s, &credit, &one, 1);     // swap between requests
 *     fe_session_set_adapters(s, NULL, NULL, 0);         // the plain base again
 *     fe_session_free(s);
 *     fe_adapter_free(credit); fe_adapter_free(research);
 *     fe_model_free(model);
 *
 * Loading checks, before llama.cpp reads the file: the GGUF structure (the same validator as
 * models, fe_gguf_preflight's rules for the container), general.type/adapter.type (other
 * adapter kinds, e.g. activated LoRA, are FE_ERR_BAD_MODEL "unsupported"), the architecture
 * against the model's, every tensor: a .lora_a/.lora_b pair of type F32, F16 or BF16 for a
 * 2-D base weight this runtime applies LoRA to (attention q/k/v/output, feed-forward
 * gate/up/down, output), with lora_a = [n_in, rank] and lora_b = [rank, n_out] against the
 * base's [n_in, n_out]. An adapter for another base, a corrupt file or an unsupported type
 * is FE_ERR_BAD_MODEL naming the tensor or key; a missing file FE_ERR_FILE_NOT_FOUND.
 *
 * Effect: each adapted weight W computes W x + scale * s_t * B (A x) with s_t = alpha / rank
 * when the file's adapter.lora.alpha is non-zero, else 1 (convert writes alpha 0 and folds
 * PEFT's own scaling, rank/alpha patterns and rsLoRA included, into lora_b).
 *
 * Prefix reuse and saved state: a session's cached K/V were computed with the adapters that
 * were active then, so changing the active set (adapters or scales) empties the session's
 * cache (the next request evaluates its whole prompt); setting the same set again keeps it.
 * State files record the active set (each adapter file's sha256 and scale) and load only into
 * a session with the same set active (FE_ERR_BAD_MODEL "made with other adapters" otherwise).
 *
 * Lifetime and threads: an adapter belongs to its model; free adapters before the model (as
 * sessions). fe_adapter_free on an adapter still active on a session only releases the handle:
 * the adapter lives until no session uses it. Loading and freeing change the model's adapter
 * list, which llama.cpp reads when a session's graph is rebuilt: call fe_adapter_load and
 * fe_adapter_free while no request runs on the model's sessions (as fe_model_set_chat_template).
 * fe_session_set_adapters follows the one-session-per-thread rule.
 */
typedef struct fe_adapter fe_adapter;

#define FE_MAX_ACTIVE_ADAPTERS 16

FE_API fe_status fe_adapter_load(fe_model *model, const char *path, fe_adapter **out);
FE_API void fe_adapter_free(fe_adapter *adapter);

typedef struct fe_adapter_info {
    char     name[128];        /* general.name, or the file name */
    char     sha256[65];       /* of the adapter file, lowercase hex */
    int32_t  n_tensors;        /* adapted base weights (lora_a/lora_b pairs) */
    int32_t  rank_max;         /* largest rank among them */
    float    alpha;            /* adapter.lora.alpha (0 = scaling folded into lora_b) */
    uint64_t size_bytes;       /* bytes of lora_a/lora_b data */
    double   load_ms;
} fe_adapter_info;

FE_API fe_status fe_adapter_get_info(const fe_adapter *adapter, fe_adapter_info *out);

/* Make adapters[0..n) with scales[0..n) the session's active set (n = 0: none; a scale of 0
 * leaves that adapter inactive). Every adapter must belong to the session's model, appear
 * once, and have a finite scale in [-100, 100]; n <= FE_MAX_ACTIVE_ADAPTERS. FE_ERR_BUSY while
 * a request runs; FE_ERR_INVALID_ARG otherwise, and the active set is then unchanged. */
FE_API fe_status fe_session_set_adapters(fe_session *session, fe_adapter *const *adapters, const float *scales,
                                         size_t n);
/* The active set (scale != 0), in the order it was set: copies up to max entries; *n_out = count. */
FE_API fe_status fe_session_get_adapters(const fe_session *session, fe_adapter **adapters, float *scales,
                                         size_t max, size_t *n_out);

/* ---------------------------------------------------------------- generation */

/* Called once per generated token, in order: piece = text that is now final (valid UTF-8,
 * possibly empty while text is held back for a stop string or an incomplete UTF-8
 * sequence; not NUL-terminated), token = its id. Return false to stop. */
typedef bool (*fe_token_callback)(const char *piece, size_t piece_len, int32_t token,
                                  void *user_data);

typedef struct fe_generate_params {
    int32_t max_tokens;          /* tokens to generate at most, >= 0 (default 256); 0 = prefill only */
    const char *const *stop;     /* stop strings (not included in the output), may be NULL */
    size_t n_stop;
    bool add_special;            /* add BOS etc. when tokenizing the prompt (default true) */
    bool parse_special;          /* parse <|im_start|>-style tokens in the prompt (default true) */
    bool ignore_eos;             /* keep going past end-of-generation (benchmarks; default false) */
    fe_sampling_params sampling; /* default fe_sampling_default_params() */
    fe_token_callback on_token;  /* may be NULL (fe_generate only) */
    void *user_data;
} fe_generate_params;

FE_API fe_generate_params fe_generate_default_params(void);

typedef enum fe_stop_reason {
    FE_STOP_NONE       = 0,  /* not finished (error) */
    FE_STOP_EOS        = 1,  /* the model ended its turn */
    FE_STOP_MAX_TOKENS = 2,
    FE_STOP_STRING     = 3,  /* a stop string appeared */
    FE_STOP_CALLBACK   = 4,  /* on_token returned false, or the request was abandoned */
    FE_STOP_CANCELLED  = 5,  /* fe_session_cancel() */
    FE_STOP_CONTEXT_FULL = 6 /* n_ctx reached before max_tokens */
} fe_stop_reason;

/* The finish_reason of a stop reason, OpenAI's words where the meaning matches: "stop"
 * (EOS or a stop string), "length" (max_tokens or the context is full), "cancelled"
 * (fe_session_cancel, a callback stop or an abandoned stream), "error" (FE_STOP_NONE). */
FE_API const char *fe_finish_reason(fe_stop_reason reason);

typedef struct fe_generate_result {
    fe_stop_reason stop_reason;
    int32_t n_prompt;        /* prompt tokens (reused from the cache + evaluated) */
    int32_t n_generated;     /* tokens sampled, without an end-of-generation token */
} fe_generate_result;

/* Generate from a text prompt (each call is a fresh request; with prefix_reuse the cached
 * prefix of the prompt is reused, with the same output). Returns FE_OK on EOS, max_tokens, a stop string or a callback stop;
 * FE_ERR_CONTEXT_OVERFLOW if the prompt does not fit in n_ctx (checked before any work);
 * FE_ERR_CANCELLED after fe_session_cancel(). `result` may be NULL. */
FE_API fe_status fe_generate(fe_session *session, const char *prompt,
                             const fe_generate_params *params, fe_generate_result *result);

/* Same, from prompt tokens (e.g. a benchmark's exact-length prompt). */
FE_API fe_status fe_generate_tokens(fe_session *session, const int32_t *tokens, int32_t n_tokens,
                                    const fe_generate_params *params, fe_generate_result *result);

/* ------------------------------------------------ constrained decoding (grammars, JSON Schema)
 *
 * fe_sampling_params.grammar (GBNF) or .json_schema restricts every sampled token to those that
 * keep the output a prefix of a sentence of the grammar (llama.cpp's grammar sampler):
 *
 *     gp.sampling.json_schema = "{\"type\":\"object\",\"properties\":{\"revenue\":{\"type\":\"number\"}},"
 *                               "\"required\":[\"revenue\"]}";
 *     fe_generate(s, prompt, &gp, &r);   // the text parses as JSON and validates against the schema
 *
 * - Greedy (temperature 0) picks the highest-logit token the grammar allows: the unconstrained
 *   argmax is checked first and the whole vocabulary is masked only when it is refused.
 *   Sampled requests mask the vocabulary first, then apply penalties/top-k/top-p/min-p/temp.
 * - End of generation is allowed only once the grammar is complete, and ends the request
 *   (FE_STOP_EOS, even with ignore_eos); when a complete grammar allows nothing else, EOS is
 *   the only token left. max_tokens may still cut the output short (FE_STOP_MAX_TOKENS):
 *   give the request room for the whole answer.
 * - Grammars and schemas are untrusted input. Bounds, checked before any conversion or
 *   parsing (FE_ERR_INVALID_ARG naming the bound and where): text <= FE_GRAMMAR_MAX_BYTES;
 *   JSON nesting <= 32 levels; GBNF group nesting <= 64; schema: <= 256 properties per object,
 *   <= 1024 values per enum, <= 64 KiB of enum/const literals, minItems/maxItems/minLength/
 *   maxLength <= 2000, numeric bounds finite with |x| <= 2^53 and minimum <= maximum, pattern
 *   <= 1024 bytes, <= 10000 subschemas after "type" arrays are expanded, <= 128 distinct $refs,
 *   local $refs ("#/...") that resolve and are not a cycle of bare $refs; the converted grammar
 *   <= 1 MiB. llama.cpp's own checks follow (syntax, undefined rules, left recursion,
 *   repetitions above 2000), reported with its reason. Conversion and grammar parsing run on
 *   a worker thread with a 64 MiB stack, so deep recursion cannot overflow the caller's
 *   (e.g. a JNI thread's) stack. While generating, a token whose sampling and grammar work
 *   takes more than FE_GRAMMAR_MAX_STEP_MS of the calling thread's CPU time (an ambiguous
 *   grammar whose parse states multiply; CPU time, so load on other cores does not trip it)
 *   ends the request with FE_ERR_INVALID_ARG; so does a grammar that no token of the
 *   vocabulary can continue.
 */
#define FE_GRAMMAR_MAX_BYTES (256u * 1024u)
#define FE_GRAMMAR_MAX_STEP_MS 250

/* The GBNF grammar the core makes of a JSON Schema (the one a request with .json_schema uses).
 * NUL-terminated when it fits; FE_ERR_BUFFER_TOO_SMALL sets *n_out to the size needed (without
 * the NUL). FE_ERR_INVALID_ARG for invalid JSON, an unsupported schema or a bound (above). */
FE_API fe_status fe_json_schema_to_grammar(const char *json_schema, char *buf, size_t buf_size, size_t *n_out);

/* Check a GBNF grammar or a JSON Schema (one of them, the other NULL) the way a request on
 * `model` would, without generating: FE_OK or FE_ERR_INVALID_ARG with the reason. */
FE_API fe_status fe_grammar_check(const fe_model *model, const char *grammar, const char *json_schema);

/* ------------------------------------------------ step-wise requests (streams for bindings)
 *
 * The same loop as fe_generate, one token per call, for bindings that pull tokens
 * (Python iterators, Kotlin flows) instead of receiving callbacks:
 *
 *     fe_request_start(s, prompt, &gp);           // tokenize + checks; no model work yet
 *     fe_token_event ev;
 *     while (fe_request_next(s, &ev) == FE_OK) {  // the first call prefills
 *         fwrite(ev.text, 1, ev.text_len, stdout);
 *         if (ev.done) break;                     // ev.stop_reason says why
 *     }
 *
 * One request per session at a time: starting a second while one is active is
 * FE_ERR_BUSY (finish it, or end it with fe_request_end). on_token is not used here.
 */
typedef struct fe_token_event {
    const char *text;        /* text that became final with this step (valid UTF-8, may be
                                empty); owned by the session, valid until the next call */
    size_t text_len;
    int32_t token;           /* the token sampled in this step, -1 if none (e.g. EOS) */
    bool done;               /* the request ended with this step */
    fe_stop_reason stop_reason;  /* when done */
} fe_token_event;

FE_API fe_status fe_request_start(fe_session *session, const char *prompt,
                                  const fe_generate_params *params);
FE_API fe_status fe_request_start_tokens(fe_session *session, const int32_t *tokens, int32_t n_tokens,
                                         const fe_generate_params *params);
/* Render `messages` with the model's chat template (see fe_chat_format) and start a
 * request on the result, tokenized with special tokens parsed and BOS added only when the
 * template did not already write it. */
FE_API fe_status fe_request_start_chat(fe_session *session, const fe_chat_message *messages,
                                       size_t n_messages, const fe_generate_params *params);

/* Next step of the active request. FE_OK with an event (ev->done on the last one, after
 * which the session is idle); an error status ends the request (the session is idle and
 * usable). Cancel ends with FE_OK, done, FE_STOP_CANCELLED. */
FE_API fe_status fe_request_next(fe_session *session, fe_token_event *ev);

/* End the active request now (no-op when idle); its profile is kept. */
FE_API void fe_request_end(fe_session *session);
FE_API bool fe_request_active(const fe_session *session);

/* Prompt tokens of the active (or last) request: copies up to max_tokens, *n_out = count. */
FE_API fe_status fe_request_prompt_tokens(const fe_session *session, int32_t *tokens, int32_t max_tokens,
                                          int32_t *n_out);

/* ------------------------------------------------ concurrent requests (the scheduler)
 *
 * Several requests on one model at once: one copy of the weights, one llama.cpp context
 * whose sequences (one per slot) hold each request's KV cache, and one decode thread inside
 * the library that evaluates the next token of every running request together in one batch.
 * Requests are submitted from any thread and read from any thread:
 *
 *     fe_scheduler_params sp = fe_scheduler_default_params();   // 4 slots of 2048 tokens
 *     fe_scheduler *sch = NULL;
 *     if (fe_scheduler_create(model, &sp, &sch) != FE_OK) { ... fe_last_error() ... }
 *     fe_sched_request *rq = NULL;
 *     fe_generate_params gp = fe_generate_default_params();
 *     if (fe_sched_submit(sch, prompt, &gp, &rq) != FE_OK) { ... FE_ERR_BUSY: queue full ... }
 *     fe_token_event ev;
 *     while (fe_sched_next(rq, &ev) == FE_OK) {                 // blocks until the next step
 *         fwrite(ev.text, 1, ev.text_len, stdout);
 *         if (ev.done) break;
 *     }
 *     fe_sched_request_free(rq);
 *     fe_scheduler_free(sch);   // before fe_model_free
 *
 * Each request behaves like fe_request_* on a session of n_ctx tokens: the same sampling
 * (fe_sampling_params, the same sampler chain), stop strings and UTF-8 rule (fe_text_stream),
 * max_tokens, ignore_eos, finish reasons and events. Scheduling, in the decode thread:
 *   - Admission: submitted requests wait in a FIFO queue of at most max_queued (beyond:
 *     FE_ERR_BUSY, nothing queued) and take a free slot while fewer than `batch size` requests
 *     run. Every step decodes one token of every running request (none waits for another to
 *     finish) and evaluates prompt tokens of new requests within a budget of n_batch tokens
 *     per step: one chunk of each new request in turn, round-robin from where the last step
 *     began, while a chunk on its kernel path fits in what is left (the step's first chunk
 *     always runs, at least 16 tokens or the path's fewest). A burst of short prompts starts
 *     decoding together. While others are decoding the budget is n_batch_busy, and no more
 *     tokens than fit, at the measured ms per prompt token, in 0.8 x p99_token_ms less the
 *     measured decode step: a step that evaluates a prompt is the longest gap between the
 *     running requests' tokens, so prompts are spread over steps that keep under the bound.
 *   - Adaptive batch size: it starts at 1 and doubles (up to n_slots) at most every two steps
 *     while requests are waiting and the p99 of the last 64 inter-token latencies of all
 *     requests is measured and below 0.8 x p99_token_ms; when that p99 passes p99_token_ms it
 *     shrinks by one and the window restarts (running requests are never stopped: fewer are
 *     admitted until the p99 holds).
 *   - Cancel (fe_sched_cancel, or freeing the handle) ends one request at the next step, in the
 *     queue or running; the others are untouched. Freeing the scheduler ends every request:
 *     their handles stay valid and deliver a last event (done, FE_STOP_CANCELLED).
 * Tokens: a request gives the same tokens as on a session of its own with the same settings
 * (greedy and seeded), whatever else runs: its prompt is evaluated alone (one decode call per
 * chunk), in the session's chunks (>= 2 tokens, see prefix reuse), in its own KV stream (cells
 * from 0, as in a session), and
 * llama.cpp's CPU kernels evaluate a decode row of one sequence with the same bits alone or next
 * to rows of other sequences (measured on the pinned build: bit-identical logits for 1 vs 2, 4 and
 * 8 rows, SmolLM2 Q4_0 and Q4_1; test_sched checks 8 concurrent requests against sessions).
 * flash_attn: faster (decode 1.1-1.3x here: the attention skips the empty cells of each KV
 * stream), and a request gives the same tokens as on a session with flash_attn on while its
 * stream holds at most 256 cells, or at any length with n_threads 1. Beyond, with 2+ threads, a
 * lone decoding request and a session take llama.cpp's split-KV kernel, batched rows the row
 * kernel, which rounds differently: the tokens are then those of a valid run, not necessarily
 * of a solo one. Prompts are chunked on one kernel path as in a session (the "prefix reuse"
 * rule: chunks of >= 64 tokens for prompts of >= 64 tokens, at least 128 per chunk then).
 * Prefix reuse (prefix_reuse, default on): a slot keeps the K/V of its last request's prompt
 * (not of its generated tokens), and a new request takes the free slot whose cached prompt
 * shares the longest start with its own (a system prompt, a repeated question) and evaluates
 * only the rest, with the session's rule so that its tokens stay the same as without reuse (at
 * least its last 2 prompt tokens, 64 on flash attention's tiled path, are evaluated again).
 * When another slot's stream (free, or a running request's evaluated prompt tokens) holds >= 32
 * more tokens of its start than its own slot, the request's slot takes a copy of that stream
 * (llama.cpp's cross-stream copy of the whole stream, cut to the common start) instead: a system
 * prompt is evaluated once, not once per slot; the stats' prefix_copies counts them. With flash
 * attention, n_batch < 128 keeps every prompt on the row kernel, so reuse re-evaluates 2 tokens.
 * Slots are chosen to keep the running requests' sequence ids consecutive (a decode batch
 * costs one graph evaluation per run of consecutive ids) unless another slot saves >= 64
 * prompt tokens. fe_profile.n_prompt_reused and the stats' prompt_tokens_reused report it.
 * Thread safety: every fe_sched_* / fe_scheduler_* call may come from any thread; one
 * request's events are read by one thread at a time. The model must outlive the scheduler.
 */
typedef struct fe_scheduler fe_scheduler;
typedef struct fe_sched_request fe_sched_request;
struct fe_profile;  /* defined under "profile" below */

typedef struct fe_scheduler_params {
    int32_t  n_slots;         /* requests decoded together at most (default 4); 1..64 */
    uint32_t n_ctx;           /* context of each request in tokens (prompt + answer; default 2048) */
    uint32_t n_batch;         /* prompt tokens per step when nothing else decodes (default 512); 2..512 */
    uint32_t n_batch_busy;    /* prompt tokens per step while others decode, at most (fewer when
                               * the step would pass 0.8 x p99_token_ms); 2..n_batch, or 0 (the
                               * default): min(64, n_batch) */
    int32_t  n_threads;       /* decode threads, 1..CPUs online (default: the performance cores) */
    int32_t  n_threads_batch; /* prefill threads, 1..CPUs online (default: same as n_threads) */
    int32_t  max_queued;      /* requests waiting for a slot at most (default 64); 1..65536 */
    double   p99_token_ms;    /* bound on the p99 inter-token latency the batch size keeps (default 150); > 0 */
    bool     flash_attn;      /* llama.cpp's flash attention (default false); see "Tokens" above */
    bool     prefix_reuse;    /* a slot keeps its last prompt's K/V for the next request (default true) */
    bool     reuse_generated; /* with prefix_reuse: the slot also keeps its answer's K/V, and a request
                                 reuses every cached token it starts with, as a session with
                                 reuse_generated does (a chat that sends back the model's answers
                                 evaluates only the new message; tokens are then no longer identical
                                 to a run without reuse). Default false. */
    bool     settle_answers;  /* with prefix_reuse (and reuse_generated off): once no request has run
                                 or waited for 100 ms, the decode thread evaluates a free slot's last
                                 answer again as prompt rows after its prompt (as fe_session_settle
                                 does), so a chat's next turn reuses the answer too and tokens stay
                                 identical to a run without reuse. A submit stops it at once (the
                                 chunk is tried again at the next idle moment). Default true; stats:
                                 settled_tokens, settles_stopped. */
} fe_scheduler_params;

/* How long (ms) the scheduler waits, idle, before it settles answers (settle_answers): a closed-loop
 * client's next request comes sooner, a person's next turn later. An app that settles sessions
 * itself (fe_session_settle) may use the same rule; `finllm-edge serve --parallel 1` does. */
FE_API int32_t fe_settle_idle_ms(void);

FE_API fe_scheduler_params fe_scheduler_default_params(void);
/* The ranges of a scheduler's parameters, without a model: FE_ERR_INVALID_ARG naming the field
 * (fe_scheduler_create checks them too, and the KV cache of every slot against RAM). */
FE_API fe_status fe_scheduler_params_check(const fe_scheduler_params *params);

/* Create a scheduler over `model` and start its decode thread. Out-of-range parameters are
 * FE_ERR_INVALID_ARG naming the field, before anything is allocated. */
FE_API fe_status fe_scheduler_create(fe_model *model, const fe_scheduler_params *params, fe_scheduler **out);
/* End every request (done, FE_STOP_CANCELLED), stop the thread and free the context. NULL is a no-op. */
FE_API void fe_scheduler_free(fe_scheduler *sched);

/* Queue a request (checks and tokenization happen here, on the caller's thread: bad options,
 * a prompt that does not fit in n_ctx and a full queue are refused now, with *out NULL).
 * params: as fe_request_start (on_token unused); NULL = the defaults. */
FE_API fe_status fe_sched_submit(fe_scheduler *sched, const char *prompt, const fe_generate_params *params,
                                 fe_sched_request **out);
FE_API fe_status fe_sched_submit_tokens(fe_scheduler *sched, const int32_t *tokens, int32_t n_tokens,
                                        const fe_generate_params *params, fe_sched_request **out);
/* The prompt fe_request_start_chat would evaluate for `messages`. */
FE_API fe_status fe_sched_submit_chat(fe_scheduler *sched, const fe_chat_message *messages, size_t n_messages,
                                      const fe_generate_params *params, fe_sched_request **out);

/* The prompt tokens fe_sched_submit_chat and fe_request_start_chat evaluate for `messages`
 * (chat template + generation prompt, BOS added when the template did not write it).
 * On FE_ERR_BUFFER_TOO_SMALL, *n_out is the number of tokens needed. */
FE_API fe_status fe_chat_tokenize(const fe_model *model, const fe_chat_message *messages, size_t n_messages,
                                  int32_t *tokens, int32_t max_tokens, int32_t *n_out);

/* Next event of a request, waiting for it. FE_OK with an event (ev->done on the last one;
 * ev->text is owned by the request, valid until the next call on it); an error status ends
 * the request (e.g. FE_ERR_DECODE). After the last event: FE_ERR_INVALID_ARG. */
FE_API fe_status fe_sched_next(fe_sched_request *req, fe_token_event *ev);
/* The same, waiting at most timeout_ms (>= 0): FE_ERR_BUSY when no event came in time. */
FE_API fe_status fe_sched_next_timeout(fe_sched_request *req, fe_token_event *ev, int32_t timeout_ms);
/* Stop the request at the next step (queued or running); safe from any thread. */
FE_API void fe_sched_cancel(fe_sched_request *req);
/* One wake-up for every request (an event loop's way to wait on all of them at once, instead of a
 * thread per request blocked in fe_sched_next): after each step that gave any request an event,
 * the decode thread writes an 8-byte 1 to `fd` (an eventfd, or a pipe's write end; make it
 * non-blocking: a write that would block is skipped, the fd being readable already). The reader
 * empties the fd, then takes each request's events with fe_sched_next_timeout(req, ev, 0) until
 * FE_ERR_BUSY. fd < 0 turns it off; once this returns, the old fd is no longer written and may be
 * closed. The caller owns the fd. POSIX only (FE_ERR_INVALID_ARG for fd >= 0 on Windows). */
FE_API fe_status fe_scheduler_set_wakeup_fd(fe_scheduler *sched, int fd);
/* Profile of a finished request (after its done event; FE_ERR_BUSY before): ttft_ms counts
 * from submit (queue wait included), prefill_ms is its chunks' evaluation time, token_ms its
 * inter-token latencies (owned by the request). n_prompt and n_gen are the usage counts. */
FE_API fe_status fe_sched_request_get_profile(const fe_sched_request *req, struct fe_profile *out);
/* Cancel the request if it still runs and free the handle. NULL is a no-op. */
FE_API void fe_sched_request_free(fe_sched_request *req);

/* The scheduler now, as a JSON object (malloc'd; fe_free): n_slots, queued, active,
 * batch_size (the adaptive limit), p99_bound_ms, tokens_per_s (generated tokens per second
 * over the last 10 s), token_ms_p50 / token_ms_p99 (of the last 64 inter-token latencies),
 * steps, generated, submitted, completed, cancelled, rejected (queue full), failed, peak_active
 * (most requests running at once), peak_batch_size, prompt_tokens, prompt_tokens_reused,
 * prefix_copies (see prefix reuse), prompt_chunks (prefill decode calls) and settled_tokens
 * (answer tokens evaluated again while idle, settle_answers) and settles_stopped (settle chunks
 * a submit stopped).
 * NULL + fe_last_error() on a NULL scheduler or when out of memory. */
FE_API char *fe_scheduler_stats_json(fe_scheduler *sched);

/* ------------------------------------------------ text streams (stop strings, UTF-8)
 *
 * The rule every backend uses to turn token bytes into streamed text: text that may be the
 * start of a stop string or of an incomplete UTF-8 sequence is held back; the text is cut
 * before the first stop string; only valid UTF-8 is released (invalid bytes become U+FFFD).
 * fe_generate and fe_request_next use it internally; other backends (the ONNX one) call it.
 */
typedef struct fe_text_stream fe_text_stream;
FE_API fe_text_stream *fe_text_stream_new(const char *const *stop, size_t n_stop);
/* Add a token's bytes; out and out_len receive the text now final (owned by the stream, valid until the
 * next call); stopped is set when a stop string was found (stopped may be NULL). */
FE_API fe_status fe_text_stream_push(fe_text_stream *ts, const char *bytes, size_t n, const char **out,
                                     size_t *out_len, bool *stopped);
/* The held-back rest at the end of a generation (nothing after a stop string). */
FE_API fe_status fe_text_stream_finish(fe_text_stream *ts, const char **out, size_t *out_len);
FE_API void fe_text_stream_free(fe_text_stream *ts);

/* ---------------------------------------------------------------- profile */

/* LatencyProfile fields of the last fe_generate*() call on a session (see
 * shared/design/BENCHMARKS.md). Times in ms, throughputs in tokens/s. */
typedef struct fe_profile {
    double load_ms;          /* model load time */
    double tokenize_ms;
    double prefill_ms;       /* evaluating the prompt tokens that were not reused */
    double ttft_ms;          /* request start -> first generated token (tokenize+prefill+sample) */
    double prefill_tok_s;    /* (n_prompt - n_prompt_reused) / prefill time: evaluated tokens only */
    double decode_tok_s;     /* tokens after the first / their decode time */
    double token_ms_p50;     /* percentiles of token_ms (linear interpolation) */
    double token_ms_p90;
    double token_ms_p99;
    double e2e_ms;           /* request start -> last token */
    double peak_rss_mb;      /* process peak resident set (VmHWM / getrusage) */
    int32_t n_prompt;
    int32_t n_gen;
    /* Per-token decode latency, one entry per token after the first, in order. Owned by
     * the session; valid until its next generate call, reset or free. */
    const double *token_ms;
    size_t n_token_ms;
    int32_t n_prompt_reused; /* prompt tokens taken from the KV cache (prefix reuse), not evaluated;
                                n_prompt counts them too */
} fe_profile;

FE_API fe_status fe_session_get_profile(const fe_session *session, fe_profile *out);

/* Linear-interpolated percentile (numpy's default), q in [0, 100]; 0 for n == 0. */
FE_API double fe_percentile(const double *values, size_t n, double q);

/* Peak resident set size of this process in MiB (0 if unknown). */
FE_API double fe_peak_rss_mb(void);

/* ------------------------------------------------ drift monitoring (what users ask vs the tuning text)
 *
 * A drift reference (made at convert time from the LoRA's tuning text, see `finllm-edge convert
 * --drift-ref`) holds the token distribution of that text folded into buckets, and alarm
 * thresholds calibrated on held-out in-domain windows at a chosen false-alarm rate. A monitor keeps
 * the bucket counts of the last `window_tokens` prompt tokens and computes
 * KL(window || reference) in nats after each request; the state is NONE below the watch threshold,
 * WATCH at or above it, DRIFT at or above the drift threshold (never before the window is full).
 * Counts only: no text and no token order is kept, unless sampling is switched on explicitly
 * (fe_drift_monitor_set_sampling).
 *
 *     fe_session_enable_drift(s, "out/convert/drift-ref.fedrift");   // checks the tokenizer
 *     ... requests ...
 *     fe_drift_monitor *m = fe_session_drift_monitor(s);
 *     fe_drift_status ds;
 *     fe_drift_get_status(m, &ds);                // ds.state, ds.kl, ds.drift_threshold, ...
 *     char *json = fe_drift_monitor_json(m);      // the state file `finllm-edge drift report` reads
 *     fe_free(json);
 *
 * Buckets: the reference's n_named most frequent tokens have a bucket each (bucket i = named[i]);
 * every other token id t falls in bucket n_named + (t * 2654435761 mod 2^32) mod (n_buckets - n_named).
 * Smoothing a (> 0) is added to every bucket count of the reference and of the window:
 * p_b = (c_b + a) / (n + a * n_buckets). Attached to a session, a request counts what the user
 * asked: for fe_request_start_chat the tokens of the last "user" message; for a prompt
 * (fe_generate, fe_request_start[_tokens]) its tokens without control tokens (BOS, <|im_start|>, ...)
 * and without the prefix it shares with the previous request's prompt when that prefix is 16 tokens
 * or longer (a repeated system prompt or chat history counts once). A prompt the app rendered with
 * a chat template itself also counts the template's plain-text tokens ("user", "assistant"): start
 * chat requests with fe_request_start_chat for exact counts. Prefill-only requests (max_tokens 0:
 * saving a state, counting tokens) are not counted.
 *
 * Reference file (little-endian, untrusted input: magic, version, sizes and counts are checked
 * against the file size before anything is allocated, then a sha256 over the file, then every
 * value): header "FEDRIFT\0", version, header size, tokenizer sha256 (fe_model_tokenizer_sha256),
 * n_vocab, n_buckets, n_named, window_tokens, smoothing, watch/drift thresholds and the false-alarm
 * rates they were calibrated at, reference and calibration sizes, seed; int32 named[n_named];
 * double probs[n_buckets]; sha256. A truncated, altered or foreign file is FE_ERR_BAD_MODEL naming
 * what is wrong; a reference made for another tokenizer is FE_ERR_BAD_MODEL ("another tokenizer"). */

typedef enum fe_drift_state {
    FE_DRIFT_NONE  = 0,   /* below the watch threshold, or the window is not full yet */
    FE_DRIFT_WATCH = 1,   /* KL >= watch threshold */
    FE_DRIFT_DRIFT = 2    /* KL >= drift threshold */
} fe_drift_state;

/* "none", "watch", "drift". */
FE_API const char *fe_drift_state_str(fe_drift_state state);

typedef struct fe_drift_ref fe_drift_ref;
typedef struct fe_drift_monitor fe_drift_monitor;

typedef struct fe_drift_params {
    int32_t n_buckets;      /* 2..65536 (default 1024) */
    int32_t n_named;        /* tokens with a bucket of their own, 0..n_buckets-1 (default 768) */
    int32_t window_tokens;  /* sliding window of prompt tokens, 16..1048576 (default 2048) */
    double  smoothing;      /* added to every bucket count, > 0 (default 0.5) */
} fe_drift_params;

FE_API fe_drift_params fe_drift_default_params(void);

/* sha256 (64 hex + NUL) identifying the model's tokenizer: tokenizer.ggml.model and .pre, n_vocab,
 * every token's text and attributes. A drift reference records it. */
FE_API fe_status fe_model_tokenizer_sha256(const fe_model *model, char hex_out[65]);

/* A reference from the tokens of the tuning text (ids in 0..n_vocab-1). Uncalibrated until
 * fe_drift_ref_calibrate. */
FE_API fe_status fe_drift_ref_build(const char *tokenizer_sha256, int32_t n_vocab, const int32_t *tokens,
                                    size_t n_tokens, const fe_drift_params *params, fe_drift_ref **out);

/* KL(window || ref) after each request of a seeded stream of held-out requests (requests drawn
 * with replacement from request_lens/tokens, which hold n_requests requests back to back), once the
 * window is full: n_windows values into kl_out. Deterministic for the same inputs and seed. */
FE_API fe_status fe_drift_ref_window_kls(const fe_drift_ref *ref, const int32_t *tokens, const int32_t *request_lens,
                                         size_t n_requests, uint64_t seed, double *kl_out, size_t n_windows);

/* Thresholds from in-domain window KLs: the watch (drift) threshold is the order statistic
 * ceil((n + 1) * (1 - rate)) of the sorted kls (the largest when that is past n), so at most
 * `rate` of in-domain windows reach it. 0 < drift_rate <= watch_rate < 1; n >= 1. */
FE_API fe_status fe_drift_ref_calibrate(fe_drift_ref *ref, const double *kls, size_t n, double watch_rate,
                                        double drift_rate, uint64_t seed);

typedef struct fe_drift_ref_info {
    char tokenizer_sha256[65];
    int32_t n_vocab;
    fe_drift_params params;
    double watch_threshold, drift_threshold;   /* nats; +inf while uncalibrated */
    double watch_rate, drift_rate;             /* false-alarm rates they were set at */
    uint64_t n_ref_tokens;
    uint64_t n_calibration_windows;            /* 0: uncalibrated */
    uint64_t calibration_seed;
} fe_drift_ref_info;

FE_API fe_status fe_drift_ref_get_info(const fe_drift_ref *ref, fe_drift_ref_info *out);
/* Bucket of a token id (see above); -1 for an id outside 0..n_vocab-1 or a NULL ref. */
FE_API int32_t fe_drift_ref_bucket(const fe_drift_ref *ref, int32_t token);
/* Written atomically (temporary file, fsync, rename); an uncalibrated reference is refused. */
FE_API fe_status fe_drift_ref_save(const fe_drift_ref *ref, const char *path);
FE_API fe_status fe_drift_ref_load(const char *path, fe_drift_ref **out);
FE_API void fe_drift_ref_free(fe_drift_ref *ref);

/* A stand-alone monitor (the same one a session runs), on a copy of `ref`. */
FE_API fe_status fe_drift_monitor_new(const fe_drift_ref *ref, fe_drift_monitor **out);
FE_API void fe_drift_monitor_free(fe_drift_monitor *monitor);
/* Empty window, counters and history. */
FE_API void fe_drift_monitor_reset(fe_drift_monitor *monitor);
/* One request's tokens, counted as given (ids outside the vocabulary are FE_ERR_INVALID_ARG and
 * nothing is counted); then the KL and the state are evaluated. n == 0 counts as a request. */
FE_API fe_status fe_drift_observe(fe_drift_monitor *monitor, const int32_t *tokens, size_t n);
/* Opt-in: keep the tokens of every `every_n`-th request (at most 512 each) for the last
 * `max_samples` of them, exported in the state JSON for re-tuning. 0, 0 (the default) keeps none. */
FE_API fe_status fe_drift_monitor_set_sampling(fe_drift_monitor *monitor, int32_t max_samples, int32_t every_n);

typedef struct fe_drift_status {
    fe_drift_state state;
    double kl;                  /* KL(window || reference) in nats after the last request; 0 before any */
    double watch_threshold, drift_threshold;
    int32_t window_tokens;      /* the window's size */
    int32_t n_window;           /* tokens in it now (== window_tokens once full) */
    int64_t n_requests;         /* requests observed */
    int64_t n_tokens;           /* tokens observed */
    int64_t n_evaluations;      /* requests that ended with a full window */
    int64_t n_watch;            /* of those, at WATCH or DRIFT */
    int64_t n_drift;            /* of those, at DRIFT */
    int64_t first_drift_request;/* n_requests when DRIFT was first reached; -1 never */
    int64_t first_drift_tokens; /* n_tokens then; -1 never */
} fe_drift_status;

FE_API fe_status fe_drift_get_status(const fe_drift_monitor *monitor, fe_drift_status *out);
/* The monitor's state as JSON (malloc'd; fe_free): status, thresholds, the reference buckets and
 * probabilities, the window's bucket counts, the KL history of the last 4096 evaluations and, only
 * when sampling is on, the sampled requests' tokens. `finllm-edge drift report` reads it. */
FE_API char *fe_drift_monitor_json(const fe_drift_monitor *monitor);

/* Attach a monitor on the reference at `path` to the session (replacing any); FE_ERR_BAD_MODEL when
 * the file is refused or was made for another tokenizer, FE_ERR_FILE_NOT_FOUND when missing.
 * NULL path detaches. FE_ERR_BUSY while a request is active. */
FE_API fe_status fe_session_enable_drift(fe_session *session, const char *path);
/* The session's monitor (NULL when none is attached): for status, JSON, sampling and reset. Owned
 * by the session; valid until it is detached or the session is freed. */
FE_API fe_drift_monitor *fe_session_drift_monitor(fe_session *session);

/* The same monitor on a scheduler (see "concurrent requests"): every request queued with
 * max_tokens > 0 is counted as a session counts it (the last user message of a chat; a prompt's
 * tokens after a prefix shared with the previous request's), on the thread that submits it.
 * NULL path detaches. May be called while requests run; FE_ERR_BAD_MODEL / FE_ERR_FILE_NOT_FOUND
 * as fe_session_enable_drift (the attached monitor, if any, is kept then). A monitor is
 * thread-safe: fe_drift_get_status, fe_drift_monitor_json and the others may be called from any
 * thread while requests are submitted. */
FE_API fe_status fe_scheduler_enable_drift(fe_scheduler *sched, const char *path);
/* The scheduler's monitor (NULL when none); owned by it, valid until the next
 * fe_scheduler_enable_drift or fe_scheduler_free. */
FE_API fe_drift_monitor *fe_scheduler_drift_monitor(fe_scheduler *sched);

/* ================================================================ profiles, device, benchmark
 *
 * One LatencyProfile writer for every binding (Python, JNI, fe-bench): the JSON follows
 * finllm_edge/schemas/latency_profile.schema.json, and its provenance (fe_version(),
 * fe_llama_version(), fe_build_variant()) is reported by this library itself.
 *
 *     fe_bench_params bp = fe_bench_default_params();   // 64 + 64 tokens, 5 runs + 1 warm-up
 *     fe_bench_result br;
 *     if (fe_benchmark(session, &bp, &br) != FE_OK) { ... fe_last_error() ... }
 *     fe_profile_meta meta = fe_profile_default_meta();
 *     meta.tool = "my-tool";
 *     meta.model = model;                 // path, type, size, bits/weight, load time
 *     meta.n_threads = 4; meta.n_ctx = 2048; meta.warmup = bp.warmup;
 *     meta.thermal_before_json = br.thermal_before_json;
 *     char *json = fe_profile_json(br.runs, br.n_runs, &meta);
 *     ...
 *     fe_free(json);
 *     fe_bench_result_free(&br);
 *
 * Files under /sys are read from $FE_SYSFS_ROOT instead of /sys when that variable is set
 * (tests use fake trees: $FE_SYSFS_ROOT/devices/system/cpu/..., .../class/thermal/...).
 * Everything read from /proc and /sys is best effort: unreadable files are left out.
 */

/* Free memory returned by this library (the JSON strings below). NULL is a no-op. */
FE_API void fe_free(void *p);

/* ------------------------------------------------ threads: the big-core rule */

#define FE_MAX_CPUS 1024

/* Which CPUs a session's threads should run on. */
typedef struct fe_thread_choice {
    int32_t n_threads;            /* the default (one per performance core) or the caller's count */
    int32_t n_cores;              /* entries in cores[] (== n_threads, capped at the allowed cores) */
    int32_t cores[FE_MAX_CPUS];   /* the cores those threads occupy, ascending */
    int32_t n_affinity;           /* entries in affinity[] */
    int32_t affinity[FE_MAX_CPUS];/* the affinity mask the choice was made from, ascending */
    char reason[192];             /* e.g. "performance cores 1x2.84GHz + 3x2.42GHz; skipping 4 cores at 1.80GHz" */
} fe_thread_choice;

/* The thread rule (Snapdragon 865: 1x2.84 + 3x2.42 + 4x1.80 GHz -> the 4 big cores).
 * Allowed cores = the affinity mask, minus cores not listed in .../cpu/online. Performance
 * cores = allowed cores whose cpufreq/cpuinfo_max_freq is above the slowest allowed core's;
 * all allowed cores when the frequencies are equal or any is unreadable (VMs).
 * n_threads == 0: the default, one thread per performance core. n_threads > 0: the
 * caller's count; cores = the n fastest allowed cores (ties: lower index first).
 * sysfs_root: root of sysfs (NULL: $FE_SYSFS_ROOT, else "/sys"). affinity: the CPUs to
 * choose from (NULL with n_affinity 0: this process's sched_getaffinity mask).
 * FE_ERR_INVALID_ARG for n_threads < 0, a NULL out, or CPU ids outside 0..FE_MAX_CPUS-1. */
FE_API fe_status fe_choose_threads(int32_t n_threads, const char *sysfs_root, const int32_t *affinity,
                                   size_t n_affinity, fe_thread_choice *out);

/* fe_choose_threads(0, NULL, NULL, 0, ...).n_threads: the default of
 * fe_session_default_params().n_threads. Always >= 1. */
FE_API int32_t fe_default_n_threads(void);

/* ------------------------------------------------ device and thermal */

/* The profile's `device` block alone, as a JSON object (malloc'd; fe_free): cpu_model, arch,
 * cores_total, cores_used (the default thread choice), affinity, governor and max_freq_khz
 * per CPU (keys are CPU indexes as strings), mem_total_mb. NULL + fe_last_error() only when
 * out of memory. */
FE_API char *fe_device_json(void);

/* One thermal sample now, as a JSON object (malloc'd; fe_free):
 *   {"temps_c": {"thermal_zone0:cpu-0-0-usr": 41.5, ...}, "cur_freq_khz": {"0": 1804800, ...}}
 * temps from <sysfs>/class/thermal/thermal_zoneN/type and temp (millidegrees, or degrees on
 * kernels that report |t| < 1000), frequencies from cpuN/cpufreq/scaling_cur_freq. Empty
 * objects when nothing is readable. NULL + fe_last_error() only when out of memory. */
FE_API char *fe_thermal_json(void);

/* SHA-256 of a file as 64 lowercase hex digits + NUL in hex_out. Cached per (path, size,
 * mtime) for the life of the process, and across processes when a hash index is set
 * (fe_set_hash_index_dir). FE_ERR_FILE_NOT_FOUND if it cannot be read. */
FE_API fe_status fe_file_sha256(const char *path, char hex_out[65]);

/* Remember file hashes across processes in DIR/sha256-index.txt (created on first use; DIR is
 * created if its parent exists): fe_file_sha256 -- and with it the model identity of saved
 * prompt state and profiles -- then hashes a file once, not once per process launch (a 100 MB
 * model costs ~60 ms here, several hundred ms for a 1B model on a phone). Entries are keyed by
 * the file's real path and stat stamp (device, inode, size, mtime and ctime in ns), so any write
 * or replacement hashes the file again. The index is bounded (256 entries, 1 MiB), read as
 * untrusted input (a damaged file or line is ignored, never trusted) and rewritten atomically;
 * a folder that cannot be written costs a hash per process, nothing else. Process-wide; NULL or
 * "" turns it off (the default). Android: pass Context.getCacheDir(). The Python binding sets
 * its cache folder (~/.cache/finllm-edge) when it loads the library. */
FE_API fe_status fe_set_hash_index_dir(const char *dir);
/* The SHA-256 code in use: "x86-sha-ni" or "armv8-sha2" (the CPU's SHA instructions, 3.7-5.5x
 * faster here) or "portable" (forced by the environment variable FE_SHA256_PORTABLE=1). */
FE_API const char *fe_sha256_impl(void);

/* ------------------------------------------------ the LatencyProfile writer */

/* One generation, as measured by any backend (this library, or another runtime). */
typedef struct fe_run_timing {
    double ttft_ms;          /* request start -> first generated token */
    double prefill_ms;       /* evaluating the prompt (prefill_tok_s = (n_prompt - n_prompt_reused) / prefill_ms) */
    double e2e_ms;           /* request start -> last token */
    int32_t n_prompt;        /* prompt tokens (reused + evaluated) */
    int32_t n_gen;           /* tokens generated */
    const double *token_ms;  /* per-token decode latency after the first token, in order
                                (decode_tok_s = n_token_ms / sum); may be NULL when n_token_ms == 0 */
    size_t n_token_ms;
    int32_t n_prompt_reused; /* prompt tokens reused from the KV cache (0..n_prompt; 0 = none) */
} fe_run_timing;

/* What a profile is about, beyond the timings. Start from fe_profile_default_meta(). */
typedef struct fe_profile_meta {
    const char *tool;              /* "fe-bench", "finllm_edge.Engine", "finllm_edge.OnnxEngine"; NULL = "libfinllm_edge" */
    const fe_model *model;         /* may be NULL; fills model_path, model_type, model_size_bytes,
                                      bits_per_weight and load_ms where those are unset (NULL / 0) */
    const char *model_path;        /* required (directly or through `model`) */
    const char *model_sha256;      /* NULL: fe_file_sha256(model_path) */
    const char *model_type;        /* llama.cpp's description, e.g. "llama ?B Q4_1"; NULL = "unknown" */
    uint64_t model_size_bytes;     /* 0: the file size of model_path */
    double bits_per_weight;
    const char *runtime_version;   /* llama_cpp_version field; NULL: fe_llama_version() */
    const char *variant;           /* NULL: fe_build_variant(); "" -> JSON null */
    bool emulated;                 /* under qemu: never quoted as device speed */
    int32_t n_threads;             /* threads the runs used; >= 1 (default fe_default_n_threads()) */
    int32_t n_ctx;                 /* the session's context; >= 1 (default 0: must be set) */
    int32_t warmup;                /* unmeasured runs before these; >= 0 */
    double load_ms;
    const int32_t *cores_used;     /* NULL: fe_choose_threads(n_threads, ...).cores */
    size_t n_cores_used;
    const char *thermal_before_json; /* fe_thermal_json() taken before the runs, or NULL */
} fe_profile_meta;

FE_API fe_profile_meta fe_profile_default_meta(void);

/* A schema-valid LatencyProfile JSON object (malloc'd, NUL-terminated; free with fe_free)
 * over n_runs >= 1 measured runs of the same workload: ttft/e2e/prefill_tok_s/decode_tok_s
 * are medians over the runs (with min/max for the throughputs), token_ms_p50/p90/p99 pool
 * every token of every run, token_ms is the last run's, n_prompt/n_gen are the last run's,
 * device = fe_device_json() with cores_used from meta, thermal = {"before": meta's sample,
 * "after": fe_thermal_json() now} (null when neither has any reading), peak RSS now.
 * NULL + fe_last_error() on bad input (no runs, NULL arrays, negative or non-finite times,
 * a missing model path or an unreadable model file to hash, thermal_before_json that is not
 * a JSON object). */
FE_API char *fe_profile_json(const fe_run_timing *runs, size_t n_runs, const fe_profile_meta *meta);

/* ------------------------------------------------ the benchmark loop (llama-bench-like) */

typedef struct fe_bench_params {
    int32_t n_prompt;         /* prompt tokens, exactly (default 64); >= 1 */
    int32_t n_gen;            /* tokens generated per run, greedy, EOS ignored (default 64); >= 1 */
    int32_t repetitions;      /* measured runs (default 5); >= 1 */
    int32_t warmup;           /* unmeasured runs first (default 1); >= 0 */
    const char *prompt_text;  /* NULL: fe_bench_text(). Tokenized (BOS added when the model uses
                                 one), its tokens repeated and cut to exactly n_prompt */
    bool random_tokens;       /* llama-bench's prompt instead: BOS + fixed pseudo-random ids */
} fe_bench_params;

FE_API fe_bench_params fe_bench_default_params(void);

/* The built-in benchmark prompt (finance text, repeated by fe_benchmark to length). */
FE_API const char *fe_bench_text(void);

/* Measured runs of fe_benchmark; owned by the caller, release with fe_bench_result_free. */
typedef struct fe_bench_result {
    fe_run_timing *runs;          /* `repetitions` runs in order (warm-up runs are not kept) */
    size_t n_runs;
    char *thermal_before_json;    /* fe_thermal_json() taken before the warm-up */
} fe_bench_result;

/* Run `warmup` + `repetitions` requests of (prefill exactly n_prompt tokens + greedy decode
 * of n_gen tokens, EOS ignored) on `session` through fe_generate_tokens, and return the
 * measured runs; feed them to fe_profile_json. The session's context must hold n_prompt +
 * n_gen tokens (FE_ERR_CONTEXT_OVERFLOW otherwise, before any work). `params` NULL: the
 * defaults. On error *out is empty and the error of the failing run is in fe_last_error(). */
FE_API fe_status fe_benchmark(fe_session *session, const fe_bench_params *params, fe_bench_result *out);

/* Frees the arrays of a result and zeroes it; NULL and a zeroed result are no-ops. */
FE_API void fe_bench_result_free(fe_bench_result *result);

/* ================================================================ end of profiles, device, benchmark */

#ifdef __cplusplus
}
#endif

#endif /* FINLLM_EDGE_H */
