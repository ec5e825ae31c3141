#include "services/common/memory_trim.h"

#include "gtest/gtest.h"

namespace anima::common {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

// One look, 10 s after the previous one (the default interval): the CPU seconds used so far, and
// RSS, memory in use and free memory held by malloc in MiB.
MemorySample At(double cpu_seconds, size_t rss_mib, size_t in_use_mib, size_t free_mib) {
  return {.rss_bytes = rss_mib * kMiB,
          .in_use_bytes = in_use_mib * kMiB,
          .free_held_bytes = free_mib * kMiB,
          .cpu_seconds = cpu_seconds};
}

TEST(TrimDeciderTest, TrimsOnceWhenQuietAfterABurstThenNotAgainForNothing) {
  TrimDecider decider{TrimPolicy{}};
  EXPECT_FALSE(decider.ShouldTrim(At(1.0, 20, 3, 1)));  // the first look only sets the start
  // The burst: 8 s of CPU in 10 s.
  EXPECT_FALSE(decider.ShouldTrim(At(9.0, 150, 120, 10)))
      << "under load the freed memory is about to be reused";
  EXPECT_TRUE(decider.ShouldTrim(At(9.1, 150, 6, 125)));  // quiet, the burst's memory freed
  decider.Trimmed(At(9.1, 40, 6, 125));
  // mallinfo2 still counts the trimmed memory as free: nothing new to give back.
  EXPECT_FALSE(decider.ShouldTrim(At(9.2, 40, 6, 125)));
  EXPECT_FALSE(decider.ShouldTrim(At(9.3, 41, 6, 125)));
  // Another burst, and quiet again: what is resident and unused grew since the trim.
  EXPECT_FALSE(decider.ShouldTrim(At(15.0, 90, 80, 60)));
  EXPECT_TRUE(decider.ShouldTrim(At(15.1, 90, 8, 130)));
}

TEST(TrimDeciderTest, AProcessFirstSeenDuringABurstIsTrimmedAfterIt) {
  TrimDecider decider{TrimPolicy{}};
  EXPECT_FALSE(decider.ShouldTrim(At(5.0, 100, 90, 5)));  // the first look, mid-burst
  EXPECT_FALSE(decider.ShouldTrim(At(13.0, 150, 130, 10)));
  EXPECT_TRUE(decider.ShouldTrim(At(13.2, 150, 6, 140)));
}

TEST(TrimDeciderTest, MemoryInUseIsNotAReasonToTrim) {
  TrimDecider decider{TrimPolicy{}};
  decider.ShouldTrim(At(0, 20, 3, 0));
  // RSS grew by 80 MiB of live data (say stored conversations); trimmed-away free memory from
  // earlier still counts in mallinfo2.
  EXPECT_FALSE(decider.ShouldTrim(At(0.1, 100, 82, 50)));
  EXPECT_FALSE(decider.ShouldTrim(At(0.2, 100, 82, 50)));
}

TEST(TrimDeciderTest, TheThresholdsComeFromThePolicy) {
  TrimDecider decider{TrimPolicy{
      .interval = std::chrono::seconds(1), .quiet_cpu_share = 0.5, .min_bytes = 64 * kMiB}};
  decider.ShouldTrim(At(0, 20, 3, 0));
  EXPECT_FALSE(decider.ShouldTrim(At(0.4, 80, 10, 50))) << "50 MiB free is under 64 MiB";
  EXPECT_FALSE(decider.ShouldTrim(At(1.0, 100, 10, 70))) << "0.6 s of CPU in 1 s is not quiet";
  EXPECT_TRUE(decider.ShouldTrim(At(1.4, 100, 10, 70)));
}

TEST(TrimDeciderTest, SamplingThisProcessSeesItsMemoryAndTime) {
  const MemorySample sample = SampleMemory();
  EXPECT_GT(sample.rss_bytes, 0u);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_GT(sample.in_use_bytes, 0u);  // a sanitizer's allocator replaces malloc: mallinfo2 is 0
#endif
  EXPECT_GT(sample.cpu_seconds, 0.0);
}

}  // namespace
}  // namespace anima::common
