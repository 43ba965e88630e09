// fe-bench --cpu-mask: pin the process to a hex CPU mask before anything is measured.
#pragma once
#include <string>

// Parse a hex mask ("0x3", "f") and pin the process to it. false + *err on failure.
bool apply_cpu_mask(const std::string &mask, std::string *err);
