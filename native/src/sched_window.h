// Sliding windows the scheduler measures itself with: the last N inter-token latencies (for
// its p50/p99 and the adaptive batch size) and generated tokens over the last T milliseconds.
#pragma once

#include "finllm_edge.h"

#include <deque>
#include <utility>
#include <vector>

namespace fe {

class LatencyWindow {
  public:
    explicit LatencyWindow(size_t n) : cap_(n) {}
    void add(double ms) {
        v_.push_back(ms);
        if (v_.size() > cap_) v_.pop_front();
    }
    void clear() { v_.clear(); }
    size_t size() const { return v_.size(); }
    // Linear-interpolated percentile (fe_percentile); 0 when empty.
    double percentile(double q) const {
        std::vector<double> x(v_.begin(), v_.end());
        return fe_percentile(x.data(), x.size(), q);
    }

  private:
    size_t cap_;
    std::deque<double> v_;
};

class RateWindow {
  public:
    explicit RateWindow(double span_ms) : span_(span_ms) {}
    void add(double t_ms, int64_t n) {
        ev_.emplace_back(t_ms, n);
        trim(t_ms);
    }
    // Events per second over the window ending now (0 with fewer than two timestamps).
    double per_second(double now_ms) {
        trim(now_ms);
        if (ev_.size() < 2) return 0.0;
        double dt = now_ms - ev_.front().first;
        int64_t n = 0;
        for (auto &e : ev_) n += e.second;
        return dt > 0 ? 1000.0 * (double)(n - ev_.front().second) / dt : 0.0;
    }

  private:
    void trim(double now_ms) {
        while (!ev_.empty() && now_ms - ev_.front().first > span_) ev_.pop_front();
    }
    double span_;
    std::deque<std::pair<double, int64_t>> ev_;
};

}  // namespace fe
