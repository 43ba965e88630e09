/* GGUF pre-flight validator; see gguf_validate.h. Mirrors finllm_edge/gguf_validate.py:
 * same rules in the same order, same field names and offsets. */
#define _FILE_OFFSET_BITS 64
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "gguf_validate.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef _WIN32
#include <sys/stat.h>
#endif

#ifdef _WIN32
#define fe_fseek _fseeki64
#else
#define fe_fseek fseeko
#endif

#define I64MAX ((uint64_t)INT64_MAX)
#define MIN_KV_BYTES (8 + 1 + 4 + 1)
#define MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8)
#define DEFAULT_ALIGNMENT 32

enum { T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64, T_COUNT };
static const char *const TYPE_NAME[T_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                               "bool", "str", "arr", "u64", "i64", "f64"};
static const unsigned TYPE_SIZE[T_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* ggml types from the pinned llama.cpp (ggml.c type_traits); blck 0 = removed id. */
typedef struct { const char *name; unsigned blck, size; } ggml_type_info;
static const ggml_type_info GGML_TYPES[] = {
    {"f32", 1, 4}, {"f16", 1, 2}, {"q4_0", 32, 18}, {"q4_1", 32, 20}, {0, 0, 0}, {0, 0, 0},
    {"q5_0", 32, 22}, {"q5_1", 32, 24}, {"q8_0", 32, 34}, {"q8_1", 32, 36},
    {"q2_K", 256, 84}, {"q3_K", 256, 110}, {"q4_K", 256, 144}, {"q5_K", 256, 176},
    {"q6_K", 256, 210}, {"q8_K", 256, 292}, {"iq2_xxs", 256, 66}, {"iq2_xs", 256, 74},
    {"iq3_xxs", 256, 98}, {"iq1_s", 256, 50}, {"iq4_nl", 32, 18}, {"iq3_s", 256, 110},
    {"iq2_s", 256, 82}, {"iq4_xs", 256, 136}, {"i8", 1, 1}, {"i16", 1, 2}, {"i32", 1, 4},
    {"i64", 1, 8}, {"f64", 1, 8}, {"iq1_m", 256, 56}, {"bf16", 1, 2}, {0, 0, 0}, {0, 0, 0},
    {0, 0, 0}, {"tq1_0", 256, 54}, {"tq2_0", 256, 66}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0},
    {"mxfp4", 32, 17}, {"nvfp4", 64, 36}, {"q1_0", 128, 18}, {"q2_0", 64, 18},
};
#define N_GGML_TYPES (sizeof(GGML_TYPES) / sizeof(GGML_TYPES[0]))

/* Architectures and the u32 keys each must carry (<arch>.<suffix>, 1..cap). */
static const char *const ARCHS[] = {"llama", "qwen2", "qwen3", "mistral", "phi3", "gemma", "gemma2", "gemma3"};
static const struct { const char *suffix; uint64_t cap; } ARCH_KEYS[] = {
    {"block_count", 512}, {"context_length", 1u << 24},
    {"embedding_length", 1u << 20}, {"attention.head_count", 1u << 16},
};
/* Tokenizers those architectures use; others (rwkv, ...) hit asserts in llama.cpp's vocab. */
static const char *const TOKENIZERS[] = {"llama", "gpt2"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

typedef struct { uint64_t hash, off; uint32_t len; } name_ent;
typedef struct { uint32_t type, elem; uint64_t count, value_off, scalar; int has_scalar; } kv_ent;
typedef struct { uint64_t at, end; } tensor_ent;

/* A set of names that live in the file: entries keep (hash, offset, length); equal hashes
 * are confirmed by re-reading the earlier name. Grows with entries read, up to a cap. */
typedef struct { name_ent *ents; int32_t *index; uint32_t n, cap_ents, mask; } name_set;

typedef struct {
    FILE *f;
    uint64_t pos, fpos, size, seed;
    fe_gguf_error *err;
    jmp_buf jmp;
    name_set keys, tensors, tokens;
    kv_ent *kvs;
    tensor_ent *tens;
    char key[FE_GGUF_MAX_KEY_LEN + 1];
    unsigned char scratch[FE_GGUF_MAX_TOKEN_LEN], token[FE_GGUF_MAX_TOKEN_LEN];
} ctx_t;

#define SYNTH (1ull << 63) /* name_ent.off flag: the name is "[EMPTY_<off & ~SYNTH>]" */

static void fail(ctx_t *c, int code, const char *field, uint64_t at, const char *fmt, ...) {
    char reason[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    c->err->code = code;
    c->err->offset = (long long)at;
    snprintf(c->err->field, sizeof c->err->field, "%s", field);
    snprintf(c->err->message, sizeof c->err->message,
             "invalid GGUF field '%s' at byte %llu: %s. The model file is corrupt or hostile; "
             "download or convert it again.", field, (unsigned long long)at, reason);
    longjmp(c->jmp, 1);
}
#define FAIL(c, field, at, ...) fail((c), FE_GGUF_E_FORMAT, (field), (at), __VA_ARGS__)

static void raw_read(ctx_t *c, void *dst, uint64_t n, const char *field) {
    if (n > c->size - c->pos) FAIL(c, field, c->pos, "unexpected end of file");
    if (c->fpos != c->pos) {
        if (c->pos > I64MAX || fe_fseek(c->f, (long long)c->pos, SEEK_SET) != 0)
            fail(c, FE_GGUF_E_IO, field, c->pos, "seek failed");
        c->fpos = c->pos;
    }
    if (fread(dst, 1, (size_t)n, c->f) != (size_t)n) {
        c->fpos = (uint64_t)-1;
        FAIL(c, field, c->pos, "unexpected end of file");
    }
    c->pos += n;
    c->fpos = c->pos;
}

static uint64_t rd_le(ctx_t *c, unsigned n, const char *field) {
    unsigned char b[8];
    uint64_t v = 0;
    unsigned i;
    raw_read(c, b, n, field);
    for (i = 0; i < n; i++) v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static void skip(ctx_t *c, uint64_t n, const char *field) {
    if (n > c->size - c->pos) FAIL(c, field, c->pos, "unexpected end of file");
    if (n <= sizeof c->scratch) raw_read(c, c->scratch, n, field); /* stay in the stdio buffer */
    else c->pos += n;
}

static uint64_t hash_bytes(uint64_t seed, const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull ^ seed;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ull; h ^= h >> 27; h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

/* Index of an entry equal to name, or -1. */
static int32_t set_find(ctx_t *c, name_set *s, const unsigned char *name, uint32_t len, uint64_t h) {
    uint32_t slot;
    if (!s->index) return -1;
    for (slot = (uint32_t)h & s->mask; s->index[slot] >= 0; slot = (slot + 1) & s->mask) {
        const name_ent *e = &s->ents[s->index[slot]];
        if (e->hash == h && e->len == len) {
            if (e->off & SYNTH) {
                snprintf((char *)c->scratch, sizeof c->scratch, "[EMPTY_%llu]", (unsigned long long)(e->off & ~SYNTH));
            } else {
                uint64_t saved = c->pos;
                c->pos = e->off;
                raw_read(c, c->scratch, len, "(re-read)");
                c->pos = saved;
            }
            if (memcmp(c->scratch, name, len) == 0) return s->index[slot];
        }
    }
    return -1;
}

static void set_add(ctx_t *c, name_set *s, uint64_t h, uint64_t off, uint32_t len) {
    uint32_t slot, i;
    if (s->n == s->cap_ents) {
        uint32_t cap = s->cap_ents ? 2 * s->cap_ents : 64;
        name_ent *e = (name_ent *)realloc(s->ents, cap * sizeof *e);
        int32_t *idx;
        if (!e) fail(c, FE_GGUF_E_NOMEM, "(memory)", off, "out of memory");
        s->ents = e;
        idx = (int32_t *)malloc(2u * cap * sizeof *idx);
        if (!idx) fail(c, FE_GGUF_E_NOMEM, "(memory)", off, "out of memory");
        free(s->index);
        s->index = idx;
        s->cap_ents = cap;
        s->mask = 2u * cap - 1;
        for (i = 0; i <= s->mask; i++) s->index[i] = -1;
        for (i = 0; i < s->n; i++) {
            for (slot = (uint32_t)s->ents[i].hash & s->mask; s->index[slot] >= 0; slot = (slot + 1) & s->mask) {}
            s->index[slot] = (int32_t)i;
        }
    }
    s->ents[s->n].hash = h; s->ents[s->n].off = off; s->ents[s->n].len = len;
    for (slot = (uint32_t)h & s->mask; s->index[slot] >= 0; slot = (slot + 1) & s->mask) {}
    s->index[slot] = (int32_t)s->n++;
}

/* Room for entry n in an array that holds 64, 128, 256, ... entries. */
static void *grow(ctx_t *c, void *p, uint32_t n, size_t elem) {
    void *q;
    if (n != 0 && (n < 64 || (n & (n - 1)) != 0)) return p;
    q = realloc(p, (size_t)(n == 0 ? 64 : 2 * n) * elem);
    if (!q) fail(c, FE_GGUF_E_NOMEM, "(memory)", c->pos, "out of memory");
    return q;
}

static uint64_t read_len(ctx_t *c, const char *field, const char *what, uint64_t cap) {
    uint64_t at = c->pos, n = rd_le(c, 8, field);
    if (n > cap) FAIL(c, field, at, "%s length %llu exceeds the cap %llu", what, (unsigned long long)n, (unsigned long long)cap);
    if (n > c->size - c->pos) FAIL(c, field, at, "%s length %llu runs past the end of the file", what, (unsigned long long)n);
    return n;
}

static void read_header(ctx_t *c, uint64_t *n_tensors, uint64_t *n_kv) {
    unsigned char magic[4];
    uint32_t version;
    raw_read(c, magic, 4, "magic");
    if (memcmp(magic, "GGUF", 4) != 0) FAIL(c, "magic", 0, "expected 'GGUF'");
    version = (uint32_t)rd_le(c, 4, "version");
    if (version != 2 && version != 3)
        FAIL(c, "version", 4, "version %lu is not supported (2 or 3)%s", (unsigned long)version,
             (version & 0xFFFF) == 0 ? " (byte-swapped: a big-endian file?)" : "");
    *n_tensors = rd_le(c, 8, "tensor_count");
    if (*n_tensors == 0 || *n_tensors > FE_GGUF_MAX_TENSORS)
        FAIL(c, "tensor_count", 8, "%llu tensors; a model has 1..%d", (unsigned long long)*n_tensors, FE_GGUF_MAX_TENSORS);
    if (*n_tensors * MIN_TENSOR_BYTES > c->size - c->pos)
        FAIL(c, "tensor_count", 8, "%llu tensors cannot fit in the file", (unsigned long long)*n_tensors);
    *n_kv = rd_le(c, 8, "kv_count");
    if (*n_kv > FE_GGUF_MAX_KV)
        FAIL(c, "kv_count", 16, "%llu key-value pairs; at most %d", (unsigned long long)*n_kv, FE_GGUF_MAX_KV);
    if (*n_kv * MIN_KV_BYTES + *n_tensors * MIN_TENSOR_BYTES > c->size - c->pos)
        FAIL(c, "kv_count", 16, "%llu key-value pairs cannot fit in the file", (unsigned long long)*n_kv);
}

/* llama.cpp aborts (GGML_ASSERT) on a vocabulary with two equal tokens. It reads each token
 * as a C string (up to the first NUL) and renames an empty token i "[EMPTY_i]"; tokens must
 * be unique under those rules. */
static void read_tokens(ctx_t *c, uint64_t n) {
    uint64_t j, at, len;
    char what[48];
    int32_t dup;
    for (j = 0; j < n; j++) {
        uint64_t h, off;
        at = c->pos;
        snprintf(what, sizeof what, "element %llu: token", (unsigned long long)j);
        len = read_len(c, c->key, what, FE_GGUF_MAX_TOKEN_LEN);
        off = c->pos;
        raw_read(c, c->token, len, c->key);
        {   /* llama.cpp reads tokens as C strings: up to the first NUL */
            const unsigned char *nul = (const unsigned char *)memchr(c->token, 0, (size_t)len);
            if (nul) len = (uint64_t)(nul - c->token);
        }
        if (len == 0) {
            len = (uint64_t)snprintf((char *)c->token, sizeof c->token, "[EMPTY_%llu]", (unsigned long long)j);
            off = SYNTH | j;
        }
        h = hash_bytes(c->seed, c->token, (size_t)len);
        if ((dup = set_find(c, &c->tokens, c->token, (uint32_t)len, h)) >= 0)
            FAIL(c, c->key, at, "token %llu repeats token %ld; llama.cpp aborts on that", (unsigned long long)j, (long)dup);
        set_add(c, &c->tokens, h, off, (uint32_t)len);
    }
}

static void read_kv(ctx_t *c, uint32_t i) {
    char kfield[32];
    uint64_t key_off = c->pos, n, at, j;
    uint32_t type, elem = (uint32_t)-1, len;
    kv_ent *kv;
    uint64_t h;
    int32_t dup;
    snprintf(kfield, sizeof kfield, "kv[%lu].key", (unsigned long)i);
    n = read_len(c, kfield, "key", FE_GGUF_MAX_KEY_LEN);
    if (n == 0) FAIL(c, kfield, key_off, "empty key");
    len = (uint32_t)n;
    raw_read(c, c->key, len, kfield);
    c->key[len] = '\0';
    for (j = 0; j < len; j++)
        if ((unsigned char)c->key[j] < 0x20 || (unsigned char)c->key[j] > 0x7E)
            FAIL(c, kfield, key_off, "key is not printable ASCII");
    h = hash_bytes(c->seed, (const unsigned char *)c->key, len);
    if ((dup = set_find(c, &c->keys, (const unsigned char *)c->key, len, h)) >= 0)
        FAIL(c, kfield, key_off, "duplicate key '%s' (first at kv[%ld])", c->key, (long)dup);
    at = c->pos;
    type = (uint32_t)rd_le(c, 4, c->key);
    if (type >= T_COUNT) FAIL(c, c->key, at, "unknown value type %lu", (unsigned long)type);
    n = 1;
    if (type == T_ARR) {
        unsigned min_size;
        at = c->pos;
        elem = (uint32_t)rd_le(c, 4, c->key);
        if (elem >= T_COUNT) FAIL(c, c->key, at, "unknown array element type %lu", (unsigned long)elem);
        if (elem == T_ARR) FAIL(c, c->key, at, "arrays of arrays are not supported");
        at = c->pos;
        n = rd_le(c, 8, c->key);
        if (n > FE_GGUF_MAX_ARRAY_LEN)
            FAIL(c, c->key, at, "array length %llu exceeds the cap %llu", (unsigned long long)n, FE_GGUF_MAX_ARRAY_LEN);
        min_size = elem == T_STR ? 8 : TYPE_SIZE[elem];
        if (n * min_size > c->size - c->pos)
            FAIL(c, c->key, at, "array of %llu %s runs past the end of the file", (unsigned long long)n, TYPE_NAME[elem]);
    }
    if (type == T_ARR && elem == T_STR && strcmp(c->key, "tokenizer.ggml.tokens") == 0 && n > FE_GGUF_MAX_TOKENS)
        FAIL(c, c->key, at, "%llu tokens exceed the cap %llu", (unsigned long long)n, FE_GGUF_MAX_TOKENS);
    c->kvs = (kv_ent *)grow(c, c->kvs, i, sizeof *c->kvs);
    kv = &c->kvs[i];
    kv->type = type; kv->elem = elem; kv->count = n; kv->value_off = c->pos; kv->has_scalar = 0;
    if (type == T_ARR && elem == T_STR && strcmp(c->key, "tokenizer.ggml.tokens") == 0) {
        read_tokens(c, n);
    } else if (type == T_ARR && elem == T_STR) {
        for (j = 0; j < n; j++) {
            char what[48];
            snprintf(what, sizeof what, "element %llu: string", (unsigned long long)j);
            skip(c, read_len(c, c->key, what, FE_GGUF_MAX_STRING_LEN), c->key);
        }
    } else if (type == T_ARR) {
        skip(c, n * TYPE_SIZE[elem], c->key);
    } else if (type == T_STR) {
        skip(c, read_len(c, c->key, "string", FE_GGUF_MAX_STRING_LEN), c->key);
    } else if (type == T_U8 || type == T_U16 || type == T_U32 || type == T_U64) {
        kv->scalar = rd_le(c, TYPE_SIZE[type], c->key);
        kv->has_scalar = 1;
    } else {
        skip(c, TYPE_SIZE[type], c->key);
    }
    set_add(c, &c->keys, h, key_off + 8, len);
}

static const kv_ent *find_kv(ctx_t *c, const char *key) {
    uint32_t len = (uint32_t)strlen(key);
    int32_t i = set_find(c, &c->keys, (const unsigned char *)key, len, hash_bytes(c->seed, (const unsigned char *)key, len));
    return i < 0 ? NULL : &c->kvs[i];
}

static const char *type_str(const kv_ent *kv, char *buf, size_t n) {
    if (kv->type == T_ARR) snprintf(buf, n, "arr[%s]", TYPE_NAME[kv->elem]);
    else snprintf(buf, n, "%s", TYPE_NAME[kv->type]);
    return buf;
}

static const kv_ent *need(ctx_t *c, const char *key) {
    const kv_ent *kv = find_kv(c, key);
    if (!kv) FAIL(c, key, 16, "required key is missing");
    return kv;
}

/* Reads a short string value (<= 64 bytes) into buf; longer ones read as "". */
static void read_short_str(ctx_t *c, const kv_ent *kv, char *buf) {
    uint64_t saved = c->pos, n;
    c->pos = kv->value_off;
    n = rd_le(c, 8, "(re-read)");
    buf[0] = '\0';
    if (n <= 64) { raw_read(c, buf, n, "(re-read)"); buf[n] = '\0'; }
    c->pos = saved;
}

static uint32_t check_kvs(ctx_t *c, char *arch) {
    uint32_t alignment = DEFAULT_ALIGNMENT;
    const kv_ent *kv, *tokens;
    char tb[24], key[FE_GGUF_MAX_KEY_LEN + 80], model[65];
    size_t i;
    int known = 0;
    if ((kv = find_kv(c, "general.alignment")) != NULL) {
        if (kv->type != T_U32) FAIL(c, "general.alignment", kv->value_off, "must be u32, is %s", type_str(kv, tb, sizeof tb));
        alignment = (uint32_t)kv->scalar;
        if (alignment == 0 || (alignment & (alignment - 1)))
            FAIL(c, "general.alignment", kv->value_off, "%lu is not a power of two", (unsigned long)alignment);
    }
    kv = need(c, "general.architecture");
    if (kv->type != T_STR) FAIL(c, "general.architecture", kv->value_off, "must be str, is %s", type_str(kv, tb, sizeof tb));
    read_short_str(c, kv, arch);
    for (i = 0; i < COUNT(ARCHS); i++) known |= strcmp(arch, ARCHS[i]) == 0;
    if (!known) FAIL(c, "general.architecture", kv->value_off, "architecture is not supported");
    for (i = 0; i < COUNT(ARCH_KEYS); i++) {
        snprintf(key, sizeof key, "%s.%s", arch, ARCH_KEYS[i].suffix);
        kv = need(c, key);
        if (kv->type != T_U32) FAIL(c, key, kv->value_off, "must be u32, is %s", type_str(kv, tb, sizeof tb));
        if (kv->scalar < 1 || kv->scalar > ARCH_KEYS[i].cap)
            FAIL(c, key, kv->value_off, "value %llu is outside 1..%llu", (unsigned long long)kv->scalar, (unsigned long long)ARCH_KEYS[i].cap);
    }
    kv = need(c, "tokenizer.ggml.model");
    if (kv->type != T_STR) FAIL(c, "tokenizer.ggml.model", kv->value_off, "must be str, is %s", type_str(kv, tb, sizeof tb));
    read_short_str(c, kv, model);
    for (i = 0, known = 0; i < COUNT(TOKENIZERS); i++) known |= strcmp(model, TOKENIZERS[i]) == 0;
    if (!known) FAIL(c, "tokenizer.ggml.model", kv->value_off, "tokenizer is not supported");
    tokens = need(c, "tokenizer.ggml.tokens");
    if (tokens->type != T_ARR || tokens->elem != T_STR)
        FAIL(c, "tokenizer.ggml.tokens", tokens->value_off, "must be arr[str], is %s", type_str(tokens, tb, sizeof tb));
    if (tokens->count < 1 || tokens->count > FE_GGUF_MAX_TOKENS)
        FAIL(c, "tokenizer.ggml.tokens", tokens->value_off, "%llu tokens; need 1..%llu", (unsigned long long)tokens->count, FE_GGUF_MAX_TOKENS);
    {
        static const char *const names[2] = {"tokenizer.ggml.scores", "tokenizer.ggml.token_type"};
        for (i = 0; i < 2; i++) {
            if ((kv = find_kv(c, names[i])) == NULL) continue;
            if (kv->type != T_ARR || !(kv->elem == T_I32 || (i == 0 && kv->elem == T_F32)))
                FAIL(c, names[i], kv->value_off, "wrong type %s", type_str(kv, tb, sizeof tb));
            if (kv->count < tokens->count)
                FAIL(c, names[i], kv->value_off, "%llu entries for %llu tokens", (unsigned long long)kv->count, (unsigned long long)tokens->count);
        }
    }
    if ((kv = find_kv(c, "tokenizer.ggml.merges")) != NULL && (kv->type != T_ARR || kv->elem != T_STR))
        FAIL(c, "tokenizer.ggml.merges", kv->value_off, "must be arr[str], is %s", type_str(kv, tb, sizeof tb));
    return alignment;
}

/* Reads tensor info i, checks it, returns the padded end of its data. */
static uint64_t read_tensor(ctx_t *c, uint32_t i, uint64_t alignment, uint64_t expected) {
    char field[48];
    unsigned char name[FE_GGUF_MAX_TENSOR_NAME];
    uint64_t at = c->pos, n, ne[4], total = 1, nbytes, offset, padded, tat;
    uint32_t n_dims, d, gtype, len;
    const ggml_type_info *t;
    uint64_t h;
    int32_t dup;
    snprintf(field, sizeof field, "tensor[%lu].name", (unsigned long)i);
    n = read_len(c, field, "name", FE_GGUF_MAX_TENSOR_NAME);
    if (n == 0) FAIL(c, field, at, "empty tensor name");
    len = (uint32_t)n;
    raw_read(c, name, len, field);
    if (memchr(name, 0, len)) FAIL(c, field, at, "tensor name contains a NUL byte");
    h = hash_bytes(c->seed, name, len);
    if ((dup = set_find(c, &c->tensors, name, len, h)) >= 0)
        FAIL(c, field, at, "duplicate tensor name '%.*s' (first at tensor[%ld])", (int)len, (const char *)name, (long)dup);
    set_add(c, &c->tensors, h, at + 8, len);
    snprintf(field, sizeof field, "tensor[%lu].n_dims", (unsigned long)i);
    at = c->pos;
    n_dims = (uint32_t)rd_le(c, 4, field);
    if (n_dims < 1 || n_dims > 4) FAIL(c, field, at, "%lu dimensions; need 1..4", (unsigned long)n_dims);
    snprintf(field, sizeof field, "tensor[%lu].ne", (unsigned long)i);
    at = c->pos;
    for (d = 0; d < n_dims; d++) ne[d] = rd_le(c, 8, field);
    for (d = 0; d < n_dims; d++)
        if (ne[d] == 0 || ne[d] > I64MAX) FAIL(c, field, at, "dimension %lu must be positive", (unsigned long)d);
    for (d = 0; d < n_dims; d++) {
        if (total > I64MAX / ne[d]) FAIL(c, field, at, "dimensions overflow int64");
        total *= ne[d];
    }
    snprintf(field, sizeof field, "tensor[%lu].type", (unsigned long)i);
    tat = c->pos;
    gtype = (uint32_t)rd_le(c, 4, field);
    if (gtype >= N_GGML_TYPES || GGML_TYPES[gtype].blck == 0) FAIL(c, field, tat, "unknown ggml type %lu", (unsigned long)gtype);
    t = &GGML_TYPES[gtype];
    snprintf(field, sizeof field, "tensor[%lu].ne", (unsigned long)i);
    if (ne[0] % t->blck) FAIL(c, field, at, "ne[0]=%llu is not a multiple of the %s block size %u", (unsigned long long)ne[0], t->name, t->blck);
    if (total / t->blck > (I64MAX - alignment) / t->size) FAIL(c, field, at, "byte size as %s overflows int64", t->name);
    nbytes = total / t->blck * t->size;
    if (nbytes > c->size) FAIL(c, field, at, "%llu bytes of %s cannot fit in the file", (unsigned long long)nbytes, t->name);
    snprintf(field, sizeof field, "tensor[%lu].offset", (unsigned long)i);
    at = c->pos;
    offset = rd_le(c, 8, field);
    if (offset % alignment) FAIL(c, field, at, "offset %llu is not a multiple of the alignment %llu", (unsigned long long)offset, (unsigned long long)alignment);
    if (offset < expected) FAIL(c, field, at, "offset %llu overlaps the previous tensor (ends at %llu)", (unsigned long long)offset, (unsigned long long)expected);
    if (offset > expected) FAIL(c, field, at, "offset %llu leaves a gap; llama.cpp needs %llu", (unsigned long long)offset, (unsigned long long)expected);
    padded = (nbytes + alignment - 1) / alignment * alignment;
    if (padded > I64MAX - expected) FAIL(c, field, at, "data section size overflows int64");
    c->tens = (tensor_ent *)grow(c, c->tens, i, sizeof *c->tens);
    c->tens[i].at = at;
    c->tens[i].end = expected + nbytes;
    return expected + padded;
}

static int run(ctx_t *c) {
    uint64_t n_tensors, n_kv, alignment, expected = 0, data_offset;
    uint32_t i;
    char arch[65];
    read_header(c, &n_tensors, &n_kv);
    for (i = 0; i < n_kv; i++) read_kv(c, i);
    alignment = check_kvs(c, arch);
    for (i = 0; i < n_tensors; i++) expected = read_tensor(c, i, alignment, expected);
    data_offset = (c->pos + alignment - 1) / alignment * alignment;
    for (i = 0; i < n_tensors; i++) {
        if (data_offset + c->tens[i].end > c->size) {
            char field[48];
            snprintf(field, sizeof field, "tensor[%lu].offset", (unsigned long)i);
            FAIL(c, field, c->tens[i].at, "tensor data ends at byte %llu, past the end of the %llu-byte file",
                 (unsigned long long)(data_offset + c->tens[i].end), (unsigned long long)c->size);
        }
    }
    return FE_GGUF_OK;
}

/* setjmp lives here, where no local changes after it. */
static int guarded_run(ctx_t *c) {
    if (setjmp(c->jmp) != 0) return c->err->code;
    return run(c);
}

int fe_gguf_validate_file(const char *path, fe_gguf_error *err) {
    fe_gguf_error local;
    ctx_t *c;
    int rc;
    long long end;
    if (!err) err = &local;
    memset(err, 0, sizeof *err);
    err->offset = -1;
    c = (ctx_t *)calloc(1, sizeof *c);
    if (!c) { err->code = FE_GGUF_E_NOMEM; snprintf(err->message, sizeof err->message, "out of memory"); return FE_GGUF_E_NOMEM; }
    c->err = err;
#ifndef _WIN32
    {   /* a directory opens fine with fopen; a FIFO would block: only regular files */
        struct stat st;
        if (path && (stat(path, &st) != 0 || !S_ISREG(st.st_mode))) path = NULL;
    }
#endif
    c->f = path ? fopen(path, "rb") : NULL;
    if (!c->f || fe_fseek(c->f, 0, SEEK_END) != 0 || (end = (long long)
#ifdef _WIN32
            _ftelli64(c->f)
#else
            ftello(c->f)
#endif
            ) < 0 || fe_fseek(c->f, 0, SEEK_SET) != 0) {
        err->code = FE_GGUF_E_IO;
        snprintf(err->field, sizeof err->field, "(file)");
        snprintf(err->message, sizeof err->message, "cannot open the model file (missing, unreadable or not a regular file)");
        if (c->f) fclose(c->f);
        free(c);
        return FE_GGUF_E_IO;
    }
    c->size = (uint64_t)end;
    c->seed = (uint64_t)(uintptr_t)c ^ ((uint64_t)time(NULL) << 20) ^ (uint64_t)clock();
    rc = guarded_run(c);
    fclose(c->f);
    free(c->keys.ents); free(c->keys.index);
    free(c->tensors.ents); free(c->tensors.index);
    free(c->tokens.ents); free(c->tokens.index);
    free(c->kvs); free(c->tens);
    free(c);
    return rc;
}
