#include "device_info.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace {

bool read_line(const std::string &path, std::string *out) {
    std::ifstream f(path);
    if (!f) return false;
    std::getline(f, *out);
    while (!out->empty() && (out->back() == '\n' || out->back() == ' ' || out->back() == '\r')) out->pop_back();
    return !out->empty();
}

std::string cpuinfo_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line, hardware, part;
    while (std::getline(f, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, colon), val = line.substr(colon + 1);
        while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
        while (!val.empty() && val.front() == ' ') val.erase(0, 1);
        if (key == "model name" && !val.empty()) return val;  // x86, some ARM kernels
        if (key == "Hardware" && hardware.empty()) hardware = val;  // Android/ARM SoC name
        if (key == "CPU part" && part.empty()) part = val;
    }
    if (!hardware.empty()) return hardware;
    if (!part.empty()) return "ARM CPU part " + part;
    return "unknown";
}

}  // namespace

DeviceInfo read_device_info() {
    DeviceInfo d;
    d.cpu_model = cpuinfo_model();
    struct utsname u;
    d.arch = uname(&u) == 0 ? u.machine : "unknown";
    long n = sysconf(_SC_NPROCESSORS_CONF);
    d.cores_total = n > 0 ? (int)n : 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set)) d.affinity.push_back(c);
    }
    for (int c = 0; c < d.cores_total; c++) {
        std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/cpufreq/", s;
        if (read_line(base + "scaling_governor", &s)) d.governor[c] = s;
        if (read_line(base + "cpuinfo_max_freq", &s)) d.max_freq_khz[c] = atol(s.c_str());
    }
    std::ifstream mi("/proc/meminfo");
    std::string line;
    while (std::getline(mi, line)) {
        long kb = 0;
        if (sscanf(line.c_str(), "MemTotal: %ld kB", &kb) == 1) {
            d.mem_total_mb = (double)kb / 1024.0;
            break;
        }
    }
    return d;
}

bool apply_cpu_mask(const std::string &mask, std::string *err) {
    std::string m = mask;
    if (m.rfind("0x", 0) == 0 || m.rfind("0X", 0) == 0) m = m.substr(2);
    if (m.empty()) {
        *err = "--cpu-mask: empty mask";
        return false;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    int bit = 0, count = 0;
    for (auto it = m.rbegin(); it != m.rend(); ++it, bit += 4) {
        int v;
        char ch = *it;
        if (ch >= '0' && ch <= '9') v = ch - '0';
        else if (ch >= 'a' && ch <= 'f') v = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F') v = ch - 'A' + 10;
        else {
            *err = "--cpu-mask: '" + mask + "' is not a hex mask (e.g. 0x3)";
            return false;
        }
        for (int b = 0; b < 4; b++)
            if (v & (1 << b)) {
                if (bit + b >= CPU_SETSIZE) {
                    *err = "--cpu-mask: CPU index too large";
                    return false;
                }
                CPU_SET(bit + b, &set);
                count++;
            }
    }
    if (count == 0) {
        *err = "--cpu-mask: the mask selects no CPU";
        return false;
    }
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        *err = "--cpu-mask: sched_setaffinity failed for '" + mask + "': " + strerror(errno) +
               " (does the mask name CPUs this machine has?)";
        return false;
    }
    return true;
}

ThermalSample read_thermal(const std::vector<int> &cpus) {
    ThermalSample t;
    for (int z = 0; z < 64; z++) {
        std::string base = "/sys/class/thermal/thermal_zone" + std::to_string(z) + "/", s, type;
        if (!read_line(base + "temp", &s)) {
            if (z > 0 && access(base.c_str(), F_OK) != 0) break;
            continue;
        }
        if (!read_line(base + "type", &type)) type = "thermal_zone" + std::to_string(z);
        std::string key = type;
        for (int k = 2; t.temps_c.count(key); k++) key = type + "_" + std::to_string(k);
        t.temps_c[key] = atof(s.c_str()) / 1000.0;
    }
    for (int c : cpus) {
        std::string s;
        if (read_line("/sys/devices/system/cpu/cpu" + std::to_string(c) + "/cpufreq/scaling_cur_freq", &s))
            t.cur_freq_khz[c] = atol(s.c_str());
    }
    return t;
}
