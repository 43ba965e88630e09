// What fe-bench records about the machine: CPU, affinity, governors, frequencies, memory,
// temperatures. Everything is best effort: unreadable files are left out, never fatal.
#pragma once
#include <map>
#include <string>
#include <vector>

struct DeviceInfo {
    std::string cpu_model;
    std::string arch;
    int cores_total = 0;
    std::vector<int> affinity;              // CPUs this process may run on
    std::map<int, std::string> governor;    // cpu -> scaling_governor
    std::map<int, long> max_freq_khz;       // cpu -> cpuinfo_max_freq
    double mem_total_mb = 0;
};

DeviceInfo read_device_info();
// Parse a hex mask ("0x3", "f") and pin the process to it. false + *err on failure.
bool apply_cpu_mask(const std::string &mask, std::string *err);
// Thermal zone temperatures (C) and current frequencies (kHz) of the given CPUs.
struct ThermalSample {
    std::map<std::string, double> temps_c;  // zone type (or thermal_zoneN) -> degrees C
    std::map<int, long> cur_freq_khz;
};
ThermalSample read_thermal(const std::vector<int> &cpus);
