// The `device` and `thermal` blocks of a LatencyProfile (were fe-bench's device_info.cpp and
// finllm_edge/device_info.py), the cached model sha256, and the small JSON writer.
#include "device.h"
#include "internal.h"
#include "sha256.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <mutex>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <tuple>
#include <unistd.h>

namespace fe {

std::string json_str(const std::string &s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': o += "\\\""; break;
            case '\\': o += "\\\\"; break;
            case '\n': o += "\\n"; break;
            case '\r': o += "\\r"; break;
            case '\t': o += "\\t"; break;
            default:
                if (c < 0x20) {
                    char b[8];
                    snprintf(b, sizeof b, "\\u%04x", c);
                    o += b;
                } else {
                    o += (char)c;
                }
        }
    }
    return o + "\"";
}

std::string json_num(double v) {
    if (!std::isfinite(v)) v = 0.0;  // JSON has no NaN/Inf (callers reject them before)
    char b[64];
    snprintf(b, sizeof b, "%.6f", v);
    std::string s = b;  // trim trailing zeros but keep one decimal so it stays a JSON float
    while (s.size() > 1 && s.back() == '0' && s[s.size() - 2] != '.') s.pop_back();
    if (s == "-0.0") s = "0.0";
    return s;
}

char *c_string(const std::string &s) {
    char *p = (char *)malloc(s.size() + 1);
    if (!p) return nullptr;
    memcpy(p, s.c_str(), s.size() + 1);
    return p;
}

// ---------------------------------------------------------------- a JSON syntax check

namespace {

struct JsonCheck {
    const char *p;
    int depth = 0;
    void ws() {
        while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    }
    bool lit(const char *w) {
        size_t n = strlen(w);
        if (strncmp(p, w, n) != 0) return false;
        p += n;
        return true;
    }
    bool str() {
        if (*p != '"') return false;
        for (p++; *p != '"'; p++) {
            if ((unsigned char)*p < 0x20) return false;
            if (*p == '\\') {
                p++;
                if (*p == 'u') {
                    for (int i = 1; i <= 4; i++)
                        if (!isxdigit((unsigned char)p[i])) return false;
                    p += 4;
                } else if (!strchr("\"\\/bfnrt", *p) || !*p) {
                    return false;
                }
            }
        }
        p++;
        return true;
    }
    bool num() {
        const char *s = p;
        if (*p == '-') p++;
        if (*p == '0') p++;
        else if (*p >= '1' && *p <= '9') while (isdigit((unsigned char)*p)) p++;
        else return false;
        if (*p == '.') {
            p++;
            if (!isdigit((unsigned char)*p)) return false;
            while (isdigit((unsigned char)*p)) p++;
        }
        if (*p == 'e' || *p == 'E') {
            p++;
            if (*p == '+' || *p == '-') p++;
            if (!isdigit((unsigned char)*p)) return false;
            while (isdigit((unsigned char)*p)) p++;
        }
        return p > s;
    }
    bool value() {
        if (++depth > 64) return false;
        ws();
        bool ok;
        if (*p == '{') {
            p++;
            ws();
            ok = true;
            if (*p == '}') p++;
            else
                for (;;) {
                    ws();
                    if (!str()) { ok = false; break; }
                    ws();
                    if (*p++ != ':' || !value()) { ok = false; break; }
                    ws();
                    if (*p == ',') { p++; continue; }
                    if (*p == '}') { p++; break; }
                    ok = false;
                    break;
                }
        } else if (*p == '[') {
            p++;
            ws();
            ok = true;
            if (*p == ']') p++;
            else
                for (;;) {
                    if (!value()) { ok = false; break; }
                    ws();
                    if (*p == ',') { p++; continue; }
                    if (*p == ']') { p++; break; }
                    ok = false;
                    break;
                }
        } else if (*p == '"') {
            ok = str();
        } else if (*p == 't') {
            ok = lit("true");
        } else if (*p == 'f') {
            ok = lit("false");
        } else if (*p == 'n') {
            ok = lit("null");
        } else {
            ok = num();
        }
        depth--;
        return ok;
    }
};

}  // namespace

bool json_valid(const char *text, char kind) {
    if (!text) return false;
    JsonCheck c{text};
    c.ws();
    if (kind && *c.p != kind) return false;
    if (!c.value()) return false;
    c.ws();
    return *c.p == '\0';
}

// ---------------------------------------------------------------- device block

namespace {

std::string cpu_model() {
    // x86: "model name"; Android/ARM: "Hardware" (the SoC) or "Model"; else the CPU parts.
    std::ifstream f("/proc/cpuinfo");
    std::map<std::string, std::vector<std::string>> fields;
    std::string line;
    while (std::getline(f, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, colon), val = line.substr(colon + 1);
        while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
        while (!val.empty() && (val.front() == ' ' || val.front() == '\t')) val.erase(0, 1);
        while (!val.empty() && (val.back() == ' ' || val.back() == '\r')) val.pop_back();
        fields[key].push_back(val);
    }
    for (const char *key : {"model name", "Hardware", "Model"}) {
        auto it = fields.find(key);
        if (it != fields.end() && !it->second.empty() && !it->second[0].empty()) return it->second[0];
    }
    auto parts = fields.find("CPU part");
    if (parts != fields.end()) {
        std::vector<std::string> uniq = parts->second;
        std::sort(uniq.begin(), uniq.end());
        uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
        std::string list;
        for (auto &u : uniq) list += (list.empty() ? "" : ",") + u;
        auto impl = fields.find("CPU implementer");
        return "ARM implementer " + (impl != fields.end() ? impl->second[0] : std::string("?")) + " parts " + list;
    }
    struct utsname u;
    return uname(&u) == 0 ? u.machine : "unknown";
}

double mem_total_mb() {
    std::ifstream mi("/proc/meminfo");
    std::string line;
    while (std::getline(mi, line)) {
        long kb = 0;
        if (sscanf(line.c_str(), "MemTotal: %ld kB", &kb) == 1) return std::round((double)kb / 1024.0 * 10.0) / 10.0;
    }
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? std::round((double)pages * (double)page / 1048576.0 * 10.0) / 10.0 : 0.0;
}

std::string int_list(const std::vector<int> &v) {
    std::string o = "[";
    for (size_t i = 0; i < v.size(); i++) o += (i ? ", " : "") + std::to_string(v[i]);
    return o + "]";
}

template <typename M, typename F>
std::string cpu_map(const M &m, F value) {
    std::string o = "{";
    size_t i = 0;
    for (auto &kv : m) o += (i++ ? ", " : "") + json_str(std::to_string(kv.first)) + ": " + value(kv.second);
    return o + "}";
}

}  // namespace

std::string device_json(const std::string &root, const std::vector<int> &cores_used, const std::vector<int> &affinity) {
    struct utsname u;
    long n = sysconf(_SC_NPROCESSORS_CONF);
    // governor and max frequency of every CPU the process may run on (not only the used ones)
    CpuTopology topo = read_topology(root, affinity);
    std::string o = "{\"cpu_model\": " + json_str(cpu_model());
    o += ", \"arch\": " + json_str(uname(&u) == 0 ? u.machine : "unknown");
    o += ", \"cores_total\": " + std::to_string(n > 0 ? n : (long)affinity.size());
    o += ", \"cores_used\": " + int_list(cores_used);
    o += ", \"affinity\": " + int_list(affinity);
    o += ", \"governor\": " + cpu_map(topo.governor, [](const std::string &g) { return json_str(g); });
    o += ", \"max_freq_khz\": " + cpu_map(topo.max_freq_khz, [](long f) { return std::to_string(f); });
    o += ", \"mem_total_mb\": " + json_num(mem_total_mb()) + "}";
    return o;
}

// ---------------------------------------------------------------- thermal sample

std::string thermal_json(const std::string &root) {
    std::map<std::string, double> temps;
    const std::string tz = root + "/class/thermal/";
    if (DIR *d = opendir(tz.c_str())) {
        while (dirent *e = readdir(d)) {
            const char *name = e->d_name;
            if (strncmp(name, "thermal_zone", 12) != 0 || !isdigit((unsigned char)name[12])) continue;
            std::string s, type;
            char *end = nullptr;
            if (!read_line(tz + name + "/temp", &s)) continue;
            long raw = strtol(s.c_str(), &end, 10);
            if (end == s.c_str() || *end) continue;
            if (!read_line(tz + name + "/type", &type)) type = "unknown";
            // millidegrees on most kernels, degrees on a few (as the adb snapshot reads them)
            double c = std::labs(raw) >= 1000 ? (double)raw / 1000.0 : (double)raw;
            temps[std::string(name) + ":" + type] = c;
        }
        closedir(d);
    }
    std::map<int, long> freqs;
    const std::string cpu = root + "/devices/system/cpu/";
    if (DIR *d = opendir(cpu.c_str())) {
        while (dirent *e = readdir(d)) {
            const char *name = e->d_name;
            if (strncmp(name, "cpu", 3) != 0 || !isdigit((unsigned char)name[3])) continue;
            char *end = nullptr;
            long c = strtol(name + 3, &end, 10);
            if (*end || c >= FE_MAX_CPUS) continue;
            std::string s;
            if (!read_line(cpu + name + "/cpufreq/scaling_cur_freq", &s)) continue;
            long khz = strtol(s.c_str(), &end, 10);
            if (end != s.c_str() && !*end && khz >= 0) freqs[(int)c] = khz;
        }
        closedir(d);
    }
    std::string o = "{\"temps_c\": {";
    size_t i = 0;
    for (auto &kv : temps) o += (i++ ? ", " : "") + json_str(kv.first) + ": " + json_num(kv.second);
    o += "}, \"cur_freq_khz\": " + cpu_map(freqs, [](long f) { return std::to_string(f); }) + "}";
    return o;
}

}  // namespace fe

// ---------------------------------------------------------------- the C API

namespace {
std::mutex g_sha_mutex;
std::map<std::tuple<std::string, long long, long long, long long>, std::string> g_sha_cache;
}  // namespace

extern "C" {

void fe_free(void *p) { free(p); }

char *fe_device_json(void) {
    try {
        std::string root = fe::sysfs_root();
        std::vector<int> aff = fe::process_affinity();
        fe_thread_choice c;
        fe::choose_threads(0, root, aff, &c);
        return fe::c_string(fe::device_json(root, std::vector<int>(c.cores, c.cores + c.n_cores), aff));
    } catch (...) {
        fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_device_json: out of memory");
        return nullptr;
    }
}

char *fe_thermal_json(void) {
    try {
        char *s = fe::c_string(fe::thermal_json(fe::sysfs_root()));
        if (!s) fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_thermal_json: out of memory");
        return s;
    } catch (...) {
        fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_thermal_json: out of memory");
        return nullptr;
    }
}

const char *fe_sha256_impl(void) { return fe_sha256_backend(); }

fe_status fe_file_sha256(const char *path, char hex_out[65]) {
    return fe::guard("fe_file_sha256", [&]() -> fe_status {
        if (!path || !hex_out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_file_sha256: path or hex_out is NULL");
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            return fe::set_error(FE_ERR_FILE_NOT_FOUND, "cannot hash '%s': %s", path,
                                 stat(path, &st) != 0 ? strerror(errno) : "not a regular file");
        char real[4096];
        std::string key_path = realpath(path, real) ? real : path;
        auto key = std::make_tuple(key_path, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                                   (long long)st.st_mtim.tv_nsec);
        {
            std::lock_guard<std::mutex> lock(g_sha_mutex);
            auto it = g_sha_cache.find(key);
            if (it != g_sha_cache.end()) {
                memcpy(hex_out, it->second.c_str(), 65);
                return FE_OK;
            }
        }
        char hex[65] = {0};
        const fe::FileStamp stamp = fe::file_stamp(st);
        const bool real_ok = key_path[0] == '/';
        if (!(real_ok && fe::hash_index_lookup(key_path, stamp, hex))) {
            if (fe_sha256_hex_file(path, hex) != 0)
                return fe::set_error(FE_ERR_FILE_NOT_FOUND, "cannot read '%s' to hash it", path);
            struct stat after;  // a file that changed while it was read is not remembered
            if (real_ok && stat(path, &after) == 0 && fe::file_stamp(after) == stamp)
                fe::hash_index_record(key_path, stamp, hex);
        }
        {
            std::lock_guard<std::mutex> lock(g_sha_mutex);
            g_sha_cache[key] = hex;
        }
        memcpy(hex_out, hex, 65);
        return FE_OK;
    });
}

}  // extern "C"
