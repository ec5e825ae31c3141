#include "services/router/priority_scheduler.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace anima::router {
namespace {

using std::chrono::milliseconds;
constexpr int Index(Priority p) { return static_cast<int>(p); }

class SchedulerTest : public ::testing::Test {
 protected:
  PriorityScheduler Make(PriorityScheduler::Options o) {
    return PriorityScheduler(o, [this] { return now_; });
  }
  // Submits a request that records its name when it starts.
  PriorityScheduler::Admission Submit(PriorityScheduler& s, Priority p, const std::string& session,
                                      const std::string& name) {
    auto a = s.Submit(p, session, [this, name](uint64_t) { started_.push_back(name); });
    tickets_[name] = a.ticket;
    return a;
  }
  std::chrono::steady_clock::time_point now_ =
      std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  std::vector<std::string> started_;
  std::map<std::string, uint64_t> tickets_;
};

TEST_F(SchedulerTest, HighStartsAtOnceEvenWhenTheBudgetIsFull) {
  auto s = Make({.high_in_flight = 2, .max_in_flight = 1});
  EXPECT_EQ(Submit(s, Priority::kLow, "a", "low1").kind, PriorityScheduler::Admission::kStarted);
  EXPECT_EQ(Submit(s, Priority::kLow, "a", "low2").kind, PriorityScheduler::Admission::kQueued);
  EXPECT_EQ(Submit(s, Priority::kHigh, "b", "high1").kind, PriorityScheduler::Admission::kStarted);
  EXPECT_EQ(Submit(s, Priority::kHigh, "b", "high2").kind, PriorityScheduler::Admission::kStarted);
  // Over the high cap: high waits too, and is served before anything else when a slot frees.
  EXPECT_EQ(Submit(s, Priority::kHigh, "b", "high3").kind, PriorityScheduler::Admission::kQueued);
  EXPECT_EQ(started_, (std::vector<std::string>{"low1", "high1", "high2"}));
  s.Finish(tickets_["high1"]);
  EXPECT_EQ(started_.back(), "high3");
  s.Finish(tickets_["low1"]);
  EXPECT_EQ(started_.back(), "low2");
}

TEST_F(SchedulerTest, NormalAndLowShareTheBudgetByWeight) {
  auto s = Make({.max_in_flight = 1, .normal_weight = 3, .low_weight = 1});
  Submit(s, Priority::kNormal, "x", "first");
  for (int i = 0; i < 4; ++i) Submit(s, Priority::kLow, "x", "L" + std::to_string(i));
  for (int i = 0; i < 6; ++i) Submit(s, Priority::kNormal, "x", "N" + std::to_string(i));
  std::string prev = "first";
  for (int i = 0; i < 10; ++i) {
    s.Finish(tickets_[prev]);
    prev = started_.back();
  }
  // Three normal for each low while both wait; then what is left of low.
  EXPECT_EQ(started_, (std::vector<std::string>{"first", "N0", "N1", "N2", "L0", "N3", "N4", "N5",
                                                "L1", "L2", "L3"}));
}

TEST_F(SchedulerTest, SessionsTakeTurnsInsideAClass) {
  auto s = Make({.max_in_flight = 1});
  Submit(s, Priority::kLow, "chatty", "first");
  for (int i = 0; i < 3; ++i) Submit(s, Priority::kLow, "chatty", "c" + std::to_string(i));
  Submit(s, Priority::kLow, "quiet", "q0");
  Submit(s, Priority::kLow, "other", "o0");
  std::string prev = "first";
  for (int i = 0; i < 5; ++i) {
    s.Finish(tickets_[prev]);
    prev = started_.back();
  }
  EXPECT_EQ(started_, (std::vector<std::string>{"first", "c0", "q0", "o0", "c1", "c2"}));
}

TEST_F(SchedulerTest, NewcomersDoNotOvertakeWaitingWork) {
  auto s = Make({.max_in_flight = 1});
  Submit(s, Priority::kNormal, "a", "run");
  Submit(s, Priority::kNormal, "a", "wait");
  // Another session's request arrives while "wait" waits: the freed slot is still "wait"'s.
  EXPECT_EQ(Submit(s, Priority::kNormal, "b", "new").kind, PriorityScheduler::Admission::kQueued);
  s.Finish(tickets_["run"]);
  EXPECT_EQ(started_, (std::vector<std::string>{"run", "wait"}));
  // And a newcomer after the slot was handed on does not take it either.
  EXPECT_EQ(Submit(s, Priority::kNormal, "c", "later").kind, PriorityScheduler::Admission::kQueued);
  s.Finish(tickets_["wait"]);
  EXPECT_EQ(started_.back(), "new");
}

TEST_F(SchedulerTest, AFullQueueRejectsWithRetryAfterFromTheDrainRate) {
  PriorityScheduler::Options o;
  o.max_in_flight = 1;
  o.queue_capacity[Index(Priority::kLow)] = 2;
  auto s = Make(o);
  Submit(s, Priority::kLow, "a", "r0");
  Submit(s, Priority::kLow, "a", "q0");
  Submit(s, Priority::kLow, "a", "q1");
  auto rejected = Submit(s, Priority::kLow, "a", "q2");
  EXPECT_EQ(rejected.kind, PriorityScheduler::Admission::kRejected);
  EXPECT_EQ(rejected.retry_after_ms, 1000);  // nothing drained yet: the default
  EXPECT_EQ(std::count(started_.begin(), started_.end(), "q2"), 0);

  // Drain one every 100 ms: the estimate follows (queue depth x mean interval).
  std::string prev = "r0";
  for (int i = 0; i < 2; ++i) {
    now_ += milliseconds(100);
    s.Finish(tickets_[prev]);
    prev = started_.back();
    Submit(s, Priority::kLow, "a", "more" + std::to_string(i));
  }
  auto again = Submit(s, Priority::kLow, "a", "q3");
  EXPECT_EQ(again.kind, PriorityScheduler::Admission::kRejected);
  EXPECT_EQ(again.retry_after_ms, 200);  // 2 waiting x 100 ms
  EXPECT_EQ(s.stats().rejected[2], 2u);
  EXPECT_EQ(s.stats().queue_depth[2], 2u);
}

TEST_F(SchedulerTest, WithdrawnRequestsNeverStart) {
  auto s = Make({.max_in_flight = 1});
  Submit(s, Priority::kNormal, "a", "run");
  Submit(s, Priority::kNormal, "a", "gone");
  Submit(s, Priority::kNormal, "b", "stays");
  EXPECT_TRUE(s.Withdraw(tickets_["gone"]));
  EXPECT_FALSE(s.Withdraw(tickets_["gone"]));
  EXPECT_FALSE(s.Withdraw(tickets_["run"]));  // started: not withdrawable
  s.Finish(tickets_["run"]);
  EXPECT_EQ(started_, (std::vector<std::string>{"run", "stays"}));
  EXPECT_EQ(s.stats().queue_depth[1], 0u);
}

TEST_F(SchedulerTest, FinishingTwiceOrUnknownTicketsChangeNothing) {
  auto s = Make({.max_in_flight = 1});
  Submit(s, Priority::kNormal, "a", "run");
  s.Finish(tickets_["run"]);
  s.Finish(tickets_["run"]);
  s.Finish(999);
  EXPECT_EQ(s.stats().in_flight[1], 0);
  Submit(s, Priority::kNormal, "a", "next");
  EXPECT_EQ(s.stats().in_flight[1], 1);
  // The second Finish gave back no extra slot: the budget of one is full again.
  EXPECT_EQ(Submit(s, Priority::kNormal, "a", "queued").kind,
            PriorityScheduler::Admission::kQueued);
  EXPECT_EQ(s.stats().in_flight[1], 1);
}

TEST(PriorityNamesTest, RoundTrip) {
  for (auto p : {Priority::kHigh, Priority::kNormal, Priority::kLow}) {
    Priority parsed;
    ASSERT_TRUE(ParsePriority(PriorityName(p), &parsed));
    EXPECT_EQ(parsed, p);
  }
  Priority ignored;
  EXPECT_FALSE(ParsePriority("urgent", &ignored));
}

}  // namespace
}  // namespace anima::router
