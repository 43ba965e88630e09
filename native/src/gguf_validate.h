/* Pre-flight validation of GGUF model files, before llama.cpp opens them.
 *
 *     fe_gguf_error err;
 *     if (fe_gguf_validate_file(path, &err) != FE_GGUF_OK) {
 *         fprintf(stderr, "%s\n", err.message);   // names the field and its byte offset
 *         return error;
 *     }
 *     // only now: llama_model_load_from_file(path, ...)
 *
 * Pure C99, no llama.cpp dependency. Reads headers only, sequentially, with every count,
 * length and offset checked against the bytes left in the file and against the caps below;
 * never reads tensor data. Memory grows only with entries actually read from the file
 * (a declared count costs nothing) and is capped by FE_GGUF_MAX_*. Thread-safe: no globals.
 * After the structure, semantic rules refuse the values the pinned llama.cpp asserts on or
 * silently turns into nonsense (hyperparameters, rope/norm parameters, per-layer arrays,
 * tokenizer consistency, special ids); native/src/ASSERTS.md lists them. This is the only
 * implementation: Python (finllm_edge.gguf_validate.validate_gguf) calls it through the core.
 */
#ifndef FE_GGUF_VALIDATE_H
#define FE_GGUF_VALIDATE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FE_GGUF_MAX_TENSORS     65536
#define FE_GGUF_MAX_KV          16384
#define FE_GGUF_MAX_KEY_LEN     256
#define FE_GGUF_MAX_STRING_LEN  (64ull * 1024 * 1024)
#define FE_GGUF_MAX_ARRAY_LEN   (1ull << 24)
#define FE_GGUF_MAX_TENSOR_NAME 63
#define FE_GGUF_MAX_TOKENS      (1ull << 20)
#define FE_GGUF_MAX_TOKEN_LEN   4096

enum {
    FE_GGUF_OK       =  0,
    FE_GGUF_E_IO     = -1, /* cannot open or read the file */
    FE_GGUF_E_FORMAT = -2, /* the file breaks a rule; see field/offset/message */
    FE_GGUF_E_NOMEM  = -3
};

typedef struct fe_gguf_error {
    int       code;         /* one of the FE_GGUF_* values */
    long long offset;       /* byte offset of the bad field in the file, -1 if none */
    char      field[320];   /* e.g. "tensor[3].offset", "general.alignment", "kv[2].key" */
    char      message[640]; /* one line: field, offset, reason and what to do */
} fe_gguf_error;

/* Returns FE_GGUF_OK or a negative code; fills *err (may be NULL) on failure. */
int fe_gguf_validate_file(const char *path, fe_gguf_error *err);
/* The same container rules for a LoRA adapter file (general.type "adapter"): a known
 * general.architecture, general.type and adapter.type strings, an f32 adapter.lora.alpha >= 0
 * when present, at least one tensor; no hyper-parameter or vocabulary rules. */
int fe_gguf_validate_adapter_file(const char *path, fe_gguf_error *err);

#ifdef __cplusplus
}
#endif

#endif
