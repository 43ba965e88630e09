#include "cpu_mask.h"

#include <cerrno>
#include <cstring>
#include <sched.h>

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
