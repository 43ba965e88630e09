/* Internal: small SHA-256 (FIPS 180-4); the public entry point is fe_file_sha256. */
#ifndef FE_SHA256_H
#define FE_SHA256_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct fe_sha256 {
    uint32_t state[8];
    uint64_t n_bytes;
    unsigned char block[64];
    size_t n_block;
} fe_sha256;

void fe_sha256_init(fe_sha256 *h);
void fe_sha256_update(fe_sha256 *h, const void *data, size_t n);
void fe_sha256_final(fe_sha256 *h, unsigned char out[32]);
/* Which compression runs: "portable", "x86-sha-ni" or "armv8-sha2" (FE_SHA256_PORTABLE=1 forces
 * the portable one). */
const char *fe_sha256_backend(void);
/* Hex digest of a file into hex[65]; returns 0 on success, -1 if it cannot be read. */
int fe_sha256_hex_file(const char *path, char hex[65]);

#ifdef __cplusplus
}
#endif
#endif
