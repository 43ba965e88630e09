// Pre-flight check of a GGUF file before llama.cpp parses it: existence, regular file,
// magic, version and header counts against the file size (quick, with plain messages),
// then the full structural validator of gguf_validate.c (every key, string, array, tensor
// dimension and offset), all behind one entry point, fe_gguf_preflight().
#include "internal.h"
#include "gguf_validate.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>

namespace {

constexpr uint64_t kHeaderBytes = 24;       // magic(4) version(4) n_tensors(8) n_kv(8)
constexpr uint64_t kMinTensorInfo = 8 + 1 + 4 + 8 + 4 + 8;  // name len+1 char, n_dims, dim, type, offset
constexpr uint64_t kMinKv = 8 + 1 + 4 + 1;  // key len+1 char, type, smallest value
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxKv = 1u << 20;

uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

}  // namespace

namespace fe {

fe_status preflight(const char *path, uint64_t *file_size) {
    if (!path || !*path) return set_error(FE_ERR_INVALID_ARG, "model path is NULL or empty");
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        return set_error(e == ENOENT || e == ENOTDIR ? FE_ERR_FILE_NOT_FOUND : FE_ERR_BAD_MODEL,
                         "cannot open model '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        return set_error(FE_ERR_BAD_MODEL, "model '%s' is not a regular file", path);
    uint64_t size = (uint64_t)st.st_size;
    if (file_size) *file_size = size;
    FILE *f = fopen(path, "rb");
    if (!f) return set_error(FE_ERR_FILE_NOT_FOUND, "cannot open model '%s': %s", path, strerror(errno));
    unsigned char h[kHeaderBytes];
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    if (got >= 4 && memcmp(h, "GGUF", 4) != 0) {
        char shown[5] = {0};
        for (int i = 0; i < 4; i++) shown[i] = (h[i] >= 32 && h[i] < 127) ? (char)h[i] : '.';
        return set_error(FE_ERR_BAD_MODEL,
                         "'%s' is not a GGUF file: magic is '%s' (0x%02x%02x%02x%02x), expected 'GGUF'",
                         path, shown, h[0], h[1], h[2], h[3]);
    }
    if (got < kHeaderBytes)
        return set_error(FE_ERR_BAD_MODEL,
                         "'%s' is not a GGUF file: %llu bytes, shorter than the 24-byte GGUF header",
                         path, (unsigned long long)size);
    uint32_t version = rd32(h + 4);
    if (version < 2 || version > 3)
        return set_error(FE_ERR_BAD_MODEL, "'%s': unsupported GGUF version %u (offset 4); expected 2 or 3",
                         path, version);
    uint64_t n_tensors = rd64(h + 8), n_kv = rd64(h + 16);
    if (n_tensors > kMaxTensors)
        return set_error(FE_ERR_BAD_MODEL, "'%s': tensor count %llu (offset 8) exceeds the cap %llu",
                         path, (unsigned long long)n_tensors, (unsigned long long)kMaxTensors);
    if (n_kv > kMaxKv)
        return set_error(FE_ERR_BAD_MODEL, "'%s': metadata key count %llu (offset 16) exceeds the cap %llu",
                         path, (unsigned long long)n_kv, (unsigned long long)kMaxKv);
    uint64_t need = kHeaderBytes + n_tensors * kMinTensorInfo + n_kv * kMinKv;
    if (need > size)
        return set_error(FE_ERR_BAD_MODEL,
                         "'%s': header declares %llu tensors and %llu keys, which need at least %llu bytes, "
                         "but the file has %llu (truncated or corrupt)",
                         path, (unsigned long long)n_tensors, (unsigned long long)n_kv,
                         (unsigned long long)need, (unsigned long long)size);
    fe_gguf_error gerr;
    memset(&gerr, 0, sizeof gerr);
    int rc = fe_gguf_validate_file(path, &gerr);
    if (rc == FE_GGUF_E_NOMEM) return set_error(FE_ERR_OUT_OF_MEMORY, "'%s': %s", path, gerr.message);
    if (rc != FE_GGUF_OK) return set_error(FE_ERR_BAD_MODEL, "'%s': %s", path, gerr.message);
    return FE_OK;
}

}  // namespace fe

extern "C" fe_status fe_gguf_preflight(const char *path) {
    return fe::guard("fe_gguf_preflight", [&] {
        fe::clear_error();
        return fe::preflight(path, nullptr);
    });
}
