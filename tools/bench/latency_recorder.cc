#include "tools/bench/latency_recorder.h"

#include <algorithm>
#include <cmath>

namespace anima::bench {

void LatencyRecorder::Record(std::chrono::nanoseconds latency) {
  const int64_t ns = std::max<int64_t>(0, latency.count());
  if (sorted_ && !samples_.empty() && ns < samples_.back()) sorted_ = false;
  samples_.push_back(ns);
}

void LatencyRecorder::Merge(const LatencyRecorder& other) {
  if (other.samples_.empty()) return;
  samples_.insert(samples_.end(), other.samples_.begin(), other.samples_.end());
  sorted_ = false;
}

void LatencyRecorder::Sort() const {
  if (sorted_) return;
  std::sort(samples_.begin(), samples_.end());
  sorted_ = true;
}

std::optional<std::chrono::nanoseconds> LatencyRecorder::Percentile(double percent) const {
  if (samples_.empty()) return std::nullopt;
  Sort();
  // Integer arithmetic in parts per million so that 99.9 % of 1000 samples is rank 999 exactly,
  // not 999.0000000001 rounded up to 1000.
  const int64_t ppm = std::clamp<int64_t>(std::llround(percent * 10000.0), 0, 1000000);
  const auto n = static_cast<int64_t>(samples_.size());
  int64_t rank = (ppm * n + 999999) / 1000000;  // ceil(ppm * n / 1e6)
  rank = std::clamp<int64_t>(rank, 1, n);
  return std::chrono::nanoseconds(samples_[rank - 1]);
}

std::optional<std::chrono::nanoseconds> LatencyRecorder::Min() const { return Percentile(0); }

std::optional<std::chrono::nanoseconds> LatencyRecorder::Max() const { return Percentile(100); }

std::optional<std::chrono::nanoseconds> LatencyRecorder::Mean() const {
  if (samples_.empty()) return std::nullopt;
  __int128 sum = 0;
  for (int64_t s : samples_) sum += s;
  return std::chrono::nanoseconds(static_cast<int64_t>(sum / samples_.size()));
}

LatencySummary Summarize(const LatencyRecorder& recorder) {
  LatencySummary s;
  s.count = recorder.count();
  if (recorder.empty()) return s;
  auto ms = [](std::optional<std::chrono::nanoseconds> v) { return v->count() / 1e6; };
  s.min_ms = ms(recorder.Min());
  s.mean_ms = ms(recorder.Mean());
  s.p50_ms = ms(recorder.Percentile(50));
  s.p90_ms = ms(recorder.Percentile(90));
  s.p99_ms = ms(recorder.Percentile(99));
  s.p999_ms = ms(recorder.Percentile(99.9));
  s.max_ms = ms(recorder.Max());
  return s;
}

}  // namespace anima::bench
