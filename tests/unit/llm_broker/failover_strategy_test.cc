#include "services/llm_broker/failover_strategy.h"

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/llm_broker/broker.h"
#include "services/llm_broker/instrumented_provider.h"

namespace anima::broker {
namespace {

ProviderError Err(std::string code, bool retryable,
                  std::optional<std::chrono::milliseconds> retry_after = std::nullopt) {
  ProviderError e;
  e.code = std::move(code);
  e.message = "failed: " + e.code;
  e.retryable = retryable;
  e.retry_after = retry_after;
  return e;
}

ChatResult Ok(std::string text) {
  ChatResult r;
  r.text = std::move(text);
  r.finish_reason = "stop";
  return r;
}

// Answers each Start() with the next scripted step, inline. A step with `hold` keeps the call
// open until the test completes it.
class FakeProvider : public Provider {
 public:
  struct Step {
    std::vector<std::string> deltas;
    std::optional<ProviderOutcome> outcome;  // nullopt: hold the call open
  };
  class Call : public ProviderCall {
   public:
    void Cancel() override {
      cancelled = true;
      if (sink.on_done) {
        ProviderSink taken = std::move(sink);
        sink = ProviderSink();
        taken.on_done(Err("cancelled", false));
      }
    }
    ProviderSink sink;
    bool cancelled = false;
  };

  FakeProvider(std::string name, std::vector<Step> steps, int max_retries = 0)
      : name_(std::move(name)), steps_(steps.begin(), steps.end()), max_retries_(max_retries) {}

  const std::string& name() const override { return name_; }
  const std::string& default_model() const override { return model_; }
  const std::vector<std::string>& models() const override { return models_; }
  int max_retries() const override { return max_retries_; }

  std::shared_ptr<ProviderCall> Start(const ChatRequest& request, ProviderSink sink) override {
    ++starts;
    last_model = request.model;
    auto call = std::make_shared<Call>();
    calls.push_back(call);
    Step step =
        steps_.empty() ? Step{{}, ProviderOutcome(Err("no_script", false))} : steps_.front();
    if (!steps_.empty()) steps_.pop_front();
    for (const auto& d : step.deltas) sink.on_delta(d);
    if (step.outcome) {
      ProviderOutcome outcome = *step.outcome;
      if (auto* e = std::get_if<ProviderError>(&outcome)) e->provider = name_;
      if (auto* r = std::get_if<ChatResult>(&outcome)) r->provider = name_;
      sink.on_done(std::move(outcome));
    } else {
      call->sink = std::move(sink);
    }
    return call;
  }

  int starts = 0;
  std::string last_model;
  std::vector<std::shared_ptr<Call>> calls;

 private:
  std::string name_;
  std::string model_ = "m-default";
  std::vector<std::string> models_;
  std::deque<Step> steps_;
  int max_retries_;
};

// Runs at once, remembering the delays asked for.
class InlineScheduler : public Scheduler {
 public:
  void RunAfter(std::chrono::milliseconds delay, std::function<void()> fn) override {
    delays.push_back(delay);
    fn();
  }
  std::vector<std::chrono::milliseconds> delays;
};

// Holds the function until the test runs it.
class ManualScheduler : public Scheduler {
 public:
  void RunAfter(std::chrono::milliseconds delay, std::function<void()> fn) override {
    pending.push_back(std::move(fn));
  }
  std::vector<std::function<void()>> pending;
};

struct Result {
  std::vector<std::string> deltas;
  std::optional<StrategyOutcome> outcome;
  int done_calls = 0;
  StrategySink Sink() {
    StrategySink sink;
    sink.on_delta = [this](std::string_view d) { deltas.emplace_back(d); };
    sink.on_done = [this](StrategyOutcome o) {
      outcome = std::move(o);
      ++done_calls;
    };
    return sink;
  }
};

class FailoverTest : public ::testing::Test {
 protected:
  std::shared_ptr<StrategyCall> Run(std::vector<std::shared_ptr<Provider>> providers,
                                    bool stream = false) {
    RetryPolicy policy;
    policy.jitter = [] { return 0.0; };
    FailoverStrategy strategy(scheduler_, policy);
    request_.messages = {{"user", "hi"}};
    request_.stream = stream;
    return strategy.Start(request_, std::move(providers), result_.Sink());
  }
  std::shared_ptr<InlineScheduler> scheduler_ = std::make_shared<InlineScheduler>();
  ChatRequest request_;
  Result result_;
};

using Step = FakeProvider::Step;

TEST_F(FailoverTest, FirstProviderAnswers) {
  auto a = std::make_shared<FakeProvider>("a", std::vector<Step>{{{}, Ok("from a")}});
  auto b = std::make_shared<FakeProvider>("b", std::vector<Step>{{{}, Ok("from b")}});
  Run({a, b});
  ASSERT_EQ(result_.done_calls, 1);
  ASSERT_TRUE(result_.outcome->result.has_value());
  EXPECT_EQ(result_.outcome->result->text, "from a");
  EXPECT_EQ(b->starts, 0);
  EXPECT_EQ(a->last_model, "m-default");  // the provider's default model when none was asked
}

TEST_F(FailoverTest, RetryableFailureMovesToTheNextProviderInOrder) {
  auto a = std::make_shared<FakeProvider>("a", std::vector<Step>{{{}, Err("http_500", true)}});
  auto b = std::make_shared<FakeProvider>("b", std::vector<Step>{{{}, Err("connect", true)}});
  auto c = std::make_shared<FakeProvider>("c", std::vector<Step>{{{}, Ok("from c")}});
  Run({a, b, c});
  ASSERT_TRUE(result_.outcome->result.has_value());
  EXPECT_EQ(result_.outcome->result->provider, "c");
  EXPECT_EQ(a->starts, 1);
  EXPECT_EQ(b->starts, 1);
}

TEST_F(FailoverTest, NoFailoverOnceADeltaReachedTheCaller) {
  auto a = std::make_shared<FakeProvider>(
      "a", std::vector<Step>{{{"Hel", "lo"}, Err("stream_error", true)}}, /*max_retries=*/2);
  auto b = std::make_shared<FakeProvider>("b", std::vector<Step>{{{}, Ok("from b")}});
  Run({a, b}, /*stream=*/true);
  ASSERT_EQ(result_.done_calls, 1);
  EXPECT_EQ(result_.deltas, (std::vector<std::string>{"Hel", "lo"}));
  EXPECT_FALSE(result_.outcome->result.has_value());
  EXPECT_EQ(result_.outcome->code, "provider_error");
  EXPECT_EQ(a->starts, 1);  // not retried either
  EXPECT_EQ(b->starts, 0);
  ASSERT_EQ(result_.outcome->causes.size(), 1u);
  EXPECT_EQ(result_.outcome->causes[0].code, "stream_error");
}

TEST_F(FailoverTest, NonRetryableFailureStops) {
  auto a = std::make_shared<FakeProvider>("a", std::vector<Step>{{{}, Err("http_400", false)}},
                                          /*max_retries=*/2);
  auto b = std::make_shared<FakeProvider>("b", std::vector<Step>{{{}, Ok("from b")}});
  Run({a, b});
  EXPECT_EQ(result_.outcome->code, "provider_error");
  EXPECT_EQ(a->starts, 1);
  EXPECT_EQ(b->starts, 0);
}

TEST_F(FailoverTest, CausesAreCollectedOnePerProvider) {
  auto a = std::make_shared<FakeProvider>(
      "a", std::vector<Step>{{{}, Err("http_503", true)}, {{}, Err("http_500", true)}},
      /*max_retries=*/1);
  auto b = std::make_shared<FakeProvider>(
      "b", std::vector<Step>{{{}, Err("timeout", true, std::chrono::milliseconds(700))}});
  Run({a, b});
  ASSERT_EQ(result_.done_calls, 1);
  EXPECT_EQ(result_.outcome->code, "provider_error");
  ASSERT_EQ(result_.outcome->causes.size(), 2u);
  EXPECT_EQ(result_.outcome->causes[0].provider, "a");
  EXPECT_EQ(result_.outcome->causes[0].code, "http_500");  // the last error of a
  EXPECT_EQ(result_.outcome->causes[1].provider, "b");
  EXPECT_EQ(result_.outcome->retry_after, std::chrono::milliseconds(700));
  EXPECT_EQ(a->starts, 2);
}

TEST_F(FailoverTest, RetriesWithBackoffAndHonoursRetryAfter) {
  auto a = std::make_shared<FakeProvider>(
      "a",
      std::vector<Step>{{{}, Err("http_500", true)},
                        {{}, Err("http_429", true, std::chrono::milliseconds(1200))},
                        {{}, Ok("third time")}},
      /*max_retries=*/2);
  Run({a});
  ASSERT_TRUE(result_.outcome->result.has_value());
  EXPECT_EQ(result_.outcome->result->text, "third time");
  ASSERT_EQ(scheduler_->delays.size(), 2u);
  EXPECT_EQ(scheduler_->delays[0], std::chrono::milliseconds(250));   // initial backoff
  EXPECT_EQ(scheduler_->delays[1], std::chrono::milliseconds(1200));  // the server's hint
}

TEST_F(FailoverTest, RetryAfterAboveTheCapMovesOnInsteadOfWaiting) {
  auto a = std::make_shared<FakeProvider>(
      "a", std::vector<Step>{{{}, Err("http_429", true, std::chrono::minutes(10))}},
      /*max_retries=*/2);
  auto b = std::make_shared<FakeProvider>("b", std::vector<Step>{{{}, Ok("from b")}});
  Run({a, b});
  ASSERT_TRUE(result_.outcome->result.has_value());
  EXPECT_EQ(result_.outcome->result->provider, "b");
  EXPECT_EQ(a->starts, 1);
  EXPECT_TRUE(scheduler_->delays.empty());
}

TEST_F(FailoverTest, ARefusingProviderIsPassedOverWithoutWaiting) {
  for (std::string code : {"circuit_open", "concurrency_limit"}) {
    scheduler_->delays.clear();
    auto a = std::make_shared<FakeProvider>(
        "a", std::vector<Step>{{{}, Err(code, true, std::chrono::seconds(5))}, {{}, Ok("late")}},
        /*max_retries=*/2);
    auto b = std::make_shared<FakeProvider>("b", std::vector<Step>{{{}, Ok("from b")}});
    Run({a, b});
    ASSERT_TRUE(result_.outcome && result_.outcome->result) << code;
    EXPECT_EQ(result_.outcome->result->provider, "b") << code;
    EXPECT_EQ(a->starts, 1) << code;
    EXPECT_TRUE(scheduler_->delays.empty()) << code;
  }
}

TEST_F(FailoverTest, TheLastCandidateIsRetriedAfterItsBreakerHint) {
  auto a = std::make_shared<FakeProvider>("a", std::vector<Step>{{{}, Err("http_500", true)}});
  auto b = std::make_shared<FakeProvider>(
      "b",
      std::vector<Step>{{{}, Err("circuit_open", true, std::chrono::milliseconds(900))},
                        {{}, Ok("from b")}},
      /*max_retries=*/1);
  Run({a, b});
  ASSERT_TRUE(result_.outcome && result_.outcome->result);
  EXPECT_EQ(result_.outcome->result->provider, "b");
  EXPECT_EQ(b->starts, 2);
  EXPECT_EQ(scheduler_->delays,
            std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(900)});
}

TEST_F(FailoverTest, CancelStopsTheProviderCallAndEndsCancelled) {
  auto a = std::make_shared<FakeProvider>("a", std::vector<Step>{{{"x"}, std::nullopt}});
  auto call = Run({a}, /*stream=*/true);
  EXPECT_EQ(result_.done_calls, 0);
  call->Cancel();
  ASSERT_EQ(result_.done_calls, 1);
  EXPECT_EQ(result_.outcome->code, "cancelled");
  EXPECT_TRUE(a->calls[0]->cancelled);
  call->Cancel();  // idempotent
  EXPECT_EQ(result_.done_calls, 1);
}

TEST_F(FailoverTest, CancelDuringBackoffEndsAtOnce) {
  auto manual = std::make_shared<ManualScheduler>();
  auto a = std::make_shared<FakeProvider>(
      "a", std::vector<Step>{{{}, Err("http_500", true)}, {{}, Ok("late")}}, /*max_retries=*/1);
  RetryPolicy policy;
  FailoverStrategy strategy(manual, policy);
  request_.messages = {{"user", "hi"}};
  auto call = strategy.Start(request_, {a}, result_.Sink());
  ASSERT_EQ(manual->pending.size(), 1u);
  call->Cancel();
  ASSERT_EQ(result_.done_calls, 1);
  EXPECT_EQ(result_.outcome->code, "cancelled");
  manual->pending[0]();  // the timer fires later: nothing happens
  EXPECT_EQ(a->starts, 1);
  EXPECT_EQ(result_.done_calls, 1);
  manual->pending.clear();
}

TEST_F(FailoverTest, PassedDeadlineIsDeadlineExceeded) {
  auto a = std::make_shared<FakeProvider>("a", std::vector<Step>{{{}, Ok("never")}});
  request_.deadline = Clock::now() - std::chrono::seconds(1);
  Run({a});
  EXPECT_EQ(result_.outcome->code, "deadline_exceeded");
  EXPECT_EQ(a->starts, 0);
}

TEST(BrokerTest, ChoosesCandidatesAndRejectsBadRequests) {
  auto a = std::make_shared<FakeProvider>("a", std::vector<Step>{{{}, Ok("a")}});
  auto b = std::make_shared<FakeProvider>("b", std::vector<Step>{{{}, Ok("b")}});
  auto scheduler = std::make_shared<InlineScheduler>();
  std::map<std::string, std::shared_ptr<Strategy>> strategies = {
      {"failover", std::make_shared<FailoverStrategy>(scheduler, RetryPolicy{})}};
  Broker broker({a, b}, strategies, "failover");
  Result result;
  ChatRequest request;
  EXPECT_EQ(broker.Start(request, result.Sink()).status().code(),
            absl::StatusCode::kInvalidArgument);  // no messages
  request.messages = {{"robot", "hi"}};
  EXPECT_FALSE(broker.Start(request, result.Sink()).ok());
  request.messages = {{"user", "hi"}};
  request.strategy = "hedge";
  EXPECT_FALSE(broker.Start(request, result.Sink()).ok());
  request.strategy = "";
  request.provider = "nope";
  EXPECT_FALSE(broker.Start(request, result.Sink()).ok());
  request.provider = "";
  request.model = "b/some-model";  // provider/model picks b only
  ASSERT_TRUE(broker.Start(request, result.Sink()).ok());
  EXPECT_EQ(result.outcome->result->provider, "b");
  EXPECT_EQ(b->last_model, "some-model");
  EXPECT_EQ(a->starts, 0);
}

TEST(ProviderStatsTest, HealthFollowsRecentOutcomes) {
  ProviderStats stats;
  EXPECT_EQ(stats.Snapshot(Clock::now()).state, ProviderHealth::State::kHealthy);
  for (int i = 0; i < 3; ++i) {
    stats.Begin();
    stats.End(true, false, std::chrono::milliseconds(5), "http_503: busy");
  }
  auto down = stats.Snapshot(Clock::now());
  EXPECT_EQ(down.state, ProviderHealth::State::kDown);
  EXPECT_EQ(down.detail, "http_503: busy");
  EXPECT_EQ(down.errors, 3);
  // Much later, with nothing tried since, it is no longer reported down.
  EXPECT_NE(stats.Snapshot(Clock::now() + std::chrono::minutes(10)).state,
            ProviderHealth::State::kDown);
  stats.Begin();
  stats.End(true, true, std::chrono::milliseconds(40), "");
  auto recovering = stats.Snapshot(Clock::now());
  EXPECT_EQ(recovering.state, ProviderHealth::State::kDegraded);  // 3 of 4 failed this minute
  EXPECT_EQ(recovering.p95_ms, 40);
  // Cancellations do not count against the provider.
  ProviderStats cancelled;
  for (int i = 0; i < 5; ++i) {
    cancelled.Begin();
    cancelled.End(false, false, std::chrono::milliseconds(1), "cancelled");
  }
  EXPECT_EQ(cancelled.Snapshot(Clock::now()).state, ProviderHealth::State::kHealthy);
  EXPECT_EQ(cancelled.Snapshot(Clock::now()).in_flight, 0);
}

}  // namespace
}  // namespace anima::broker
