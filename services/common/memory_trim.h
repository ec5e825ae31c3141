#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

namespace anima::common {

// Gives back to the system the memory glibc's malloc holds but no longer uses, once a service has
// gone quiet after a burst (docs/BENCHMARKS.md, "Memory"). glibc keeps freed memory in the arena
// of the thread that freed it and returns it only from the top of a heap, so after a burst a
// service with many gRPC threads stayed at several times its idle RSS for good (the router at
// 143-159 MiB after an overload, with about 6 MB in use); malloc_trim(0) also releases the free
// pages in the middle of every arena.

// One look at the process.
struct MemorySample {
  size_t rss_bytes = 0;        // resident (VmRSS)
  size_t in_use_bytes = 0;     // allocated and not freed (mallinfo2 uordblks + hblkhd)
  size_t free_held_bytes = 0;  // freed, still held by malloc's arenas (mallinfo2 fordblks)
  double cpu_seconds = 0;      // CPU time used by the process so far, every thread
};

struct TrimPolicy {
  // How often the process is looked at; 0 turns trimming off.
  std::chrono::milliseconds interval{10000};
  // Quiet: the process used at most this share of one core since the last look. Under load the
  // freed memory is about to be reused, and trimming it would only cost page faults.
  double quiet_cpu_share = 0.05;
  // Worth a trim: malloc holds at least this much freed memory, and what is resident without
  // being in use (RSS - in use: code, stacks, and freed memory not yet given back) grew by at
  // least this much since the last trim (or since the lowest point before the first). The second
  // condition matters because memory already trimmed still counts as free in mallinfo2: without
  // it, a quiet process would trim again at every look, for nothing.
  size_t min_bytes = size_t{4} << 20;
};

// The decision, apart from the thread and the system calls so that it can be tested: fed one
// sample per interval, answers whether to trim now.
class TrimDecider {
 public:
  explicit TrimDecider(const TrimPolicy& policy) : policy_(policy) {}

  // `now` is a sample taken policy.interval after the previous one (the first only sets the
  // starting point).
  bool ShouldTrim(const MemorySample& now);
  // After a trim, with a sample taken just after it: the new reference for "grew since".
  void Trimmed(const MemorySample& after) { reference_ = Unused(after); }

 private:
  static size_t Unused(const MemorySample& s) {
    return s.rss_bytes > s.in_use_bytes ? s.rss_bytes - s.in_use_bytes : 0;
  }

  TrimPolicy policy_;
  std::optional<MemorySample> previous_;
  size_t reference_ = 0;  // RSS - in use, after the last trim or at its lowest before
};

// The process now (glibc only; elsewhere free_held_bytes is 0, so nothing is ever trimmed).
MemorySample SampleMemory();

// Starts, once per process, the thread that applies `policy` (malloc_trim(0) whenever the
// TrimDecider says so), unless policy.interval is 0: it looks at the process at once, then every
// interval. Later calls do nothing. The thread is stopped and joined at exit.
void StartMemoryTrimmer(const TrimPolicy& policy);

}  // namespace anima::common
