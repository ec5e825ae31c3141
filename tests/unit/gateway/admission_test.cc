// AdaptiveLimit and Admission with a fake clock: no test here sleeps or reads a real clock.
#include "gateway/admission.h"

#include <vector>

#include "gtest/gtest.h"

namespace anima::gateway {
namespace {

using namespace std::chrono_literals;
using TimePoint = AdaptiveLimit::TimePoint;

AdaptiveLimitOptions TestOptions() {
  AdaptiveLimitOptions o;
  o.initial = 4;
  o.min = 1;
  o.max = 64;
  o.tolerance = 2.0;
  o.update_interval = 100ms;
  o.min_samples = 8;
  o.probe_interval = 30s;
  o.probe_samples = 10;
  o.probe_timeout = 1s;
  o.first_probe_after = 1s;
  return o;
}

// Drives a limit with a closed-loop workload that always wants more than the limit: each step
// starts as many requests as the limit allows and ends them all after rtt(concurrency).
class Workload {
 public:
  explicit Workload(AdaptiveLimit* limit) : limit_(limit) {}

  // Runs for `duration` of fake time; returns the concurrency of the last step.
  int Run(std::chrono::milliseconds duration,
          const std::function<std::chrono::microseconds(int)>& rtt) {
    TimePoint end = now + duration;
    int running = 0;
    while (now < end) {
      limit_->Advance(now);
      running = 0;
      while (limit_->CanStart()) {
        limit_->OnStart(now);
        ++running;
      }
      if (running == 0) {  // a probe waits; time moves on
        now += 10ms;
        continue;
      }
      TimePoint started = now;
      now += rtt(running);
      for (int i = 0; i < running; ++i) limit_->OnEnd(started, now, true);
    }
    return running;
  }

  TimePoint now{};

 private:
  AdaptiveLimit* limit_;
};

TEST(AdaptiveLimitTest, StartsAtTheInitialLimit) {
  AdaptiveLimit limit(TestOptions(), TimePoint{});
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(limit.CanStart());
    limit.OnStart(TimePoint{});
  }
  EXPECT_FALSE(limit.CanStart());
  limit.OnEnd(TimePoint{}, TimePoint{} + 1ms, true);
  EXPECT_TRUE(limit.CanStart());
  EXPECT_EQ(limit.in_flight(), 3);
  EXPECT_FALSE(limit.baseline().has_value());
}

TEST(AdaptiveLimitTest, ProbeWaitsForInFlightWorkThenMeasuresOneAtATime) {
  AdaptiveLimit limit(TestOptions(), TimePoint{});
  TimePoint t{};
  limit.OnStart(t);
  limit.OnStart(t);
  t += 1s;  // first_probe_after
  limit.Advance(t);
  EXPECT_EQ(limit.effective_limit(), 0) << "draining: nothing starts while two are in flight";
  EXPECT_FALSE(limit.CanStart());
  // Their round trips carry the load the probe waits out: not samples.
  limit.OnEnd(TimePoint{}, t, true);
  limit.OnEnd(TimePoint{}, t, true);
  limit.Advance(t);
  EXPECT_EQ(limit.effective_limit(), 1);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(limit.CanStart());
    limit.OnStart(t);
    EXPECT_FALSE(limit.CanStart()) << "one at a time";
    TimePoint started = t;
    t += std::chrono::microseconds(400 + 10 * i);  // 400..490 us: median 450
    limit.OnEnd(started, t, true);
    limit.Advance(t);
  }
  ASSERT_TRUE(limit.baseline().has_value());
  EXPECT_EQ(*limit.baseline(), 450us);
  EXPECT_EQ(limit.effective_limit(), 4) << "back to the adaptive limit";
}

TEST(AdaptiveLimitTest, CpuBoundWorkSettlesWhereItsRoundTripIsToleranceTimesBaseline) {
  AdaptiveLimit limit(TestOptions(), TimePoint{});
  Workload load(&limit);
  // Every request in flight adds 100 us: at 1 the round trip is 400 us, at 4 it is 700 us, at 8
  // it is 1100 us. tolerance 2 x 400 us = 800 us is reached near 5.
  auto rtt = [](int n) { return std::chrono::microseconds(300 + 100 * n); };
  load.Run(20s, rtt);
  ASSERT_TRUE(limit.baseline().has_value());
  EXPECT_EQ(*limit.baseline(), 400us);
  EXPECT_GE(limit.limit(), 3);
  EXPECT_LE(limit.limit(), 7);
}

TEST(AdaptiveLimitTest, IoBoundWorkGrowsToTheMaximum) {
  AdaptiveLimit limit(TestOptions(), TimePoint{});
  Workload load(&limit);
  // A provider call: 50 ms whatever the concurrency.
  load.Run(20s, [](int) { return std::chrono::microseconds(50000); });
  EXPECT_EQ(limit.limit(), 64);
  ASSERT_TRUE(limit.baseline().has_value());
  EXPECT_EQ(*limit.baseline(), 50ms);
}

TEST(AdaptiveLimitTest, ShrinksWhenTheWorkTurnsCpuBound) {
  AdaptiveLimit limit(TestOptions(), TimePoint{});
  Workload load(&limit);
  load.Run(10s, [](int) { return std::chrono::microseconds(1000); });
  ASSERT_EQ(limit.limit(), 64);
  // The same type now queues: each request in flight adds 1 ms.
  load.Run(5s, [](int n) { return std::chrono::microseconds(1000 * n); });
  EXPECT_LE(limit.limit(), 3);
}

TEST(AdaptiveLimitTest, DoesNotGrowWithoutDemand) {
  AdaptiveLimit limit(TestOptions(), TimePoint{});
  TimePoint t{};
  // Two at a time, far under the limit of 4, with a flat round trip.
  for (int step = 0; step < 2000; ++step) {
    limit.Advance(t);
    if (!limit.CanStart()) {
      t += 10ms;
      continue;
    }
    limit.OnStart(t);
    limit.OnStart(t);
    TimePoint started = t;
    t += 5ms;
    limit.OnEnd(started, t, true);
    limit.OnEnd(started, t, true);
  }
  EXPECT_EQ(limit.limit(), 4);
}

TEST(AdaptiveLimitTest, LongLivedStreamsAtTheLimitGrowWithoutAnswers) {
  auto options = TestOptions();
  options.first_probe_after = 1h;  // keep the probe out of the way
  AdaptiveLimit limit(options, TimePoint{});
  TimePoint t{};
  // Four watch streams that stay open: no answers at all.
  for (int i = 0; i < 4; ++i) limit.OnStart(t);
  ASSERT_FALSE(limit.CanStart());
  t += 900ms;
  limit.Advance(t);
  EXPECT_FALSE(limit.CanStart()) << "one second without answers is needed first";
  t += 200ms;
  limit.Advance(t);
  EXPECT_EQ(limit.limit(), 8);
  EXPECT_TRUE(limit.CanStart()) << "a fifth stream need not wait for one of four to end";
}

TEST(AdaptiveLimitTest, SlowWorkEndsTheProbeAtItsTimeoutAndKeepsTheBaseline) {
  AdaptiveLimit limit(TestOptions(), TimePoint{});
  TimePoint t{};
  limit.OnStart(t);
  t += 1s;
  limit.Advance(t);
  ASSERT_EQ(limit.effective_limit(), 0);
  t += 1s;  // the one in flight takes longer than probe_timeout
  limit.Advance(t);
  EXPECT_EQ(limit.effective_limit(), 4) << "the probe gave up";
  EXPECT_FALSE(limit.baseline().has_value());
}

TEST(AdaptiveLimitTest, CancelledRequestsAreNotSamples) {
  AdaptiveLimit limit(TestOptions(), TimePoint{});
  TimePoint t = TimePoint{} + 1s;
  limit.OnStart(t);  // first_probe_after has passed: the next Advance probes
  limit.Advance(t);
  limit.OnEnd(t, t, true);  // draining sample: ignored
  limit.Advance(t);
  ASSERT_EQ(limit.effective_limit(), 1);
  for (int i = 0; i < 10; ++i) {
    limit.OnStart(t);
    limit.OnEnd(t, t + 1us, /*answered=*/false);
  }
  t += 2s;
  limit.Advance(t);
  EXPECT_FALSE(limit.baseline().has_value()) << "a cancel's round trip says nothing";
}

Admission::Options AdmissionOptions(TimePoint* now) {
  Admission::Options o;
  o.limit = TestOptions();
  o.limit.initial = 1;
  // Long enough that the tests of limits and order never see a refusal.
  o.queue_target = std::chrono::hours(1);
  o.max_queue_wait = std::chrono::hours(1);
  o.clock = [now] { return *now; };
  return o;
}

// The tests of refusals: a 5 ms target and a 50 ms maximum wait.
Admission::Options QueueBoundedOptions(TimePoint* now) {
  Admission::Options o = AdmissionOptions(now);
  o.queue_target = 5ms;
  o.max_queue_wait = 50ms;
  return o;
}

TEST(AdmissionTest, NothingIsHeldUntilTheRoutesAreKnown) {
  TimePoint now{};
  Admission admission(AdmissionOptions(&now), nullptr);
  EXPECT_FALSE(admission.HoldFor("word_count").has_value());
  admission.SetRoutes({{"chat", "high"}, {"word_count", "low"}}, "normal");
  auto chat = admission.HoldFor("chat");
  ASSERT_TRUE(chat.has_value()) << "high priority has a limiter too, of its own";
  EXPECT_EQ(chat->key, "chat");
  EXPECT_EQ(chat->priority, "high");
  auto word_count = admission.HoldFor("word_count");
  ASSERT_TRUE(word_count.has_value());
  EXPECT_EQ(word_count->key, "word_count");
  EXPECT_EQ(word_count->priority, "low");
  auto other = admission.HoldFor("anything_else");
  ASSERT_TRUE(other.has_value()) << "the default class is normal";
  EXPECT_EQ(other->key, "other") << "client-chosen names share one limiter";
  EXPECT_EQ(other->priority, "normal");
}

TEST(AdmissionTest, DisabledHoldsNothing) {
  TimePoint now{};
  auto options = AdmissionOptions(&now);
  options.enabled = false;
  Admission admission(options, nullptr);
  admission.SetRoutes({{"word_count", "low"}}, "low");
  EXPECT_FALSE(admission.HoldFor("word_count").has_value());
}

TEST(AdmissionTest, WaitersGetFreedSlotsInOrder) {
  TimePoint now{};
  Admission admission(AdmissionOptions(&now), nullptr);
  admission.SetRoutes({{"word_count", "low"}}, "normal");
  std::vector<std::string> granted;
  EXPECT_TRUE(admission.Acquire("word_count", [](bool) { FAIL() << "had a slot at once"; }));
  EXPECT_FALSE(admission.Acquire("word_count", [&](bool) { granted.push_back("a"); }));
  EXPECT_FALSE(admission.Acquire("word_count", [&](bool) { granted.push_back("b"); }));
  EXPECT_EQ(admission.Snapshot()["word_count"].waiting, 2u);
  admission.Release("word_count", now, true);
  EXPECT_EQ(granted, std::vector<std::string>{"a"});
  admission.ReleaseUnused("word_count");  // a did not need it after all
  EXPECT_EQ(granted, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(admission.Snapshot()["word_count"].in_flight, 1);
  EXPECT_EQ(admission.Snapshot()["word_count"].waiting, 0u);
}

TEST(AdmissionTest, TypesHaveTheirOwnLimitsAndUnlistedTypesShareOne) {
  TimePoint now{};
  Admission admission(AdmissionOptions(&now), nullptr);
  admission.SetRoutes({{"a", "low"}, {"b", "normal"}}, "normal");
  auto key = [&](const std::string& type) { return admission.HoldFor(type)->key; };
  EXPECT_TRUE(admission.Acquire(key("a"), [](bool) {}));
  EXPECT_TRUE(admission.Acquire(key("b"), [](bool) {}));
  EXPECT_TRUE(admission.Acquire(key("x1"), [](bool) {}));
  EXPECT_FALSE(admission.Acquire(key("x2"), [](bool) {})) << "x1 and x2 share the limit of `other`";
  auto snapshot = admission.Snapshot();
  EXPECT_EQ(snapshot.size(), 3u);
  EXPECT_EQ(snapshot.count("other"), 1u);
  EXPECT_EQ(snapshot.count("x1"), 0u) << "client-chosen names make no limiter";
}

TEST(AdmissionTest, AKeyKeepsItsLimiterAcrossTableChanges) {
  TimePoint now{};
  Admission admission(AdmissionOptions(&now), nullptr);
  admission.SetRoutes({{"w", "low"}}, "normal");
  std::string key = admission.HoldFor("w")->key;
  EXPECT_TRUE(admission.Acquire(key, [](bool) {}));
  // The router's new table drops `w` while one is in flight: its slot still goes back to `w`.
  admission.SetRoutes({{"v", "low"}}, "normal");
  EXPECT_EQ(admission.HoldFor("w")->key, "other");
  admission.Release(key, now, false);
  auto snapshot = admission.Snapshot();
  ASSERT_EQ(snapshot.count("w"), 1u);
  EXPECT_EQ(snapshot.at("w").in_flight, 0);
  EXPECT_EQ(snapshot.count("other"), 0u);
}

TEST(AdmissionTest, TickEndsAProbeAndGrantsWithoutTraffic) {
  TimePoint now{};
  auto options = AdmissionOptions(&now);
  options.limit.initial = 2;
  Admission admission(options, nullptr);
  admission.SetRoutes({{"w", "low"}}, "normal");
  EXPECT_TRUE(admission.Acquire("w", [](bool) {}));
  now += 1s;  // the first probe is due: draining while one is in flight
  bool granted = false;
  EXPECT_FALSE(admission.Acquire("w", [&](bool) { granted = true; }));
  admission.Tick();
  EXPECT_FALSE(granted);
  now += 1s;  // probe_timeout: the probe ends, the limit of 2 is back
  admission.Tick();
  EXPECT_TRUE(granted);
}

TEST(AdmissionTest, AStandingQueueRefusesNewRequestsAtOnce) {
  TimePoint now{};
  auto options = QueueBoundedOptions(&now);
  Admission admission(options, nullptr);
  admission.SetRoutes({{"w", "low"}}, "normal");
  EXPECT_FALSE(admission.Overloaded("w").has_value()) << "nothing waits";
  EXPECT_TRUE(admission.Acquire("w", [](bool) {}));
  EXPECT_FALSE(admission.Overloaded("w").has_value()) << "at the limit, but nothing waits yet";
  bool granted = false;
  EXPECT_FALSE(admission.Acquire("w", [&](bool g) { granted = g; }));
  now += 5ms;
  EXPECT_FALSE(admission.Overloaded("w").has_value()) << "a wait up to the target is a burst";
  now += 1ms;
  auto retry_after = admission.Overloaded("w");
  ASSERT_TRUE(retry_after.has_value()) << "the oldest has waited past the target";
  EXPECT_EQ(*retry_after, 100ms) << "at least the interval the queue is judged in";
  EXPECT_EQ(admission.Snapshot()["w"].refused, 1u);
  // The slot frees: the waiter gets it, the queue is empty again and new requests are held.
  admission.Release("w", now - 6ms, true);
  EXPECT_TRUE(granted);
  EXPECT_FALSE(admission.Overloaded("w").has_value());
}

TEST(AdmissionTest, AWaiterPastTheMaximumWaitIsRefused) {
  TimePoint now{};
  auto options = QueueBoundedOptions(&now);
  Admission admission(options, nullptr);
  admission.SetRoutes({{"w", "low"}}, "normal");
  EXPECT_TRUE(admission.Acquire("w", [](bool) {}));  // in flight and stuck downstream
  std::vector<std::string> calls;
  EXPECT_FALSE(
      admission.Acquire("w", [&](bool g) { calls.push_back(g ? "a granted" : "a refused"); }));
  now += 30ms;
  EXPECT_FALSE(
      admission.Acquire("w", [&](bool g) { calls.push_back(g ? "b granted" : "b refused"); }));
  now += 21ms;  // a has waited 51 ms, b 21 ms
  admission.Tick();
  EXPECT_EQ(calls, std::vector<std::string>{"a refused"});
  EXPECT_EQ(admission.Snapshot()["w"].waiting, 1u);
  EXPECT_EQ(admission.Snapshot()["w"].in_flight, 1) << "a refused waiter holds no slot";
  EXPECT_EQ(admission.RetryAfter("w"), 100ms);
  now += 30ms;  // b has waited 51 ms too; its retry hint is twice that
  EXPECT_EQ(admission.RetryAfter("w"), 102ms);
  admission.Tick();
  EXPECT_EQ(calls, (std::vector<std::string>{"a refused", "b refused"}));
  EXPECT_EQ(admission.Snapshot()["w"].refused, 2u);
}

TEST(AdmissionTest, AWaitThroughABaselineProbeIsNotOverload) {
  TimePoint now{};
  auto options = QueueBoundedOptions(&now);
  Admission admission(options, nullptr);
  admission.SetRoutes({{"w", "low"}}, "normal");
  EXPECT_TRUE(admission.Acquire("w", [](bool) {}));  // stays in flight through the probe
  now += 1s;  // the first probe is due: starts pause until nothing is in flight
  std::vector<std::string> calls;
  auto waiter = [&](std::string name) {
    return [&calls, name](bool g) { calls.push_back(name + (g ? " granted" : " refused")); };
  };
  EXPECT_FALSE(admission.Acquire("w", waiter("b")));
  EXPECT_FALSE(admission.Acquire("w", waiter("c")));
  now += 500ms;
  admission.Tick();
  EXPECT_TRUE(calls.empty()) << "held by the probe, not refused: " << calls.front();
  EXPECT_FALSE(admission.Overloaded("w").has_value());
  now += 501ms;  // the probe times out; the limit of 1 is back
  admission.Tick();
  EXPECT_TRUE(calls.empty()) << "a is still in flight";
  now += 1ms;
  EXPECT_FALSE(admission.Overloaded("w").has_value())
      << "b and c have waited 1 ms since the probe, not 1 s";
  admission.Release("w", now - 2s, true);
  EXPECT_EQ(calls, std::vector<std::string>{"b granted"});
  now += 6ms;
  EXPECT_TRUE(admission.Overloaded("w").has_value()) << "now c has waited past the target";
}

TEST(AdmissionTest, HighPriorityTypesGrowPastTheToleranceOfTheOthers) {
  // The same round trips (baseline 1 ms, then 3 ms at the limit) shrink a low type's limit
  // (tolerance 2: 3 ms is over 2 ms) and let a high type's grow (tolerance 4: under 4 ms).
  TimePoint now{};
  auto options = AdmissionOptions(&now);
  options.limit.initial = 4;
  options.high_tolerance = 4.0;
  Admission admission(options, nullptr);
  admission.SetRoutes({{"chat", "high"}, {"w", "low"}}, "normal");
  for (const char* key : {"chat", "w"}) {
    EXPECT_TRUE(admission.Acquire(key, [](bool) {}));
    admission.Release(key, now, true);
  }
  now += 1s;  // the first probe: 10 round trips of 1 ms, one at a time
  for (int i = 0; i < 10; ++i) {
    for (const char* key : {"chat", "w"}) {
      EXPECT_TRUE(admission.Acquire(key, [](bool) {}));
      admission.Release(key, now - 1ms, true);
    }
    now += 1ms;
  }
  for (int round = 0; round < 3; ++round) {  // at the limit, 3 ms each
    now += 100ms;
    for (const char* key : {"chat", "w"}) {
      const int limit = admission.Snapshot()[key].limit;
      for (int i = 0; i < limit; ++i) ASSERT_TRUE(admission.Acquire(key, [](bool) {}));
      for (int i = 0; i < limit; ++i) admission.Release(key, now - 3ms, true);
    }
  }
  EXPECT_GT(admission.Snapshot()["chat"].limit, 4);
  EXPECT_LT(admission.Snapshot()["w"].limit, 4);
}

TEST(AdmissionTest, AFreedSlotGoesToAWaiterBeforeAnyIsRefused) {
  TimePoint now{};
  auto options = AdmissionOptions(&now);
  options.max_queue_wait = 50ms;
  Admission admission(options, nullptr);
  admission.SetRoutes({{"w", "low"}}, "normal");
  EXPECT_TRUE(admission.Acquire("w", [](bool) {}));
  std::optional<bool> a;
  EXPECT_FALSE(admission.Acquire("w", [&](bool g) { a = g; }));
  now += 60ms;
  admission.Release("w", now - 60ms, true);
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(*a) << "the wait is over the bound, but a slot was there to give";
}

}  // namespace
}  // namespace anima::gateway
