// The cross-process index of file hashes behind fe_file_sha256 (fe_set_hash_index_dir).
//
// A model loaded at every launch of an app is hashed once, not once per process: the index maps a
// file's real path and stat stamp (device, inode, size, mtime ns, ctime ns) to its sha256. A write
// changes the size, mtime or ctime (ctime cannot be set back from user space), a replacement
// changes the inode, so any change misses and the file is hashed again.
//
// File DIR/sha256-index.txt, text, at most 1 MiB and 256 entries (oldest dropped):
//   finllm-edge sha256-index 1\n
//   <64 lowercase hex> <dev> <ino> <size> <mtime_ns> <ctime_ns> <absolute path>\n   (decimal)
// It is untrusted input: read bounded, parsed strictly; a bad line is dropped, a bad header or an
// oversize file is ignored whole, and a hit still needs the file's current stat to match. It is
// rewritten whole (temporary file + rename), so a reader never sees half a file; two processes
// writing at once may lose each other's newest entry, which costs one hash later, nothing else.
#include "internal.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr size_t kMaxBytes = 1u << 20;
constexpr size_t kMaxEntries = 256;
const char kHeader[] = "finllm-edge sha256-index 1\n";
const char kName[] = "/sha256-index.txt";

std::mutex g_mu;
std::string g_dir;  // "" = off

struct Entry {
    std::string hex;
    fe::FileStamp stamp;
    std::string path;
};

bool take_u64(const char *&p, const char *end, unsigned long long *out) {
    const char *q = p;
    unsigned long long v = 0;
    while (q < end && *q >= '0' && *q <= '9') {
        unsigned d = (unsigned)(*q - '0');
        if (v > (~0ull - d) / 10) return false;  // overflow
        v = v * 10 + d;
        q++;
    }
    if (q == p || q - p > 20) return false;
    *out = v;
    p = q;
    return true;
}

// One line (without its '\n'); false if malformed.
bool parse_line(const char *p, const char *end, Entry *e) {
    if (end - p < 64 + 1) return false;
    for (int i = 0; i < 64; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return false;
    e->hex.assign(p, 64);
    p += 64;
    unsigned long long v[5];
    for (unsigned long long &x : v) {
        if (p >= end || *p != ' ') return false;
        p++;
        if (!take_u64(p, end, &x)) return false;
    }
    if (p >= end || *p != ' ') return false;
    p++;
    if (p >= end || *p != '/' || memchr(p, '\0', (size_t)(end - p))) return false;
    e->stamp = {v[0], v[1], v[2], v[3], v[4]};
    e->path.assign(p, (size_t)(end - p));
    return true;
}

std::vector<Entry> read_index(const std::string &file) {
    std::vector<Entry> out;
    FILE *f = fopen(file.c_str(), "rb");
    if (!f) return out;
    std::string data(kMaxBytes + 1, '\0');
    size_t n = fread(&data[0], 1, data.size(), f);
    fclose(f);
    if (n > kMaxBytes) return out;  // oversize: not ours
    data.resize(n);
    const size_t h = sizeof kHeader - 1;
    if (data.compare(0, h, kHeader) != 0) return out;
    for (size_t pos = h; pos < data.size();) {
        size_t nl = data.find('\n', pos);
        if (nl == std::string::npos) break;  // an unterminated last line is dropped
        Entry e;
        if (parse_line(data.data() + pos, data.data() + nl, &e)) out.push_back(std::move(e));
        pos = nl + 1;
    }
    if (out.size() > kMaxEntries) out.erase(out.begin(), out.end() - (long)kMaxEntries);
    return out;
}

void write_index(const std::string &dir, const std::vector<Entry> &entries) {
    std::string text = kHeader;
    for (const Entry &e : entries) {
        char nums[160];
        snprintf(nums, sizeof nums, " %llu %llu %llu %llu %llu ", (unsigned long long)e.stamp.dev,
                 (unsigned long long)e.stamp.ino, (unsigned long long)e.stamp.size,
                 (unsigned long long)e.stamp.mtime_ns, (unsigned long long)e.stamp.ctime_ns);
        text += e.hex + nums + e.path + "\n";
    }
    if (text.size() > kMaxBytes) return;
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return;  // a read-only place: no index
    std::string file = dir + kName;
    std::string tmp = file + ".tmp." + std::to_string((long)getpid());
    FILE *f = fopen(tmp.c_str(), "wb");
    if (!f) return;
    bool ok = fwrite(text.data(), 1, text.size(), f) == text.size();
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp.c_str(), file.c_str()) != 0) remove(tmp.c_str());
}

}  // namespace

namespace fe {

FileStamp file_stamp(const struct stat &st) {
    return {(uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
            (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec,
            (uint64_t)st.st_ctim.tv_sec * 1000000000ull + (uint64_t)st.st_ctim.tv_nsec};
}

bool hash_index_lookup(const std::string &real_path, const FileStamp &stamp, char hex[65]) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_dir.empty()) return false;
    for (const Entry &e : read_index(g_dir + kName)) {
        if (e.path == real_path && e.stamp == stamp) {
            memcpy(hex, e.hex.c_str(), 65);
            return true;
        }
    }
    return false;
}

void hash_index_record(const std::string &real_path, const FileStamp &stamp, const char *hex) {
    if (real_path.empty() || real_path[0] != '/' || real_path.find('\n') != std::string::npos) return;
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_dir.empty()) return;
    std::vector<Entry> entries = read_index(g_dir + kName);
    std::vector<Entry> kept;
    for (Entry &e : entries)
        if (e.path != real_path) kept.push_back(std::move(e));
    kept.push_back(Entry{std::string(hex, 64), stamp, real_path});
    if (kept.size() > kMaxEntries) kept.erase(kept.begin(), kept.end() - (long)kMaxEntries);
    write_index(g_dir, kept);
}

}  // namespace fe

extern "C" {

fe_status fe_set_hash_index_dir(const char *dir) {
    return fe::guard("fe_set_hash_index_dir", [&]() -> fe_status {
        std::string d = dir ? dir : "";
        if (d.size() > 4000) return fe::set_error(FE_ERR_INVALID_ARG, "fe_set_hash_index_dir: path too long");
        while (d.size() > 1 && d.back() == '/') d.pop_back();
        std::lock_guard<std::mutex> lock(g_mu);
        g_dir = d;
        return FE_OK;
    });
}

}  // extern "C"
