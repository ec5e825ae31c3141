#include "tools/bench/latency_recorder.h"

#include <algorithm>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace anima::bench {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

LatencyRecorder OneToN(int n) {
  LatencyRecorder r;
  for (int i = 1; i <= n; ++i) r.Record(milliseconds(i));
  return r;
}

TEST(LatencyRecorderTest, EmptyHasNoPercentiles) {
  LatencyRecorder r;
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.count(), 0u);
  EXPECT_FALSE(r.Percentile(50).has_value());
  EXPECT_FALSE(r.Min().has_value());
  EXPECT_FALSE(r.Max().has_value());
  EXPECT_FALSE(r.Mean().has_value());
  const LatencySummary s = Summarize(r);
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.p99_ms, 0);
}

TEST(LatencyRecorderTest, OneSampleIsEveryPercentile) {
  LatencyRecorder r;
  r.Record(microseconds(1500));
  for (double p : {0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0}) {
    EXPECT_EQ(r.Percentile(p), microseconds(1500)) << p;
  }
  EXPECT_EQ(r.Mean(), microseconds(1500));
}

TEST(LatencyRecorderTest, NearestRankOnOneToHundred) {
  const LatencyRecorder r = OneToN(100);
  EXPECT_EQ(r.Percentile(0), milliseconds(1));
  EXPECT_EQ(r.Percentile(1), milliseconds(1));
  EXPECT_EQ(r.Percentile(50), milliseconds(50));
  EXPECT_EQ(r.Percentile(50.5), milliseconds(51));
  EXPECT_EQ(r.Percentile(90), milliseconds(90));
  EXPECT_EQ(r.Percentile(99), milliseconds(99));
  EXPECT_EQ(r.Percentile(99.9), milliseconds(100));
  EXPECT_EQ(r.Percentile(100), milliseconds(100));
  EXPECT_EQ(r.Mean(), microseconds(50500));
}

TEST(LatencyRecorderTest, PercentilesAreExactWhereFloatingPointWouldRoundUp) {
  // 0.999 * 1000 is 998.9999... or 999.0000...1 in binary floating point; the rank must be 999.
  const LatencyRecorder thousand = OneToN(1000);
  EXPECT_EQ(thousand.Percentile(99.9), milliseconds(999));
  EXPECT_EQ(thousand.Percentile(99), milliseconds(990));
  EXPECT_EQ(thousand.Percentile(90), milliseconds(900));
  const LatencyRecorder ten = OneToN(10);
  EXPECT_EQ(ten.Percentile(90), milliseconds(9));
  EXPECT_EQ(ten.Percentile(99), milliseconds(10));
  EXPECT_EQ(ten.Percentile(50), milliseconds(5));
}

TEST(LatencyRecorderTest, OrderOfRecordingDoesNotMatter) {
  std::vector<int> values(1000);
  for (int i = 0; i < 1000; ++i) values[i] = i + 1;
  std::mt19937 rng(42);
  std::shuffle(values.begin(), values.end(), rng);
  LatencyRecorder r;
  for (int v : values) r.Record(microseconds(v));
  EXPECT_EQ(r.Percentile(50), microseconds(500));
  EXPECT_EQ(r.Percentile(99.9), microseconds(999));
  EXPECT_EQ(r.Min(), microseconds(1));
  EXPECT_EQ(r.Max(), microseconds(1000));
  // Recording after a query still counts.
  r.Record(microseconds(5000));
  EXPECT_EQ(r.Max(), microseconds(5000));
  EXPECT_EQ(r.count(), 1001u);
}

TEST(LatencyRecorderTest, NegativeDurationsCountAsZero) {
  LatencyRecorder r;
  r.Record(nanoseconds(-5));
  r.Record(nanoseconds(10));
  EXPECT_EQ(r.Min(), nanoseconds(0));
  EXPECT_EQ(r.Max(), nanoseconds(10));
}

TEST(LatencyRecorderTest, MergeEqualsRecordingEverythingInOne) {
  LatencyRecorder a, b, whole;
  for (int i = 1; i <= 100; ++i) {
    ((i % 3 == 0) ? a : b).Record(milliseconds(i));
    whole.Record(milliseconds(i));
  }
  LatencyRecorder merged;
  merged.Merge(a);
  merged.Merge(b);
  merged.Merge(LatencyRecorder());
  EXPECT_EQ(merged.count(), 100u);
  for (double p : {0.0, 50.0, 90.0, 99.0, 99.9, 100.0}) {
    EXPECT_EQ(merged.Percentile(p), whole.Percentile(p)) << p;
  }
  EXPECT_EQ(merged.Mean(), whole.Mean());
}

TEST(LatencyRecorderTest, MergeIntoEmptyAndFromEmpty) {
  LatencyRecorder empty, one;
  one.Record(milliseconds(7));
  empty.Merge(one);
  EXPECT_EQ(empty.Percentile(50), milliseconds(7));
  one.Merge(LatencyRecorder());
  EXPECT_EQ(one.count(), 1u);
}

TEST(LatencyRecorderTest, SummaryIsInMilliseconds) {
  const LatencySummary s = Summarize(OneToN(1000));
  EXPECT_EQ(s.count, 1000u);
  EXPECT_DOUBLE_EQ(s.min_ms, 1.0);
  EXPECT_DOUBLE_EQ(s.p50_ms, 500.0);
  EXPECT_DOUBLE_EQ(s.p90_ms, 900.0);
  EXPECT_DOUBLE_EQ(s.p99_ms, 990.0);
  EXPECT_DOUBLE_EQ(s.p999_ms, 999.0);
  EXPECT_DOUBLE_EQ(s.max_ms, 1000.0);
  EXPECT_DOUBLE_EQ(s.mean_ms, 500.5);
}

}  // namespace
}  // namespace anima::bench
