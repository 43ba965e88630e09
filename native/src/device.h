// Internal: sysfs/procfs readers, the thread rule and the small JSON writer shared by
// threads.cpp, device_info.cpp, profile_json.cpp and bench.cpp. Not installed.
#pragma once

#include "finllm_edge.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fe {

// The sysfs root: `override_root` if non-empty, else $FE_SYSFS_ROOT, else "/sys".
std::string sysfs_root(const char *override_root = nullptr);
// First line of a file without trailing whitespace; false if unreadable or empty.
bool read_line(const std::string &path, std::string *out);
// This process's affinity mask, ascending (every configured CPU if it cannot be read).
std::vector<int> process_affinity();

struct CpuTopology {
    std::vector<int> allowed;              // affinity minus offline CPUs
    std::map<int, long> max_freq_khz;      // cpuinfo_max_freq, where readable
    std::map<int, std::string> governor;   // scaling_governor, where readable
};
CpuTopology read_topology(const std::string &root, const std::vector<int> &affinity);
// fe_choose_threads with the root and affinity resolved.
fe_status choose_threads(int32_t n_threads, const std::string &root, const std::vector<int> &affinity,
                         fe_thread_choice *out);

// JSON pieces.
std::string json_str(const std::string &s);
std::string json_num(double v);  // finite; "%.6f" with trailing zeros trimmed (keeps "x.0")
// The device block / one thermal sample as JSON objects (cores_used as given).
std::string device_json(const std::string &root, const std::vector<int> &cores_used,
                        const std::vector<int> &affinity);
std::string thermal_json(const std::string &root);
// true if `text` is exactly one JSON value of the given kind ('{' object; 0 any) plus whitespace.
bool json_valid(const char *text, char kind);
// A malloc'd copy of s (NULL when out of memory), for strings handed to C callers.
char *c_string(const std::string &s);

}  // namespace fe
