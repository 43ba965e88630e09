// The big-core thread rule (was finllm_edge/threads.py): one thread per performance core,
// i.e. every allowed core whose cpuinfo_max_freq is above the slowest allowed core's.
#include "device.h"
#include "internal.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sched.h>
#include <unistd.h>

namespace fe {

std::string sysfs_root(const char *override_root) {
    if (override_root && *override_root) return override_root;
    const char *env = getenv("FE_SYSFS_ROOT");
    if (env && *env) return env;
    return "/sys";
}

bool read_line(const std::string &path, std::string *out) {
    std::ifstream f(path);
    if (!f) return false;
    out->clear();
    std::getline(f, *out);
    while (!out->empty() && (out->back() == '\n' || out->back() == '\r' || out->back() == ' ' || out->back() == '\t'))
        out->pop_back();
    return !out->empty();
}

std::vector<int> process_affinity() {
    std::vector<int> cpus;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int c = 0; c < CPU_SETSIZE && c < FE_MAX_CPUS; c++)
            if (CPU_ISSET(c, &set)) cpus.push_back(c);
    }
    if (cpus.empty()) {
        long n = sysconf(_SC_NPROCESSORS_CONF);
        for (int c = 0; c < (n > 0 ? n : 1) && c < FE_MAX_CPUS; c++) cpus.push_back(c);
    }
    return cpus;
}

namespace {

// "0-3,6,8-9" -> {0,1,2,3,6,8,9}; false on anything else.
bool parse_cpu_list(const std::string &text, std::vector<int> *out) {
    out->clear();
    size_t i = 0;
    while (i < text.size()) {
        char *end = nullptr;
        long lo = strtol(text.c_str() + i, &end, 10);
        if (end == text.c_str() + i || lo < 0) return false;
        long hi = lo;
        i = (size_t)(end - text.c_str());
        if (i < text.size() && text[i] == '-') {
            hi = strtol(text.c_str() + i + 1, &end, 10);
            if (end == text.c_str() + i + 1 || hi < lo) return false;
            i = (size_t)(end - text.c_str());
        }
        for (long c = lo; c <= hi && c < FE_MAX_CPUS; c++) out->push_back((int)c);
        while (i < text.size() && (text[i] == ',' || text[i] == ' ' || text[i] == '\n')) i++;
    }
    return !out->empty();
}

bool parse_khz(const std::string &s, long *out) {
    if (s.empty() || s.size() > 12) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    *out = atol(s.c_str());
    return true;
}

std::string ghz(long khz) {
    char b[32];
    snprintf(b, sizeof b, "%.2fGHz", (double)khz / 1e6);
    return b;
}

void set_cores(fe_thread_choice *out, std::vector<int> cores) {
    std::sort(cores.begin(), cores.end());
    out->n_cores = (int32_t)cores.size();
    for (size_t i = 0; i < cores.size(); i++) out->cores[i] = cores[i];
}

}  // namespace

CpuTopology read_topology(const std::string &root, const std::vector<int> &affinity) {
    CpuTopology t;
    const std::string cpu = root + "/devices/system/cpu/";
    std::string s;
    std::vector<int> online;
    if (read_line(cpu + "online", &s) && parse_cpu_list(s, &online)) {
        for (int c : affinity)
            if (std::find(online.begin(), online.end(), c) != online.end()) t.allowed.push_back(c);
    }
    if (t.allowed.empty()) t.allowed = affinity;
    for (int c : t.allowed) {
        const std::string d = cpu + "cpu" + std::to_string(c) + "/cpufreq/";
        long khz = 0;
        if (read_line(d + "cpuinfo_max_freq", &s) && parse_khz(s, &khz) && khz > 0) t.max_freq_khz[c] = khz;
        if (read_line(d + "scaling_governor", &s)) t.governor[c] = s;
    }
    return t;
}

fe_status choose_threads(int32_t n_threads, const std::string &root, const std::vector<int> &affinity,
                         fe_thread_choice *out) {
    memset(out, 0, sizeof *out);
    std::vector<int> aff = affinity;
    std::sort(aff.begin(), aff.end());
    aff.erase(std::unique(aff.begin(), aff.end()), aff.end());
    out->n_affinity = (int32_t)aff.size();
    for (size_t i = 0; i < aff.size(); i++) out->affinity[i] = aff[i];
    const CpuTopology topo = read_topology(root, aff);
    auto reason = [&](const std::string &r) { snprintf(out->reason, sizeof out->reason, "%s", r.c_str()); };

    if (topo.allowed.empty()) {
        out->n_threads = n_threads > 0 ? n_threads : 1;
        set_cores(out, {0});
        reason("no CPU information; using one thread");
        return FE_OK;
    }
    auto freq = [&](int c) {
        auto it = topo.max_freq_khz.find(c);
        return it == topo.max_freq_khz.end() ? 0L : it->second;
    };
    if (n_threads > 0) {
        // The caller's count: the fastest allowed cores it would occupy (ties: lower index).
        std::vector<int> order = topo.allowed;
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return freq(a) > freq(b); });
        order.resize(std::min(order.size(), (size_t)n_threads));
        out->n_threads = n_threads;
        set_cores(out, order);
        reason(std::to_string(n_threads) + " threads requested");
        return FE_OK;
    }
    const bool all_known = topo.max_freq_khz.size() == topo.allowed.size();
    if (!all_known) {
        out->n_threads = (int32_t)topo.allowed.size();
        set_cores(out, topo.allowed);
        reason("cpufreq not readable; using every core in the affinity mask");
        return FE_OK;
    }
    long slowest = freq(topo.allowed[0]);
    for (int c : topo.allowed) slowest = std::min(slowest, freq(c));
    std::vector<int> fast;
    for (int c : topo.allowed)
        if (freq(c) > slowest) fast.push_back(c);
    if (fast.empty()) {
        out->n_threads = (int32_t)topo.allowed.size();
        set_cores(out, topo.allowed);
        reason("all " + std::to_string(topo.allowed.size()) + " cores share max freq " + std::to_string(slowest) +
               " kHz");
        return FE_OK;
    }
    std::map<long, int, std::greater<long>> clusters;
    for (int c : fast) clusters[freq(c)]++;
    std::string desc;
    for (auto &kv : clusters) desc += (desc.empty() ? "" : " + ") + std::to_string(kv.second) + "x" + ghz(kv.first);
    out->n_threads = (int32_t)fast.size();
    set_cores(out, fast);
    reason("performance cores " + desc + "; skipping " + std::to_string(topo.allowed.size() - fast.size()) +
           " cores at " + ghz(slowest));
    return FE_OK;
}

}  // namespace fe

extern "C" {

fe_status fe_choose_threads(int32_t n_threads, const char *sysfs_root, const int32_t *affinity, size_t n_affinity,
                            fe_thread_choice *out) {
    return fe::guard("fe_choose_threads", [&]() -> fe_status {
        if (!out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_choose_threads: out is NULL");
        if (n_threads < 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_choose_threads: n_threads = %d; use 0 (default) or more",
                                 n_threads);
        if (!affinity && n_affinity > 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_choose_threads: affinity is NULL but n_affinity = %zu",
                                 n_affinity);
        if (n_affinity > FE_MAX_CPUS)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_choose_threads: n_affinity = %zu > FE_MAX_CPUS", n_affinity);
        std::vector<int> aff;
        for (size_t i = 0; i < n_affinity; i++) {
            if (affinity[i] < 0 || affinity[i] >= FE_MAX_CPUS)
                return fe::set_error(FE_ERR_INVALID_ARG, "fe_choose_threads: CPU id %d is outside 0..%d", affinity[i],
                                     FE_MAX_CPUS - 1);
            aff.push_back(affinity[i]);
        }
        if (aff.empty()) aff = fe::process_affinity();
        return fe::choose_threads(n_threads, fe::sysfs_root(sysfs_root), aff, out);
    });
}

int32_t fe_default_n_threads(void) {
    try {
        fe_thread_choice c;
        if (fe::choose_threads(0, fe::sysfs_root(), fe::process_affinity(), &c) == FE_OK && c.n_threads > 0)
            return c.n_threads;
    } catch (...) {
    }
    return 1;
}

}  // extern "C"
