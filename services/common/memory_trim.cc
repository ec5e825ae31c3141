#include "services/common/memory_trim.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <stop_token>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "spdlog/spdlog.h"

namespace anima::common {

bool TrimDecider::ShouldTrim(const MemorySample& now) {
  if (!previous_) {
    previous_ = now;
    reference_ = Unused(now);
    return false;
  }
  const double seconds = std::chrono::duration<double>(policy_.interval).count();
  const bool quiet = now.cpu_seconds - previous_->cpu_seconds <= policy_.quiet_cpu_share * seconds;
  previous_ = now;
  // Growth is counted from the lowest point since the last trim: during a burst RSS and use grow
  // together, and what stays resident once the burst's memory is freed is what a trim gives back.
  reference_ = std::min(reference_, Unused(now));
  return quiet && now.free_held_bytes >= policy_.min_bytes &&
         Unused(now) >= reference_ + policy_.min_bytes;
}

MemorySample SampleMemory() {
  MemorySample sample;
  // statm: size resident shared text lib data dt, in pages.
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    unsigned long size = 0, resident = 0;
    if (std::fscanf(f, "%lu %lu", &size, &resident) == 2) {
      sample.rss_bytes = resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
    }
    std::fclose(f);
  }
  timespec cpu{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu) == 0) {
    sample.cpu_seconds = static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) * 1e-9;
  }
#if defined(__GLIBC__)
  const struct mallinfo2 info = mallinfo2();
  sample.in_use_bytes = info.uordblks + info.hblkhd;
  sample.free_held_bytes = info.fordblks;
#endif
  return sample;
}

namespace {

// The process's one trimmer: a function-local static, so that its thread is stopped and joined
// when the process exits normally.
class Trimmer {
 public:
  explicit Trimmer(const TrimPolicy& policy)
      : thread_([policy](std::stop_token stop) { Run(stop, policy); }) {}

 private:
  static void Run(std::stop_token stop, const TrimPolicy& policy) {
    pthread_setname_np(pthread_self(), "memory-trim");  // as top and perf show it
    TrimDecider decider(policy);
    // The first look, as the service starts, is the low point growth is measured from: a first
    // look during a burst would see the burst's freed memory as the starting point.
    decider.ShouldTrim(SampleMemory());
    // Sleeps an interval at a time; only the stop request (at exit) wakes it early.
    std::mutex mu;
    std::condition_variable_any wake;
    while (true) {
      {
        std::unique_lock lock(mu);
        wake.wait_for(lock, stop, policy.interval, [] { return false; });
        if (stop.stop_requested()) return;
      }
      const MemorySample before = SampleMemory();
      if (!decider.ShouldTrim(before)) continue;
      const auto start = std::chrono::steady_clock::now();
#if defined(__GLIBC__)
      malloc_trim(0);
#endif
      const std::chrono::duration<double, std::milli> took =
          std::chrono::steady_clock::now() - start;
      const MemorySample after = SampleMemory();
      decider.Trimmed(after);
      spdlog::debug(
          "malloc_trim: RSS {:.1f} -> {:.1f} MiB in {:.1f} ms ({:.1f} MiB were free in "
          "malloc)",
          before.rss_bytes / 1048576.0, after.rss_bytes / 1048576.0, took.count(),
          before.free_held_bytes / 1048576.0);
    }
  }

  std::jthread thread_;
};

}  // namespace

void StartMemoryTrimmer(const TrimPolicy& policy) {
  if (policy.interval <= std::chrono::milliseconds::zero()) return;
  static Trimmer trimmer(policy);
}

}  // namespace anima::common
