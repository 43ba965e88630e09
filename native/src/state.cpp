// Saved prompt state: the KV cache of a token prefix in a file, loaded by a later process
// (see "saved prompt state" in finllm_edge.h). A state file is untrusted input: every size
// and count is checked against the file size before anything is allocated, then a sha256
// over the whole file, then the model, llama.cpp build and vocabulary it was made for.
//
// Layout (little-endian):
//   header (kHeaderSize bytes):
//     char     magic[8]        "FESTATE\0"
//     uint32   version         kVersion
//     uint32   header_size     kHeaderSize
//     char     model_sha256[64] lowercase hex of the model file
//     char     runtime[64]     fe_llama_version() + "; variant " + the CPU variant, NUL-padded
//     uint32   n_ctx           of the session that wrote it (provenance)
//     uint32   n_vocab
//     uint32   n_tokens        1 .. kMaxTokens
//     uint32   row_path        fe::RowPath of the saved K/V (0: flash attention off; 1, 2: on)
//     uint64   payload_size    bytes of llama.cpp's sequence state
//     char     adapters[64]    fe::adapter_set_id() of the active LoRA set (hex sha256), NUL-padded
//                              (all NUL: no adapter); version 2
//   int32    tokens[n_tokens]
//   uint8    payload[payload_size]   llama_state_seq_get_data(ctx, ..., seq 0)
//   uint8    sha256[32]              over everything above
#include "internal.h"
#include "le_bytes.h"
#include "sha256.h"

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr char kMagic[8] = {'F', 'E', 'S', 'T', 'A', 'T', 'E', '\0'};
constexpr uint32_t kVersion = 2;
constexpr size_t kHeaderSize = 8 + 4 + 4 + 64 + 64 + 4 + 4 + 4 + 4 + 8 + 64;  // 232
constexpr uint32_t kMaxTokens = 1u << 24;

struct Header {
    char magic[8];
    uint32_t version = 0, header_size = 0;
    char model_sha256[64];
    char llama_version[64];
    uint32_t n_ctx = 0, n_vocab = 0, n_tokens = 0, row_path = 0;
    uint64_t payload_size = 0;
    char adapters[64];
};

using fe::get32;
using fe::get64;
using fe::put32;
using fe::put64;

std::vector<uint8_t> encode_header(const Header &h) {
    std::vector<uint8_t> b;
    b.reserve(kHeaderSize);
    b.insert(b.end(), h.magic, h.magic + 8);
    put32(b, h.version);
    put32(b, h.header_size);
    b.insert(b.end(), h.model_sha256, h.model_sha256 + 64);
    b.insert(b.end(), h.llama_version, h.llama_version + 64);
    put32(b, h.n_ctx);
    put32(b, h.n_vocab);
    put32(b, h.n_tokens);
    put32(b, h.row_path);
    put64(b, h.payload_size);
    b.insert(b.end(), h.adapters, h.adapters + 64);
    return b;
}

Header decode_header(const uint8_t *p) {
    Header h;
    memcpy(h.magic, p, 8);
    h.version = get32(p + 8);
    h.header_size = get32(p + 12);
    memcpy(h.model_sha256, p + 16, 64);
    memcpy(h.llama_version, p + 80, 64);
    h.n_ctx = get32(p + 144);
    h.n_vocab = get32(p + 148);
    h.n_tokens = get32(p + 152);
    h.row_path = get32(p + 156);
    h.payload_size = get64(p + 160);
    memcpy(h.adapters, p + 168, 64);
    return h;
}

std::string fixed_str(const char *p, size_t n) { return std::string(p, strnlen(p, n)); }

// The llama.cpp build and CPU variant of this library: K/V bits depend on both (another
// variant's kernels round differently), so a state is only trusted by the same pair.
std::string runtime_id() {
    const char *v = fe_build_variant();
    return std::string(fe_llama_version()) + "; variant " + (v && *v ? v : "host");
}

bool write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

bool read_all(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

fe_status model_hash(const fe_session *s, char hex[65]) {
    fe_status st = fe::model_sha256(s->model, hex);
    if (st != FE_OK)
        return fe::set_error(st, "cannot hash the model file '%s' to tag the state: %s", s->model->path.c_str(),
                             fe_last_error());
    return FE_OK;
}

// Makes the session's cache hold exactly `tokens` (a prefill with max_tokens 0 when needed).
fe_status cache_exactly(fe_session *s, const std::vector<llama_token> &tokens) {
    const std::vector<llama_token> &c = s->cached;
    llama_memory_t mem = llama_get_memory(s->ctx);
    bool have = c.size() >= tokens.size() && (size_t)s->n_exact >= tokens.size() &&
                std::equal(tokens.begin(), tokens.end(), c.begin()) &&
                llama_memory_seq_pos_max(mem, 0) + 1 == (llama_pos)c.size();
    if (have && c.size() > tokens.size()) have = llama_memory_seq_rm(mem, 0, (llama_pos)tokens.size(), -1);
    if (have) {
        s->cached.resize(tokens.size());  // the saved state holds these cells only
        s->n_exact = (int32_t)tokens.size();
        return FE_OK;
    }
    bool reuse = s->params.prefix_reuse;
    s->params.prefix_reuse = true;  // the prefix may be partly cached already
    fe_generate_params gp = fe_generate_default_params();
    gp.max_tokens = 0;
    fe_generate_result res;
    fe_status st = fe_generate_tokens(s, tokens.data(), (int32_t)tokens.size(), &gp, &res);
    s->params.prefix_reuse = reuse;
    if (st != FE_OK) return st;
    if (s->cached != tokens || s->n_exact != (int32_t)tokens.size())
        return fe::set_error(FE_ERR_INTERNAL, "saving a state: the prefill left %zu tokens cached instead of %zu",
                             s->cached.size(), tokens.size());
    return FE_OK;
}

fe_status save(fe_session *s, std::vector<llama_token> tokens, const char *path) {
    if (!path || !*path) return fe::set_error(FE_ERR_INVALID_ARG, "state file path is NULL or empty");
    if (s->req.active)
        return fe::set_error(FE_ERR_BUSY, "cannot save a state while a request is running; finish or end it first");
    const int32_t n_ctx = (int32_t)s->params.n_ctx, n_vocab = llama_vocab_n_tokens(s->model->vocab);
    if (tokens.size() < 2)
        return fe::set_error(FE_ERR_INVALID_ARG, "the prefix to save has %zu tokens; give at least 2 (it has no tokens "
                             "when the text is empty)", tokens.size());
    if ((int64_t)tokens.size() >= n_ctx)
        return fe::set_error(FE_ERR_CONTEXT_OVERFLOW, "the prefix has %zu tokens but the session holds n_ctx = %d",
                             tokens.size(), n_ctx);
    for (size_t i = 0; i < tokens.size(); i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return fe::set_error(FE_ERR_INVALID_ARG, "prefix token %d at index %zu is outside the vocabulary (0..%d)",
                                 tokens[i], i, n_vocab - 1);
    char hex[65];
    fe_status st = model_hash(s, hex);
    if (st != FE_OK) return st;
    st = cache_exactly(s, tokens);
    if (st != FE_OK) return st;

    size_t size = llama_state_seq_get_size(s->ctx, 0);
    std::vector<uint8_t> payload(size);
    size_t got = llama_state_seq_get_data(s->ctx, payload.data(), payload.size(), 0);
    if (got == 0 || got > size) return fe::set_error(FE_ERR_INTERNAL, "llama.cpp returned no sequence state");
    payload.resize(got);

    Header h;
    memcpy(h.magic, kMagic, 8);
    h.version = kVersion;
    h.header_size = (uint32_t)kHeaderSize;
    memcpy(h.model_sha256, hex, 64);
    memset(h.llama_version, 0, sizeof h.llama_version);
    std::string rt = runtime_id();
    strncpy(h.llama_version, rt.c_str(), sizeof h.llama_version - 1);
    h.n_ctx = (uint32_t)n_ctx;
    h.n_vocab = (uint32_t)n_vocab;
    h.n_tokens = (uint32_t)tokens.size();
    h.row_path = s->exact_path;
    h.payload_size = payload.size();
    memset(h.adapters, 0, sizeof h.adapters);
    std::string set = fe::adapter_set_id(s);
    memcpy(h.adapters, set.data(), std::min(set.size(), sizeof h.adapters));
    std::vector<uint8_t> head = encode_header(h);
    std::vector<uint8_t> toks;
    toks.reserve(tokens.size() * 4);
    for (llama_token t : tokens) put32(toks, (uint32_t)t);
    fe_sha256 sha;
    fe_sha256_init(&sha);
    fe_sha256_update(&sha, head.data(), head.size());
    fe_sha256_update(&sha, toks.data(), toks.size());
    fe_sha256_update(&sha, payload.data(), payload.size());
    uint8_t digest[32];
    fe_sha256_final(&sha, digest);

    // Atomic: a temporary file next to the target, fsync, rename, fsync the directory.
    std::string target = path, tmp = target + ".tmp." + std::to_string((long)getpid());
    Fd f;
    f.fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f.fd < 0) return fe::set_error(FE_ERR_INVALID_ARG, "cannot create '%s': %s", tmp.c_str(), strerror(errno));
    bool ok = write_all(f.fd, head.data(), head.size()) && write_all(f.fd, toks.data(), toks.size()) &&
              write_all(f.fd, payload.data(), payload.size()) && write_all(f.fd, digest, 32) && fsync(f.fd) == 0;
    int err = errno;
    ok = close(f.fd) == 0 && ok;
    f.fd = -1;
    if (!ok || rename(tmp.c_str(), target.c_str()) != 0) {
        if (ok) err = errno;
        unlink(tmp.c_str());
        return fe::set_error(FE_ERR_INVALID_ARG, "cannot write the state file '%s': %s", path, strerror(err));
    }
    std::string dir = target.find('/') == std::string::npos ? "." : target.substr(0, target.rfind('/'));
    if (dir.empty()) dir = "/";
    int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return FE_OK;
}

fe_status bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
fe_status bad(const char *path, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fe::set_error(FE_ERR_BAD_MODEL, "state file '%s' refused: %s", path, msg);
}

fe_status load(fe_session *s, const char *path) {
    if (!path || !*path) return fe::set_error(FE_ERR_INVALID_ARG, "state file path is NULL or empty");
    if (s->req.active)
        return fe::set_error(FE_ERR_BUSY, "cannot load a state while a request is running; finish or end it first");
    Fd f;
    f.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f.fd < 0) return fe::set_error(FE_ERR_FILE_NOT_FOUND, "cannot open the state file '%s': %s", path, strerror(errno));
    struct stat stt;
    if (fstat(f.fd, &stt) != 0 || !S_ISREG(stt.st_mode)) return bad(path, "not a regular file");
    const uint64_t file_size = (uint64_t)stt.st_size;
    if (file_size == 0) return bad(path, "the file is empty");
    if (file_size < kHeaderSize + 32)
        return bad(path, "truncated: %llu bytes, shorter than the %zu-byte header and checksum",
                   (unsigned long long)file_size, kHeaderSize + 32);
    uint8_t raw[kHeaderSize];
    if (!read_all(f.fd, raw, kHeaderSize)) return bad(path, "cannot read the header");
    Header h = decode_header(raw);
    if (memcmp(h.magic, kMagic, 8) != 0) return bad(path, "bad magic (not a finllm-edge state file)");
    if (h.version != kVersion)
        return bad(path, "format version %u, this library reads version %u (save the state again)", h.version,
                   kVersion);
    if (h.header_size != kHeaderSize) return bad(path, "header size %u, expected %zu", h.header_size, kHeaderSize);
    if (h.n_tokens == 0 || h.n_tokens > kMaxTokens)
        return bad(path, "token count %u is out of range (1..%u)", h.n_tokens, kMaxTokens);
    const uint64_t body = file_size - kHeaderSize - 32;
    if ((uint64_t)h.n_tokens * 4 > body)
        return bad(path, "truncated: %u tokens need %llu bytes, %llu remain", h.n_tokens,
                   (unsigned long long)h.n_tokens * 4, (unsigned long long)body);
    if (h.payload_size != body - (uint64_t)h.n_tokens * 4)
        return bad(path, "size mismatch: the header says %llu bytes of KV state, the file holds %llu (truncated or "
                   "extended)", (unsigned long long)h.payload_size,
                   (unsigned long long)(body - (uint64_t)h.n_tokens * 4));
    if (h.payload_size == 0) return bad(path, "no KV state");
    // Sizes agree with the file: read the rest and check the checksum before looking inside.
    std::vector<uint8_t> rest((size_t)body + 32);
    if (!read_all(f.fd, rest.data(), rest.size())) return bad(path, "cannot read %zu bytes", rest.size());
    fe_sha256 sha;
    fe_sha256_init(&sha);
    fe_sha256_update(&sha, raw, kHeaderSize);
    fe_sha256_update(&sha, rest.data(), (size_t)body);
    uint8_t digest[32];
    fe_sha256_final(&sha, digest);
    if (memcmp(digest, rest.data() + body, 32) != 0) return bad(path, "checksum mismatch (the file is corrupt)");

    char hex[65];
    fe_status st = model_hash(s, hex);
    if (st != FE_OK) return st;
    std::string file_model = fixed_str(h.model_sha256, 64), file_llama = fixed_str(h.llama_version, 64);
    if (file_model != hex)
        return bad(path, "made for another model (sha256 %.12s..., this model %.12s...): save it again with this model",
                   file_model.c_str(), hex);
    if (file_llama != runtime_id())
        return bad(path, "made by llama.cpp %s, this library is llama.cpp %s: save it again with this build",
                   file_llama.c_str(), runtime_id().c_str());
    std::string file_set = fixed_str(h.adapters, 64), set = fe::adapter_set_id(s);
    if (file_set != set)
        return bad(path, "made with %s, the session has %s active: its K/V belong to other weights; activate the "
                   "same adapters and scales (fe_session_set_adapters) or save the state again",
                   file_set.empty() ? "no adapter" : "other LoRA adapters (or scales)",
                   set.empty() ? "none" : "another set");
    const int32_t n_vocab = llama_vocab_n_tokens(s->model->vocab);
    if (h.n_vocab != (uint32_t)n_vocab) return bad(path, "vocabulary of %u tokens, the model has %d", h.n_vocab, n_vocab);
    if (h.row_path > fe::ROWS_FA_TILED) return bad(path, "unknown kernel path %u (0..2)", h.row_path);
    if ((h.row_path != fe::ROWS_PLAIN) != s->params.flash_attn)
        return bad(path, "saved by a session with flash attention %s, this session has it %s (its K/V bits differ): "
                   "create the session with flash_attn = %s or save the state again",
                   h.row_path != fe::ROWS_PLAIN ? "on" : "off", s->params.flash_attn ? "on" : "off",
                   h.row_path != fe::ROWS_PLAIN ? "true" : "false");
    if (h.n_tokens >= s->params.n_ctx)
        return fe::set_error(FE_ERR_CONTEXT_OVERFLOW,
                             "state file '%s' holds %u tokens, more than this session's n_ctx = %u allows", path,
                             h.n_tokens, s->params.n_ctx);
    std::vector<llama_token> tokens(h.n_tokens);
    for (uint32_t i = 0; i < h.n_tokens; i++) {
        tokens[i] = (llama_token)get32(rest.data() + 4 * (size_t)i);
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return bad(path, "token %d at index %u is outside the vocabulary", tokens[i], i);
    }
    fe::forget_cache(s);
    fe::clear_llama_errors();
    size_t used = llama_state_seq_set_data(s->ctx, rest.data() + 4 * (size_t)h.n_tokens, (size_t)h.payload_size, 0);
    llama_memory_t mem = llama_get_memory(s->ctx);
    if (used != h.payload_size || llama_memory_seq_pos_min(mem, 0) != 0 ||
        llama_memory_seq_pos_max(mem, 0) + 1 != (llama_pos)h.n_tokens) {
        fe::forget_cache(s);
        std::string why = fe::take_llama_errors();
        return bad(path, "llama.cpp did not restore %u tokens from its KV state (%zu of %llu bytes used)%s%s",
                   h.n_tokens, used, (unsigned long long)h.payload_size, why.empty() ? "" : ": ", why.c_str());
    }
    s->cached = std::move(tokens);
    s->n_exact = (int32_t)s->cached.size();  // saved from a batched prefill (cache_exactly)
    s->exact_path = (uint8_t)h.row_path;
    return FE_OK;
}

}  // namespace

extern "C" {

fe_status fe_session_save_prefix(fe_session *session, const int32_t *tokens, int32_t n_tokens, const char *path) {
    return fe::guard("fe_session_save_prefix", [&]() -> fe_status {
        fe::clear_error();
        if (!session || !tokens || n_tokens <= 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_save_prefix: session or tokens is NULL, or n_tokens <= 0");
        return save(session, std::vector<llama_token>(tokens, tokens + n_tokens), path);
    });
}

fe_status fe_session_save_prompt(fe_session *session, const char *text, const char *path) {
    return fe::guard("fe_session_save_prompt", [&]() -> fe_status {
        fe::clear_error();
        if (!session) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_save_prompt: session is NULL");
        std::vector<llama_token> toks;
        fe_status st = fe::tokenize_text(session->model, text, true, true, toks);
        if (st != FE_OK) return st;
        return save(session, std::move(toks), path);
    });
}

fe_status fe_session_save_chat(fe_session *session, const fe_chat_message *messages, size_t n_messages,
                               const char *path) {
    return fe::guard("fe_session_save_chat", [&]() -> fe_status {
        fe::clear_error();
        if (!session) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_save_chat: session is NULL");
        std::vector<llama_token> toks;
        fe_status st = fe::chat_tokens(session->model, messages, n_messages, false, toks);
        if (st != FE_OK) return st;
        return save(session, std::move(toks), path);
    });
}

fe_status fe_session_load_state(fe_session *session, const char *path) {
    return fe::guard("fe_session_load_state", [&]() -> fe_status {
        fe::clear_error();
        if (!session) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_load_state: session is NULL");
        fe_status st = load(session, path);
        if (st != FE_OK && !session->req.active && st != FE_ERR_BUSY) {
            // Refused: the cache is empty rather than half-trusted (the message is kept).
            std::string msg = fe_last_error();
            fe::forget_cache(session);
            fe::set_error(st, "%s", msg.c_str());
        }
        return st;
    });
}

}  // extern "C"
