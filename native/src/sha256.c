/* SHA-256 (FIPS 180-4) for model fingerprints in LatencyProfiles (fe_file_sha256). */
#include "sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(uint32_t s[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

/* The same compression with the CPU's SHA-256 instructions where it has them (x86 SHA-NI,
 * ARMv8 crypto extensions), chosen once at run time: hashing a model file to tag a saved state
 * is then ~5x faster. tests/test_native.py checks every path against the portable one. */
typedef void (*compress_fn)(uint32_t s[8], const unsigned char *p, size_t n_blocks);

static void compress_portable(uint32_t s[8], const unsigned char *p, size_t n_blocks) {
    for (; n_blocks; n_blocks--, p += 64) compress(s, p);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define FE_SHA_ACCEL "x86-sha-ni"

__attribute__((target("sha,sse4.1"))) static void compress_accel(uint32_t s[8], const unsigned char *p,
                                                                  size_t n_blocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[0]), 0xB1); /* CDAB */
    __m128i st1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[4]), 0x1B); /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                                     /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                          /* CDGH */
    for (; n_blocks; n_blocks--, p += 64) {
        const __m128i save0 = st0, save1 = st1;
        __m128i w[4];
        for (int i = 0; i < 16; i++) {
            __m128i m;
            if (i < 4) {
                m = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
            } else { /* W[4i..4i+3] from the previous 16 words */
                m = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
                m = _mm_add_epi32(m, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
                m = _mm_sha256msg2_epu32(m, w[(i + 3) & 3]);
            }
            w[i & 3] = m;
            __m128i k = _mm_add_epi32(m, _mm_loadu_si128((const __m128i *)&K[4 * i]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, k);
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(k, 0x0E));
        }
        st0 = _mm_add_epi32(st0, save0);
        st1 = _mm_add_epi32(st1, save1);
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);           /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);           /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);        /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);           /* HGFE */
    _mm_storeu_si128((__m128i *)&s[0], st0);
    _mm_storeu_si128((__m128i *)&s[4], st1);
}

static int have_accel(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 29))) return 0; /* SHA */
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 19)) && (c & (1u << 9)); /* SSE4.1, SSSE3 */
}
#elif defined(__aarch64__) && defined(__linux__) && defined(__GNUC__)
#include <arm_neon.h>
#include <sys/auxv.h>
#define FE_SHA_ACCEL "armv8-sha2"
#ifndef HWCAP_SHA2
#define HWCAP_SHA2 (1 << 6)
#endif

__attribute__((target("+crypto"))) static void compress_accel(uint32_t s[8], const unsigned char *p,
                                                               size_t n_blocks) {
    uint32x4_t s0 = vld1q_u32(&s[0]), s1 = vld1q_u32(&s[4]);
    for (; n_blocks; n_blocks--, p += 64) {
        const uint32x4_t save0 = s0, save1 = s1;
        uint32x4_t w[4];
        for (int i = 0; i < 16; i++) {
            if (i < 4)
                w[i] = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 16 * i)));
            else /* W[4i..4i+3] from the previous 16 words */
                w[i & 3] = vsha256su1q_u32(vsha256su0q_u32(w[i & 3], w[(i + 1) & 3]), w[(i + 2) & 3], w[(i + 3) & 3]);
            uint32x4_t k = vaddq_u32(w[i & 3], vld1q_u32(&K[4 * i]));
            uint32x4_t t = s0;
            s0 = vsha256hq_u32(s0, s1, k);
            s1 = vsha256h2q_u32(s1, t, k);
        }
        s0 = vaddq_u32(s0, save0);
        s1 = vaddq_u32(s1, save1);
    }
    vst1q_u32(&s[0], s0);
    vst1q_u32(&s[4], s1);
}

static int have_accel(void) { return (getauxval(AT_HWCAP) & HWCAP_SHA2) != 0; }
#endif

static compress_fn g_compress;
static const char *g_compress_name;

/* FE_SHA256_PORTABLE=1 forces the portable code (the tests compare both). */
static compress_fn pick_compress(void) {
    if (g_compress) return g_compress;
    compress_fn f = compress_portable;
    const char *name = "portable";
#ifdef FE_SHA_ACCEL
    const char *force = getenv("FE_SHA256_PORTABLE");
    if (!(force && *force && strcmp(force, "0") != 0) && have_accel()) {
        f = compress_accel;
        name = FE_SHA_ACCEL;
    }
#endif
    g_compress_name = name;
    __atomic_store_n(&g_compress, f, __ATOMIC_RELEASE);
    return f;
}

const char *fe_sha256_backend(void) {
    pick_compress();
    return g_compress_name;
}

void fe_sha256_init(fe_sha256 *h) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(h->state, iv, sizeof iv);
    h->n_bytes = 0;
    h->n_block = 0;
}

void fe_sha256_update(fe_sha256 *h, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    h->n_bytes += n;
    if (h->n_block) {
        size_t take = 64 - h->n_block < n ? 64 - h->n_block : n;
        memcpy(h->block + h->n_block, p, take);
        h->n_block += take; p += take; n -= take;
        if (h->n_block < 64) return;
        compress(h->state, h->block);
        h->n_block = 0;
    }
    if (n >= 64) {
        pick_compress()(h->state, p, n / 64);
        p += n / 64 * 64;
        n %= 64;
    }
    memcpy(h->block, p, n);
    h->n_block = n;
}

void fe_sha256_final(fe_sha256 *h, unsigned char out[32]) {
    uint64_t bits = h->n_bytes * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (h->n_block < 56 ? 56 : 120) - h->n_block;
    fe_sha256_update(h, pad, padlen);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
    fe_sha256_update(h, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h->state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h->state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h->state[i] >> 8);
        out[4 * i + 3] = (unsigned char)h->state[i];
    }
}

int fe_sha256_hex_file(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 20;
    unsigned char *buf = (unsigned char *)malloc(cap);
    if (!buf) { fclose(f); return -1; }
    fe_sha256 h;
    fe_sha256_init(&h);
    size_t n;
    while ((n = fread(buf, 1, cap, f)) > 0) fe_sha256_update(&h, buf, n);
    int err = ferror(f);
    free(buf);
    fclose(f);
    if (err) return -1;
    unsigned char d[32];
    fe_sha256_final(&h, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}
