#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

namespace anima::bench {

// Exact latency statistics: every sample is kept (8 bytes each) and sorted on demand, so
// percentiles are exact, not bucketed. Not thread-safe: keep one per thread and Merge() them at
// the end.
class LatencyRecorder {
 public:
  // Negative durations (clock adjustments cannot happen with steady_clock, but callers may
  // subtract in the wrong order) are recorded as 0.
  void Record(std::chrono::nanoseconds latency);
  void Merge(const LatencyRecorder& other);

  size_t count() const { return samples_.size(); }
  bool empty() const { return samples_.empty(); }

  // Nearest-rank percentile: the smallest sample such that at least `percent` % of all samples
  // are less than or equal to it (rank = ceil(percent/100 * n), 1-based). `percent` in [0, 100],
  // at most 4 decimals are used (99.9 is exact); 0 gives the minimum. nullopt when empty.
  std::optional<std::chrono::nanoseconds> Percentile(double percent) const;
  std::optional<std::chrono::nanoseconds> Min() const;
  std::optional<std::chrono::nanoseconds> Max() const;
  // Arithmetic mean, rounded down to whole nanoseconds.
  std::optional<std::chrono::nanoseconds> Mean() const;

 private:
  void Sort() const;

  mutable std::vector<int64_t> samples_;  // nanoseconds
  mutable bool sorted_ = true;
};

// What the reports print, in milliseconds. All zero (and count 0) when there were no samples.
struct LatencySummary {
  size_t count = 0;
  double min_ms = 0, mean_ms = 0, p50_ms = 0, p90_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
};

LatencySummary Summarize(const LatencyRecorder& recorder);

}  // namespace anima::bench
