/* GGUF pre-flight validator; see gguf_validate.h. The one implementation of every GGUF
 * rule: structure first (header, keys, values, tensor infos), then semantic rules derived
 * from the pinned llama.cpp's asserts ([An] tags, native/src/ASSERTS.md). */
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
    unsigned char merge[2 * FE_GGUF_MAX_TOKEN_LEN + 2];
    unsigned char *byte_form;   /* per token: 1 if its text is "<0xHH>" (an SPM byte token) */
    uint64_t n_tokens;          /* tokens read (0 until tokenizer.ggml.tokens is read) */
    uint64_t embd_rows, out_rows; /* ne[1] of token_embd.weight / output.weight, 0 if absent */
    uint64_t embd_at, out_at;
    int adapter;                /* fe_gguf_validate_adapter_file: container rules + adapter keys only */
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
             "invalid GGUF field '%s' at byte %llu: %s. The %s", field, (unsigned long long)at, reason,
             c->adapter ? "adapter file is corrupt, hostile or not a LoRA adapter; export it again."
                        : "model file is corrupt or hostile; download or convert it again.");
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

/* [A19] llama.cpp aborts (GGML_ASSERT) on a vocabulary with two equal tokens. It reads each token
 * as a C string (up to the first NUL) and renames an empty token i "[EMPTY_i]"; tokens must
 * be unique under those rules. */
static int is_utf8(const unsigned char *p, uint64_t n) {
    uint64_t i = 0;
    while (i < n) {
        unsigned char b = p[i];
        uint32_t cp;
        unsigned k, m;
        if (b < 0x80) { i++; continue; }
        if (b >= 0xC2 && b <= 0xDF) { k = 1; cp = b & 0x1F; }
        else if (b >= 0xE0 && b <= 0xEF) { k = 2; cp = b & 0x0F; }
        else if (b >= 0xF0 && b <= 0xF4) { k = 3; cp = b & 0x07; }
        else return 0;
        if (n - i <= k) return 0;
        for (m = 1; m <= k; m++) {
            if ((p[i + m] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + m] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int hexdig(unsigned char ch) { return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F') || (ch >= 'a' && ch <= 'f'); }

static void read_tokens(ctx_t *c, uint64_t n) {
    uint64_t j, at, len;
    char what[48];
    int32_t dup;
    free(c->byte_form);
    c->byte_form = (unsigned char *)calloc((size_t)(n ? n : 1), 1);  /* n*8 bytes fit in the file */
    if (!c->byte_form) fail(c, FE_GGUF_E_NOMEM, "(memory)", c->pos, "out of memory");
    c->n_tokens = 0;
    for (j = 0; j < n; j++) {
        uint64_t h, off;
        at = c->pos;
        snprintf(what, sizeof what, "element %llu: token", (unsigned long long)j);
        len = read_len(c, c->key, what, FE_GGUF_MAX_TOKEN_LEN);
        off = c->pos;
        raw_read(c, c->token, len, c->key);
        if (!is_utf8(c->token, len))
            FAIL(c, c->key, at, "token %llu is not valid UTF-8", (unsigned long long)j);
        c->byte_form[j] = len == 6 && memcmp(c->token, "<0x", 3) == 0 && hexdig(c->token[3]) && hexdig(c->token[4]) && c->token[5] == '>';
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
    c->n_tokens = n;
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
    } else {  /* fixed-size scalar: keep its raw little-endian bits */
        kv->scalar = rd_le(c, TYPE_SIZE[type], c->key);
        kv->has_scalar = 1;
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
        if (alignment < 32)  /* [A18] the mmap'd data must be 32-byte aligned (TENSOR_ALIGNMENT) */
            FAIL(c, "general.alignment", kv->value_off, "%lu is below 32; llama.cpp's CPU buffers assert 32-byte aligned data", (unsigned long)alignment);
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

/* ---- Semantic rules ----------------------------------------------------------------------
 * Values that the pinned llama.cpp turns into a GGML_ASSERT/GGML_ABORT (the process dies) or
 * silently into nonsense while loading the model, its vocabulary or its first graph. Each
 * rule names the assert it pre-empts as [An]; native/src/ASSERTS.md lists them with the
 * file:line in the pinned llama.cpp, so a new pin can be re-checked. */

#define MAX_LAYERS 512      /* llama-hparams.h LLAMA_MAX_LAYERS */
#define MAX_EXPERTS 1024    /* llama-hparams.h LLAMA_MAX_EXPERTS */

static double f32_bits(uint64_t bits) { uint32_t u = (uint32_t)bits; float f; memcpy(&f, &u, 4); return f; }
static double f64_bits(uint64_t bits) { double d; memcpy(&d, &bits, 8); return d; }
static int finite_d(double d) { return d == d && d - d == 0.0; }

static const kv_ent *typed(ctx_t *c, const char *key, uint32_t type) {
    char tb[24];
    const kv_ent *kv = find_kv(c, key);
    if (kv && kv->type != type)
        FAIL(c, key, kv->value_off, "must be %s, is %s", TYPE_NAME[type], type_str(kv, tb, sizeof tb));
    return kv;
}

static int opt_u32(ctx_t *c, const char *key, uint64_t *v) {
    const kv_ent *kv = typed(c, key, T_U32);
    if (kv) *v = kv->scalar;
    return kv != NULL;
}

static int opt_f32(ctx_t *c, const char *key, double *v) {
    const kv_ent *kv = typed(c, key, T_F32);
    if (kv) *v = f32_bits(kv->scalar);
    return kv != NULL;
}

/* A per-layer key (llama.cpp's get_key_or_arr): a u32, or an array of u32/i32/bool with one
 * entry per layer. Fills out[0..n_layer). */
static int opt_layers(ctx_t *c, const char *key, uint64_t n_layer, uint32_t *out) {
    char tb[24];
    const kv_ent *kv = find_kv(c, key);
    uint64_t il, saved;
    if (!kv) return 0;
    if (kv->type == T_U32) {
        for (il = 0; il < n_layer; il++) out[il] = (uint32_t)kv->scalar;
        return 1;
    }
    if (kv->type != T_ARR || !(kv->elem == T_U32 || kv->elem == T_I32 || kv->elem == T_BOOL))
        FAIL(c, key, kv->value_off, "must be u32 or a per-layer array of u32, is %s", type_str(kv, tb, sizeof tb));
    if (kv->count != n_layer)
        FAIL(c, key, kv->value_off, "%llu entries for %llu layers", (unsigned long long)kv->count, (unsigned long long)n_layer);
    saved = c->pos;
    c->pos = kv->value_off;
    for (il = 0; il < n_layer; il++) out[il] = (uint32_t)rd_le(c, TYPE_SIZE[kv->elem], key);
    c->pos = saved;
    return 1;
}

static void need_positive_finite(ctx_t *c, const char *key, double lo_excl, double hi, const char *ref) {
    double v;
    if (!opt_f32(c, key, &v)) return;
    if (!finite_d(v) || v <= lo_excl || v > hi)
        FAIL(c, key, find_kv(c, key)->value_off, "value %g is outside (%g, %g]%s", v, lo_excl, hi, ref);
}

/* Every f32/f64 value under "<arch>." (scalars and arrays) must be finite. */
static void check_finite_floats(ctx_t *c, const char *arch) {
    uint32_t i;
    size_t plen = strlen(arch);
    uint64_t saved = c->pos, j;
    for (i = 0; i < c->keys.n; i++) {
        const kv_ent *kv = &c->kvs[i];
        const name_ent *e = &c->keys.ents[i];
        int is_f = kv->type == T_F32 || kv->type == T_F64 || (kv->type == T_ARR && (kv->elem == T_F32 || kv->elem == T_F64));
        if (!is_f || e->len <= plen) continue;
        c->pos = e->off;
        raw_read(c, c->key, e->len, "(re-read)");
        c->key[e->len] = '\0';
        if (memcmp(c->key, arch, plen) != 0 || c->key[plen] != '.') continue;
        if (kv->type != T_ARR) {
            double v = kv->type == T_F32 ? f32_bits(kv->scalar) : f64_bits(kv->scalar);
            if (!finite_d(v)) FAIL(c, c->key, kv->value_off, "value %g is not finite", v);
            continue;
        }
        c->pos = kv->value_off;
        for (j = 0; j < kv->count; j++) {
            uint64_t b = rd_le(c, TYPE_SIZE[kv->elem], c->key);
            double v = kv->elem == T_F32 ? f32_bits(b) : f64_bits(b);
            if (!finite_d(v)) FAIL(c, c->key, kv->value_off, "element %llu is %g, not finite", (unsigned long long)j, v);
        }
    }
    c->pos = saved;
}

static int arch_in(const char *arch, const char *const *list, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) if (strcmp(arch, list[i]) == 0) return 1;
    return 0;
}

static int set_has(ctx_t *c, name_set *s, const unsigned char *p, uint32_t len) {
    uint64_t h = hash_bytes(c->seed, p, len);
    uint32_t slot;
    if (!s->index) return 0;
    for (slot = (uint32_t)h & s->mask; s->index[slot] >= 0; slot = (slot + 1) & s->mask)
        if (s->ents[s->index[slot]].hash == h && s->ents[s->index[slot]].len == len) return 1;
    return 0;  /* 64-bit seeded hash: a false "yes" has probability ~2^-64 and only accepts a merge */
}

static void check_hparams(ctx_t *c, const char *arch) {
    static const char *const HEAD_DIM_EQ[] = {"llama", "qwen2", "qwen3", "mistral", "phi3"};
    static const char *const ROT_EQ[] = {"llama", "qwen2", "qwen3", "mistral"};
    static const char *const ROPE_TYPES[] = {"none", "linear", "yarn", "longrope"};
    static const char *const EPS[] = {"attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"};
    static const char *const RATES[] = {"rope.freq_base", "rope.freq_base_swa", "rope.scaling.factor",
                                        "rope.scale_linear", "rope.scaling.attn_factor"};
    char k[FE_GGUF_MAX_KEY_LEN + 80], k2[FE_GGUF_MAX_KEY_LEN + 80], s[65];
    uint32_t per[MAX_LAYERS];
    uint64_t n_layer, n_embd, n_head, v, n_expert = 0, used_max = 0, groups = 0, group_used = 0, il, k_len, v_len, n_rot;
    const kv_ent *kv;
    size_t i;
#define K(suffix) (snprintf(k, sizeof k, "%s.%s", arch, suffix), k)
    n_layer = find_kv(c, K("block_count"))->scalar;  /* u32 1..512: check_kvs [A1] */
    n_embd = find_kv(c, K("embedding_length"))->scalar;
    n_head = find_kv(c, K("attention.head_count"))->scalar;
    if (opt_u32(c, K("nextn_predict_layers"), &v) && v > n_layer)  /* [A2] */
        FAIL(c, k, find_kv(c, k)->value_off, "%llu next-token layers but only %llu blocks", (unsigned long long)v, (unsigned long long)n_layer);
    if (opt_u32(c, K("expert_count"), &n_expert) && n_expert > MAX_EXPERTS)  /* [A3] */
        FAIL(c, k, find_kv(c, k)->value_off, "%llu experts; llama.cpp allows at most %d", (unsigned long long)n_expert, MAX_EXPERTS);
    if (opt_layers(c, K("expert_used_count"), n_layer, per)) {
        for (il = 0; il < n_layer; il++) if (per[il] > used_max) used_max = per[il];
        if (used_max > n_expert)  /* [A4] */
            FAIL(c, k, find_kv(c, k)->value_off, "%llu experts used per token but expert_count is %llu", (unsigned long long)used_max, (unsigned long long)n_expert);
        if (n_expert > 0 && used_max == 0)  /* [A5] */
            FAIL(c, k, find_kv(c, k)->value_off, "0 experts used per token in a model with %llu experts", (unsigned long long)n_expert);
    } else if (n_expert > 0) {
        FAIL(c, K("expert_used_count"), 16, "required key is missing (the model has %llu experts)", (unsigned long long)n_expert);  /* [A5] */
    }
    opt_u32(c, K("expert_group_count"), &groups);
    opt_u32(c, K("expert_group_used_count"), &group_used);
    snprintf(k2, sizeof k2, "%s.expert_group_used_count", arch);
    K("expert_group_count");
    if (n_expert == 0 && groups != 0)  /* [A6] */
        FAIL(c, k, find_kv(c, k)->value_off, "%llu expert groups in a model without experts", (unsigned long long)groups);
    if (n_expert == 0 && group_used != 0)
        FAIL(c, k2, find_kv(c, k2)->value_off, "%llu expert groups used in a model without experts", (unsigned long long)group_used);
    if (n_expert > 0 && groups >= n_expert)  /* [A7] */
        FAIL(c, k, find_kv(c, k)->value_off, "%llu expert groups for %llu experts", (unsigned long long)groups, (unsigned long long)n_expert);
    if (n_expert > 0 && groups > 1 && n_expert % groups)  /* [A8] */
        FAIL(c, k, find_kv(c, k)->value_off, "%llu experts do not split into %llu groups", (unsigned long long)n_expert, (unsigned long long)groups);
    if (groups > 1 && (group_used == 0 || group_used >= groups))  /* [A9] */
        FAIL(c, k2, find_kv(c, k2) ? find_kv(c, k2)->value_off : 16, "%llu groups used of %llu; need 1..%llu",
             (unsigned long long)group_used, (unsigned long long)groups, (unsigned long long)(groups - 1));
    if (groups <= 1 && group_used > 0 && n_expert > 0)
        FAIL(c, k2, find_kv(c, k2)->value_off, "%llu groups used but expert_group_count is %llu", (unsigned long long)group_used, (unsigned long long)groups);
    if (opt_layers(c, K("attention.head_count_kv"), n_layer, per))  /* [A10] */
        for (il = 0; il < n_layer; il++)
            if (per[il] == 0 || per[il] > n_head || n_head % per[il])
                FAIL(c, k, find_kv(c, k)->value_off, "layer %llu: %lu KV heads for %llu attention heads; need a divisor of %llu",
                     (unsigned long long)il, (unsigned long)per[il], (unsigned long long)n_head, (unsigned long long)n_head);
    if (opt_layers(c, K("feed_forward_length"), n_layer, per))
        for (il = 0; il < n_layer; il++)
            if (per[il] == 0 || per[il] > (1u << 24))
                FAIL(c, k, find_kv(c, k)->value_off, "layer %llu: feed-forward length %lu is outside 1..%u", (unsigned long long)il, (unsigned long)per[il], 1u << 24);
    /* head sizes: key_length / value_length default to embedding_length / head_count */
    k_len = v_len = n_embd / n_head;
    if (!find_kv(c, K("attention.key_length")) && n_embd % n_head && (kv = find_kv(c, K("embedding_length"))) != NULL)
        FAIL(c, k, kv->value_off, "%llu is not a multiple of the head count %llu",
             (unsigned long long)n_embd, (unsigned long long)n_head);
    if (opt_u32(c, K("attention.key_length"), &k_len) && (k_len == 0 || k_len > 65536))
        FAIL(c, k, find_kv(c, k)->value_off, "head size %llu is outside 1..65536", (unsigned long long)k_len);
    v_len = n_embd / n_head;
    opt_u32(c, K("attention.value_length"), &v_len);
    if ((kv = find_kv(c, K("attention.value_length"))) == NULL) kv = find_kv(c, K("attention.key_length"));
    if (v_len == 0 || v_len > 65536)
        FAIL(c, k, kv ? kv->value_off : 16, "head size %llu is outside 1..65536", (unsigned long long)v_len);
    if (arch_in(arch, HEAD_DIM_EQ, COUNT(HEAD_DIM_EQ)) && v_len != k_len)  /* [A11] */
        FAIL(c, k, kv ? kv->value_off : 16, "value head size %llu differs from key head size %llu; the %s graph asserts they are equal",
             (unsigned long long)v_len, (unsigned long long)k_len, arch);
    n_rot = k_len;
    if (opt_u32(c, K("rope.dimension_count"), &n_rot)) {
        if (n_rot == 0 || n_rot % 2 || n_rot > k_len)  /* [A12] */
            FAIL(c, k, find_kv(c, k)->value_off, "%llu rotary dimensions; need an even number in 2..%llu (the head size)",
                 (unsigned long long)n_rot, (unsigned long long)k_len);
        if (arch_in(arch, ROT_EQ, COUNT(ROT_EQ)) && n_rot != k_len)  /* [A13] */
            FAIL(c, k, find_kv(c, k)->value_off, "%llu rotary dimensions; the %s graph asserts it equals the head size %llu",
                 (unsigned long long)n_rot, arch, (unsigned long long)k_len);
    }
    if ((kv = typed(c, K("rope.scaling.type"), T_STR)) != NULL) {  /* [A14] */
        int ok = 0;
        read_short_str(c, kv, s);
        for (i = 0; i < COUNT(ROPE_TYPES); i++) ok |= strcmp(s, ROPE_TYPES[i]) == 0;
        if (!ok) FAIL(c, k, kv->value_off, "unknown rope scaling type (none, linear, yarn or longrope)");
    }
    if (opt_u32(c, K("rope.scaling.original_context_length"), &v) && (v == 0 || v > (1u << 24)))
        FAIL(c, k, find_kv(c, k)->value_off, "%llu is outside 1..%u", (unsigned long long)v, 1u << 24);
    for (i = 0; i < COUNT(RATES); i++) need_positive_finite(c, K(RATES[i]), 0.0, 1e30, "");
    for (i = 0; i < COUNT(EPS); i++)  /* [A15] */
        need_positive_finite(c, K(EPS[i]), 0.0, 1.0, "; the norm op asserts eps >= 0 (NaN fails it)");
    check_finite_floats(c, arch);
#undef K
}

static void check_vocab(ctx_t *c) {
    static const char *const IDS[] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id",
        "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id", "tokenizer.ggml.mask_token_id",
        "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.fim_mid_token_id",
        "tokenizer.ggml.fim_pad_token_id", "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id"};
    const uint64_t n = c->n_tokens;
    const kv_ent *kv, *tokens = find_kv(c, "tokenizer.ggml.tokens");
    uint64_t saved = c->pos, j, v, n_normal = 0;
    char model[65];
    size_t i;
    read_short_str(c, find_kv(c, "tokenizer.ggml.model"), model);
    if ((kv = find_kv(c, "tokenizer.ggml.scores")) != NULL) {
        if (kv->count != n)
            FAIL(c, "tokenizer.ggml.scores", kv->value_off, "%llu scores for %llu tokens", (unsigned long long)kv->count, (unsigned long long)n);
        if (kv->elem == T_F32) {
            c->pos = kv->value_off;
            for (j = 0; j < n; j++) {
                double d = f32_bits(rd_le(c, 4, "tokenizer.ggml.scores"));
                if (!finite_d(d)) FAIL(c, "tokenizer.ggml.scores", kv->value_off, "score of token %llu is %g", (unsigned long long)j, d);
            }
        }
    }
    if ((kv = find_kv(c, "tokenizer.ggml.token_type")) != NULL) {
        if (kv->count != n)
            FAIL(c, "tokenizer.ggml.token_type", kv->value_off, "%llu token types for %llu tokens", (unsigned long long)kv->count, (unsigned long long)n);
        c->pos = kv->value_off;
        for (j = 0; j < n; j++) {
            uint32_t t = (uint32_t)rd_le(c, 4, "tokenizer.ggml.token_type");
            if (t > 6)
                FAIL(c, "tokenizer.ggml.token_type", kv->value_off, "token %llu has type %ld; types are 0..6", (unsigned long long)j, (long)(int32_t)t);
            if (t == 6 && !c->byte_form[j])  /* [A16] */
                FAIL(c, "tokenizer.ggml.token_type", kv->value_off, "token %llu is typed BYTE but its text is not <0xHH>", (unsigned long long)j);
            n_normal += t == 1;
        }
        if (n_normal == 0)
            FAIL(c, "tokenizer.ggml.token_type", kv->value_off, "no token is of type NORMAL (all control, user-defined, byte or unused): the model cannot encode text");
    }
    for (i = 0; i < COUNT(IDS); i++)
        if (opt_u32(c, IDS[i], &v) && v >= n)  /* llama.cpp silently substitutes another id */
            FAIL(c, IDS[i], find_kv(c, IDS[i])->value_off, "token id %llu is outside the vocabulary of %llu tokens", (unsigned long long)v, (unsigned long long)n);
    if (strcmp(model, "llama") == 0) {  /* SPM: byte fallback needs <0x00>..<0xFF> [A17] */
        char b[8];
        for (j = 0; j < 256; j++) {
            snprintf(b, sizeof b, "<0x%02X>", (unsigned)j);
            if (!set_has(c, &c->tokens, (const unsigned char *)b, 6))
                FAIL(c, "tokenizer.ggml.model", find_kv(c, "tokenizer.ggml.model")->value_off,
                     "a 'llama' (SentencePiece) tokenizer needs the byte tokens <0x00>..<0xFF>; %s is missing (a BPE vocabulary?)", b);
        }
    }
    if (strcmp(model, "gpt2") == 0) {  /* BPE: merges "A B" of two tokens whose join is a token */
        kv = find_kv(c, "tokenizer.ggml.merges");
        if (!kv) FAIL(c, "tokenizer.ggml.merges", 16, "required key is missing (a 'gpt2' BPE tokenizer needs merges)");
        c->pos = kv->value_off;
        for (j = 0; j < kv->count; j++) {
            uint64_t at = c->pos, len = rd_le(c, 8, "tokenizer.ggml.merges");
            unsigned char *sp;
            uint32_t a, b;
            if (len > sizeof c->merge - 1 || len < 3)
                FAIL(c, "tokenizer.ggml.merges", at, "merge %llu has length %llu; expected 'A B' of two tokens", (unsigned long long)j, (unsigned long long)len);
            raw_read(c, c->merge, len, "tokenizer.ggml.merges");
            sp = (unsigned char *)memchr(c->merge + 1, ' ', (size_t)len - 1);
            if (!sp || sp == c->merge + len - 1 || memchr(sp + 1, ' ', (size_t)(c->merge + len - sp - 1)) || memchr(c->merge, 0, (size_t)len))
                FAIL(c, "tokenizer.ggml.merges", at, "merge %llu is not 'A B' (two tokens and one space)", (unsigned long long)j);
            a = (uint32_t)(sp - c->merge);
            b = (uint32_t)(len - a - 1);
            if (!set_has(c, &c->tokens, c->merge, a) || !set_has(c, &c->tokens, sp + 1, b))
                FAIL(c, "tokenizer.ggml.merges", at, "merge %llu names a token that is not in the vocabulary", (unsigned long long)j);
            memmove(sp, sp + 1, b);
            if (!set_has(c, &c->tokens, c->merge, a + b))
                FAIL(c, "tokenizer.ggml.merges", at, "merge %llu makes a token that is not in the vocabulary", (unsigned long long)j);
        }
    }
    (void)tokens;
    c->pos = saved;
}

static void check_semantics(ctx_t *c, const char *arch) {
    uint64_t saved = c->pos;
    check_hparams(c, arch);
    check_vocab(c);
    c->pos = saved;
}

/* The vocabulary must match the embedding matrix (llama.cpp checks the shape, but the
 * message should name the tokenizer). */
static void check_tensor_semantics(ctx_t *c) {
    const kv_ent *tokens = find_kv(c, "tokenizer.ggml.tokens");
    if (c->embd_rows && c->embd_rows != c->n_tokens)
        FAIL(c, "tokenizer.ggml.tokens", tokens->value_off, "%llu tokens but token_embd.weight has %llu rows",
             (unsigned long long)c->n_tokens, (unsigned long long)c->embd_rows);
    if (c->out_rows && c->out_rows != c->n_tokens)
        FAIL(c, "tokenizer.ggml.tokens", tokens->value_off, "%llu tokens but output.weight has %llu rows",
             (unsigned long long)c->n_tokens, (unsigned long long)c->out_rows);
}

/* Reads tensor info i, checks it, returns the padded end of its data. */
static uint64_t read_tensor(ctx_t *c, uint32_t i, uint64_t alignment, uint64_t expected) {
    char field[48];
    unsigned char name[FE_GGUF_MAX_TENSOR_NAME];
    uint64_t at = c->pos, n, ne[4], total = 1, nbytes, offset, padded, tat, shape_at;
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
    at = shape_at = c->pos;
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
    if (len == 17 && memcmp(name, "token_embd.weight", 17) == 0) { c->embd_rows = n_dims >= 2 ? ne[1] : 1; c->embd_at = shape_at; }
    if (len == 13 && memcmp(name, "output.weight", 13) == 0) { c->out_rows = n_dims >= 2 ? ne[1] : 1; c->out_at = shape_at; }
    c->tens = (tensor_ent *)grow(c, c->tens, i, sizeof *c->tens);
    c->tens[i].at = at;
    c->tens[i].end = expected + nbytes;
    return expected + padded;
}

/* An adapter file (general.type "adapter") has no hyper-parameters or vocabulary of its own:
 * the container rules, a known architecture and the two type keys; adapter.cpp checks the
 * tensors against the base model. */
static uint32_t check_adapter_kvs(ctx_t *c, char *arch) {
    static const char *const strs[] = {"general.type", "general.architecture", "adapter.type"};
    const kv_ent *kv;
    char tb[24], val[65];
    uint32_t alignment = DEFAULT_ALIGNMENT;
    size_t i;
    int known = 0;
    if ((kv = find_kv(c, "general.alignment")) != NULL) {
        if (kv->type != T_U32) FAIL(c, "general.alignment", kv->value_off, "must be u32, is %s", type_str(kv, tb, sizeof tb));
        alignment = (uint32_t)kv->scalar;
        if (alignment < 32 || (alignment & (alignment - 1)))
            FAIL(c, "general.alignment", kv->value_off, "%lu is not a power of two >= 32", (unsigned long)alignment);
    }
    if ((kv = find_kv(c, "general.type")) == NULL)
        FAIL(c, "general.type", 16, "missing: not an adapter file (a model file? load it as a model)");
    for (i = 0; i < COUNT(strs); i++) {
        kv = need(c, strs[i]);
        if (kv->type != T_STR) FAIL(c, strs[i], kv->value_off, "must be str, is %s", type_str(kv, tb, sizeof tb));
        if (i == 0) {
            read_short_str(c, kv, val);
            if (strcmp(val, "adapter") != 0)
                FAIL(c, "general.type", kv->value_off, "is '%s', not 'adapter' (a model file? load it as a model)", val);
        }
    }
    read_short_str(c, find_kv(c, "general.architecture"), arch);
    for (i = 0; i < COUNT(ARCHS); i++) known |= strcmp(arch, ARCHS[i]) == 0;
    if (!known) FAIL(c, "general.architecture", find_kv(c, "general.architecture")->value_off, "architecture is not supported");
    if ((kv = find_kv(c, "adapter.lora.alpha")) != NULL) {
        if (kv->type != T_F32) FAIL(c, "adapter.lora.alpha", kv->value_off, "must be f32, is %s", type_str(kv, tb, sizeof tb));
        if (!finite_d(f32_bits(kv->scalar)) || f32_bits(kv->scalar) < 0)
            FAIL(c, "adapter.lora.alpha", kv->value_off, "%g must be finite and >= 0", f32_bits(kv->scalar));
    }
    return alignment;
}

static int run(ctx_t *c) {
    uint64_t n_tensors, n_kv, alignment, expected = 0, data_offset;
    uint32_t i;
    char arch[65];
    read_header(c, &n_tensors, &n_kv);
    for (i = 0; i < n_kv; i++) read_kv(c, i);
    if (c->adapter) {
        alignment = check_adapter_kvs(c, arch);
        if (n_tensors == 0) FAIL(c, "n_tensors", 8, "the adapter has no tensors");
    } else {
        alignment = check_kvs(c, arch);
        check_semantics(c, arch);
    }
    for (i = 0; i < n_tensors; i++) expected = read_tensor(c, i, alignment, expected);
    if (!c->adapter) check_tensor_semantics(c);
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

static int validate(const char *path, fe_gguf_error *err, int adapter);

int fe_gguf_validate_file(const char *path, fe_gguf_error *err) { return validate(path, err, 0); }
int fe_gguf_validate_adapter_file(const char *path, fe_gguf_error *err) { return validate(path, err, 1); }

static int validate(const char *path, fe_gguf_error *err, int adapter) {
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
    c->adapter = adapter;
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
    free(c->kvs); free(c->tens); free(c->byte_form);
    free(c);
    return rc;
}
