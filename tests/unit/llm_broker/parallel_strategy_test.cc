// Hedge, race and fanout with fake providers whose calls the test completes by hand and a fake
// scheduler whose timers the test fires: who was called, who was cancelled, what came back.
#include "services/llm_broker/parallel_strategy.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/llm_broker/broker.h"
#include "services/llm_broker/instrumented_provider.h"

namespace anima::broker {
namespace {

ProviderError Err(std::string code, bool retryable = true) {
  ProviderError e;
  e.code = std::move(code);
  e.message = "failed: " + e.code;
  e.retryable = retryable;
  return e;
}

// Every Start() opens a call that stays open until the test ends it (Succeed/Fail/Delta), or
// with `reject` set ends it inline from Start(), as a provider behind an open breaker does.
class HeldProvider : public Provider {
 public:
  class Call : public ProviderCall {
   public:
    void Cancel() override {
      cancelled = true;
      if (sink.on_done && !cancel_later) {
        ProviderSink taken = std::move(sink);
        sink = ProviderSink();
        taken.on_done(Err("cancelled", false));
      }
    }
    ProviderSink sink;
    bool cancelled = false;
    bool cancel_later = false;  // like a real call: the test ends it (Fail("cancelled"))
  };

  explicit HeldProvider(std::string name) : name_(std::move(name)), model_(name_ + "-model") {}
  const std::string& name() const override { return name_; }
  const std::string& default_model() const override { return model_; }
  const std::vector<std::string>& models() const override { return models_; }

  std::shared_ptr<ProviderCall> Start(const ChatRequest& request, ProviderSink sink) override {
    last_model = request.model;
    call = std::make_shared<Call>();
    call->cancel_later = cancel_later;
    call->sink = std::move(sink);
    if (reject) Fail(*reject);
    return call;
  }

  bool started() const { return call != nullptr; }
  bool cancelled() const { return call != nullptr && call->cancelled; }
  void Delta(const std::string& d) { call->sink.on_delta(d); }
  void Succeed(const std::string& text) {
    ChatResult r;
    r.text = text;
    r.provider = name_;
    r.model = model_;
    r.finish_reason = "stop";
    r.usage = Usage{3, 4, 7};
    End(r);
  }
  void Fail(const std::string& code, bool retryable = true) {
    ProviderError e = Err(code, retryable);
    e.provider = name_;
    End(e);
  }

  std::shared_ptr<Call> call;
  std::string last_model;
  std::optional<std::string> reject;
  bool cancel_later = false;

 private:
  void End(ProviderOutcome outcome) {
    ProviderSink taken = std::move(call->sink);
    call->sink = ProviderSink();
    taken.on_done(std::move(outcome));
  }
  std::string name_;
  std::string model_;
  std::vector<std::string> models_;
};

class ManualScheduler : public Scheduler {
 public:
  void RunAfter(std::chrono::milliseconds delay, std::function<void()> fn) override {
    delays.push_back(delay);
    pending.push_back(std::move(fn));
  }
  // Fires the oldest timer; false when none is pending.
  bool Fire() {
    if (pending.empty()) return false;
    auto fn = std::move(pending.front());
    pending.erase(pending.begin());
    fn();
    return true;
  }
  std::vector<std::function<void()>> pending;
  std::vector<std::chrono::milliseconds> delays;
};

struct Recorder {
  std::vector<std::string> deltas;
  std::optional<StrategyOutcome> outcome;
  int done_calls = 0;
  std::function<void()> inside_delta;  // runs while on_delta is still in progress
  StrategySink Sink() {
    StrategySink sink;
    sink.on_delta = [this](std::string_view d) {
      deltas.emplace_back(d);
      if (inside_delta) inside_delta();
    };
    sink.on_done = [this](StrategyOutcome o) {
      ++done_calls;
      outcome = std::move(o);
    };
    return sink;
  }
};

class ParallelStrategyTest : public ::testing::Test {
 protected:
  std::shared_ptr<StrategyCall> Run(ParallelMode mode, bool stream = false) {
    strategy_ =
        std::make_shared<ParallelStrategy>(mode, scheduler_, std::chrono::milliseconds(250));
    ChatRequest request;
    request.messages = {{"user", "hi"}};
    request.stream = stream;
    return strategy_->Start(request, {a_, b_, c_}, recorder_.Sink());
  }

  std::shared_ptr<HeldProvider> a_ = std::make_shared<HeldProvider>("a");
  std::shared_ptr<HeldProvider> b_ = std::make_shared<HeldProvider>("b");
  std::shared_ptr<HeldProvider> c_ = std::make_shared<HeldProvider>("c");
  std::shared_ptr<ManualScheduler> scheduler_ = std::make_shared<ManualScheduler>();
  std::shared_ptr<ParallelStrategy> strategy_;
  Recorder recorder_;
};

TEST_F(ParallelStrategyTest, RaceStartsAllAndTheFirstSuccessCancelsTheRest) {
  auto call = Run(ParallelMode::kRace);
  EXPECT_TRUE(a_->started() && b_->started() && c_->started());
  EXPECT_EQ(b_->last_model, "b-model");  // each provider's own default model
  b_->Succeed("from b");
  ASSERT_TRUE(recorder_.outcome.has_value());
  ASSERT_TRUE(recorder_.outcome->result.has_value());
  EXPECT_EQ(recorder_.outcome->result->provider, "b");
  EXPECT_TRUE(a_->cancelled());
  EXPECT_TRUE(c_->cancelled());
  EXPECT_FALSE(b_->cancelled());
  EXPECT_EQ(recorder_.done_calls, 1);
}

TEST_F(ParallelStrategyTest, RaceWaitsOutFailuresAndReportsEveryCause) {
  Run(ParallelMode::kRace);
  a_->Fail("http_503");
  c_->Fail("http_401", false);
  EXPECT_FALSE(recorder_.outcome.has_value());  // b is still running
  b_->Fail("timeout");
  ASSERT_TRUE(recorder_.outcome.has_value());
  EXPECT_EQ(recorder_.outcome->code, "provider_error");
  ASSERT_EQ(recorder_.outcome->causes.size(), 3u);
  EXPECT_EQ(recorder_.outcome->causes[0].provider, "a");
  EXPECT_EQ(recorder_.outcome->causes[1].provider, "b");
  EXPECT_EQ(recorder_.outcome->causes[2].provider, "c");
}

TEST_F(ParallelStrategyTest, StreamingRaceCommitsToTheFirstTokenAndItsFailureIsFinal) {
  Run(ParallelMode::kRace, /*stream=*/true);
  c_->Delta("Hel");
  EXPECT_TRUE(a_->cancelled());
  EXPECT_TRUE(b_->cancelled());
  c_->Delta("lo");
  EXPECT_EQ(recorder_.deltas, (std::vector<std::string>{"Hel", "lo"}));
  c_->Fail("stream_error");
  ASSERT_TRUE(recorder_.outcome.has_value());
  EXPECT_EQ(recorder_.outcome->code, "provider_error");
}

TEST_F(ParallelStrategyTest, RaceOutlivesAProviderThatRejectsInlineFromStart) {
  a_->reject = "circuit_open";
  Run(ParallelMode::kRace);
  EXPECT_FALSE(recorder_.outcome.has_value());  // b and c have not answered yet
  ASSERT_TRUE(b_->started() && c_->started());
  b_->Succeed("from b");
  ASSERT_TRUE(recorder_.outcome && recorder_.outcome->result);
  EXPECT_EQ(recorder_.outcome->result->provider, "b");
  EXPECT_TRUE(c_->cancelled());
}

TEST_F(ParallelStrategyTest, RaceWithEveryProviderRejectingInlineIsAProviderError) {
  a_->reject = b_->reject = c_->reject = "concurrency_limit";
  Run(ParallelMode::kRace);
  ASSERT_TRUE(recorder_.outcome.has_value());
  EXPECT_EQ(recorder_.outcome->code, "provider_error");
  EXPECT_EQ(recorder_.outcome->causes.size(), 3u);
  EXPECT_EQ(recorder_.done_calls, 1);
}

// Cancel() comes from another thread (gRPC's cancel callback) while a token may be in the sink:
// on_done must wait until the calls in flight have ended, since the sink's owner may go away
// once on_done has run.
TEST_F(ParallelStrategyTest, CancelDuringADeltaEndsOnlyAfterTheCallsInFlightEnded) {
  a_->cancel_later = b_->cancel_later = c_->cancel_later = true;
  auto call = Run(ParallelMode::kRace, /*stream=*/true);
  bool done_inside_delta = false;
  recorder_.inside_delta = [&] {
    call->Cancel();
    done_inside_delta = recorder_.outcome.has_value();
  };
  a_->Delta("Hel");
  EXPECT_FALSE(done_inside_delta);
  recorder_.inside_delta = nullptr;
  EXPECT_TRUE(a_->cancelled() && b_->cancelled() && c_->cancelled());
  a_->Delta("lo");  // after Cancel(): not forwarded
  b_->Fail("cancelled", false);
  c_->Fail("cancelled", false);
  EXPECT_FALSE(recorder_.outcome.has_value());  // a is still running
  a_->Fail("cancelled", false);
  ASSERT_TRUE(recorder_.outcome.has_value());
  EXPECT_EQ(recorder_.outcome->code, "cancelled");
  EXPECT_EQ(recorder_.done_calls, 1);
  EXPECT_EQ(recorder_.deltas, std::vector<std::string>{"Hel"});
}

TEST_F(ParallelStrategyTest, HedgeStartsTheNextOnlyAfterTheDelay) {
  Run(ParallelMode::kHedge);
  EXPECT_TRUE(a_->started());
  EXPECT_FALSE(b_->started());
  ASSERT_EQ(scheduler_->delays.size(), 1u);
  EXPECT_EQ(scheduler_->delays[0], std::chrono::milliseconds(250));
  ASSERT_TRUE(scheduler_->Fire());
  EXPECT_TRUE(b_->started());
  EXPECT_FALSE(c_->started());
  a_->Succeed("from a");  // the slow first one still wins when it ends first
  ASSERT_TRUE(recorder_.outcome && recorder_.outcome->result);
  EXPECT_EQ(recorder_.outcome->result->provider, "a");
  EXPECT_TRUE(b_->cancelled());
  // The pending timer finds the request decided and starts nobody.
  while (scheduler_->Fire()) {
  }
  EXPECT_FALSE(c_->started());
}

TEST_F(ParallelStrategyTest, HedgeMovesOnAtOnceWhenEverythingInFlightFailed) {
  Run(ParallelMode::kHedge);
  a_->Fail("connect");
  EXPECT_TRUE(b_->started());  // no waiting for the timer
  b_->Succeed("from b");
  ASSERT_TRUE(recorder_.outcome && recorder_.outcome->result);
  EXPECT_EQ(recorder_.outcome->result->provider, "b");
  EXPECT_FALSE(c_->started());
}

TEST_F(ParallelStrategyTest, FanoutWaitsForAllAndPicksTheFirstSuccessInProviderOrder) {
  Run(ParallelMode::kFanout, /*stream=*/true);
  c_->Succeed("from c");
  a_->Fail("http_500");
  EXPECT_FALSE(recorder_.outcome.has_value());
  b_->Succeed("from b");
  ASSERT_TRUE(recorder_.outcome && recorder_.outcome->result);
  EXPECT_EQ(recorder_.outcome->result->provider, "b");
  EXPECT_EQ(recorder_.deltas, std::vector<std::string>{"from b"});
  ASSERT_EQ(recorder_.outcome->candidates.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<ProviderError>(recorder_.outcome->candidates[0]));
  EXPECT_EQ(std::get<ChatResult>(recorder_.outcome->candidates[1]).text, "from b");
  EXPECT_EQ(std::get<ChatResult>(recorder_.outcome->candidates[2]).text, "from c");
  EXPECT_FALSE(a_->cancelled() || b_->cancelled() || c_->cancelled());
}

TEST_F(ParallelStrategyTest, FanoutWithEveryCandidateFailedIsAProviderError) {
  Run(ParallelMode::kFanout);
  a_->Fail("http_500");
  b_->Fail("http_503");
  c_->Fail("timeout");
  ASSERT_TRUE(recorder_.outcome.has_value());
  EXPECT_EQ(recorder_.outcome->code, "provider_error");
  EXPECT_EQ(recorder_.outcome->causes.size(), 3u);
  EXPECT_EQ(recorder_.outcome->candidates.size(), 3u);
}

TEST_F(ParallelStrategyTest, CancelStopsEveryCallInFlightOnce) {
  for (ParallelMode mode : {ParallelMode::kRace, ParallelMode::kFanout}) {
    a_ = std::make_shared<HeldProvider>("a");
    b_ = std::make_shared<HeldProvider>("b");
    c_ = std::make_shared<HeldProvider>("c");
    recorder_ = Recorder();
    auto call = Run(mode);
    a_->Fail("http_500");
    call->Cancel();
    call->Cancel();
    EXPECT_TRUE(b_->cancelled());
    EXPECT_TRUE(c_->cancelled());
    ASSERT_TRUE(recorder_.outcome.has_value());
    EXPECT_EQ(recorder_.outcome->code, "cancelled");
    EXPECT_EQ(recorder_.done_calls, 1);
  }
}

TEST(BrokerStrategyTest, RequestsChooseTheirStrategyByName) {
  auto a = std::make_shared<HeldProvider>("a");
  auto b = std::make_shared<HeldProvider>("b");
  auto scheduler = std::make_shared<ManualScheduler>();
  std::map<std::string, std::shared_ptr<Strategy>> strategies;
  strategies["race"] = std::make_shared<ParallelStrategy>(ParallelMode::kRace, scheduler);
  strategies["hedge"] = std::make_shared<ParallelStrategy>(ParallelMode::kHedge, scheduler);
  Broker broker({a, b}, strategies, "hedge");
  Recorder recorder;
  ChatRequest request;
  request.messages = {{"user", "hi"}};
  request.strategy = "race";
  ASSERT_TRUE(broker.Start(request, recorder.Sink()).ok());
  EXPECT_TRUE(a->started() && b->started());
  a->Succeed("x");
  b = std::make_shared<HeldProvider>("b");
  a = std::make_shared<HeldProvider>("a");
  Broker by_default({a, b}, strategies, "hedge");
  request.strategy.clear();
  Recorder second;
  ASSERT_TRUE(by_default.Start(request, second.Sink()).ok());
  EXPECT_TRUE(a->started());
  EXPECT_FALSE(b->started());
  request.strategy = "roulette";
  EXPECT_FALSE(by_default.Start(request, Recorder().Sink()).ok());
  a->Succeed("y");  // the call left open holds its provider, which holds the call
}

TEST(ResponseCacheTest, DeterministicRequestsAreAnsweredFromTheCache) {
  auto a = std::make_shared<HeldProvider>("a");
  auto scheduler = std::make_shared<ManualScheduler>();
  std::map<std::string, std::shared_ptr<Strategy>> strategies;
  strategies["race"] = std::make_shared<ParallelStrategy>(ParallelMode::kRace, scheduler);
  Broker broker({a}, strategies, "race");
  Clock::time_point now = Clock::time_point(std::chrono::hours(1));
  std::vector<bool> lookups;
  broker.EnableCache(
      std::make_shared<ResponseCache>(2, std::chrono::milliseconds(1000), [&] { return now; }),
      [&](bool hit) { lookups.push_back(hit); });
  ChatRequest request;
  request.messages = {{"user", "2+2?"}};
  request.temperature = 0;

  Recorder first;
  ASSERT_TRUE(broker.Start(request, first.Sink()).ok());
  a->Succeed("4");
  ASSERT_TRUE(first.outcome && first.outcome->result);
  a->call.reset();

  Recorder second;
  request.stream = true;
  ASSERT_TRUE(broker.Start(request, second.Sink()).ok());
  EXPECT_FALSE(a->started());  // never reached the provider
  ASSERT_TRUE(second.outcome && second.outcome->result);
  EXPECT_EQ(second.outcome->result->text, "4");
  EXPECT_EQ(second.deltas, std::vector<std::string>{"4"});
  EXPECT_EQ(lookups, (std::vector<bool>{false, true}));

  // Another message, a non-zero temperature, or an expired entry: the provider is asked.
  request.temperature = 0.7;
  Recorder warm;
  ASSERT_TRUE(broker.Start(request, warm.Sink()).ok());
  EXPECT_TRUE(a->started());
  a->Succeed("four");
  a->call.reset();
  EXPECT_EQ(lookups.size(), 2u);  // not cacheable: no lookup
  request.temperature = 0;
  now += std::chrono::milliseconds(1001);
  Recorder expired;
  ASSERT_TRUE(broker.Start(request, expired.Sink()).ok());
  EXPECT_TRUE(a->started());
  EXPECT_EQ(lookups.back(), false);
  a->Succeed("4");  // the call left open holds its provider, which holds the call
}

TEST(ResponseCacheTest, KeysCoverWhatShapesTheAnswerAndTheOldestIsEvicted) {
  ChatRequest r;
  r.messages = {{"user", "x"}};
  EXPECT_FALSE(ResponseCache::KeyFor(r).has_value());  // no temperature: not deterministic
  r.temperature = 0;
  auto key = ResponseCache::KeyFor(r);
  ASSERT_TRUE(key.has_value());
  ChatRequest other = r;
  other.system = "be terse";
  EXPECT_NE(ResponseCache::KeyFor(other), key);
  other = r;
  other.model = "m2";
  EXPECT_NE(ResponseCache::KeyFor(other), key);
  other = r;
  other.strategy = "fanout";
  EXPECT_FALSE(ResponseCache::KeyFor(other).has_value());

  ResponseCache cache(2, std::chrono::minutes(1));
  ChatResult result;
  result.text = "t";
  cache.Put("k1", result);
  cache.Put("k2", result);
  cache.Put("k3", result);
  EXPECT_FALSE(cache.Get("k1").has_value());
  EXPECT_TRUE(cache.Get("k2").has_value());
  EXPECT_TRUE(cache.Get("k3").has_value());
}

// HeldProviders behind the InstrumentedProvider that prices their calls, as main.cc builds them.
struct PricedProviders {
  std::shared_ptr<HeldProvider> a = std::make_shared<HeldProvider>("a");
  std::shared_ptr<HeldProvider> b = std::make_shared<HeldProvider>("b");
  std::shared_ptr<HeldProvider> c = std::make_shared<HeldProvider>("c");
  std::vector<std::shared_ptr<Provider>> All() {
    // a: $1 in / $2 out per million tokens; b ten times that; c has no price.
    return {Priced(a, {{"a-model", {1, 2}}}), Priced(b, {{"b-model", {10, 20}}}), Priced(c, {})};
  }
  static std::shared_ptr<Provider> Priced(std::shared_ptr<Provider> inner,
                                          std::map<std::string, ModelPrice> prices) {
    ProviderGuards guards;
    guards.prices = std::move(prices);
    return std::make_shared<InstrumentedProvider>(std::move(inner), nullptr, guards);
  }
};

// Every HeldProvider answer uses 3 prompt and 4 completion tokens.
constexpr double kCostOfA = (3 * 1 + 4 * 2) / 1e6;
constexpr double kCostOfB = (3 * 10 + 4 * 20) / 1e6;

std::map<std::string, std::shared_ptr<Strategy>> ParallelStrategies(
    std::shared_ptr<Scheduler> scheduler) {
  return {{"race", std::make_shared<ParallelStrategy>(ParallelMode::kRace, scheduler)},
          {"fanout", std::make_shared<ParallelStrategy>(ParallelMode::kFanout, scheduler)}};
}

TEST(BrokerBillingTest, FanoutBillsEveryCandidateThatAnswered) {
  PricedProviders p;
  Broker broker(p.All(), ParallelStrategies(std::make_shared<ManualScheduler>()), "fanout");
  Recorder recorder;
  ChatRequest request;
  request.messages = {{"user", "hi"}};
  ASSERT_TRUE(broker.Start(request, recorder.Sink()).ok());
  p.a->Succeed("from a");
  p.b->Fail("http_503");   // no usage, nothing billed
  p.c->Succeed("from c");  // usage without a price: tokens billed, no cost
  ASSERT_TRUE(recorder.outcome && recorder.outcome->result);
  EXPECT_EQ(recorder.outcome->result->text, "from a");
  EXPECT_DOUBLE_EQ(recorder.outcome->result->cost_usd, kCostOfA);
  const Bill& billed = recorder.outcome->billed;
  EXPECT_EQ(billed.usage.prompt_tokens, 6);
  EXPECT_EQ(billed.usage.completion_tokens, 8);
  EXPECT_EQ(billed.usage.total_tokens, 14);
  EXPECT_DOUBLE_EQ(billed.cost_usd, kCostOfA);
}

TEST(BrokerBillingTest, ARaceLoserThatAnsweredIsBilledTooAndCachedAnswersAreFree) {
  PricedProviders p;
  p.b->cancel_later = true;  // b's answer arrives before its cancellation takes effect
  Broker broker(p.All(), ParallelStrategies(std::make_shared<ManualScheduler>()), "race");
  broker.EnableCache(std::make_shared<ResponseCache>(10, std::chrono::minutes(1)), nullptr);
  Recorder recorder;
  ChatRequest request;
  request.messages = {{"user", "hi"}};
  request.stream = true;
  request.temperature = 0;
  ASSERT_TRUE(broker.Start(request, recorder.Sink()).ok());
  p.a->Delta("from ");  // a wins
  EXPECT_TRUE(p.b->cancelled());
  p.b->Succeed("too late");
  EXPECT_TRUE(p.c->cancelled());
  p.a->Succeed("from a");
  ASSERT_TRUE(recorder.outcome && recorder.outcome->result);
  EXPECT_EQ(recorder.outcome->result->provider, "a");
  EXPECT_EQ(recorder.outcome->billed.usage.total_tokens, 14);
  EXPECT_DOUBLE_EQ(recorder.outcome->billed.cost_usd, kCostOfA + kCostOfB);

  // The same deterministic request again: answered from the cache, no provider call, no bill.
  p.a->call.reset();
  Recorder cached;
  ASSERT_TRUE(broker.Start(request, cached.Sink()).ok());
  EXPECT_FALSE(p.a->started());
  ASSERT_TRUE(cached.outcome && cached.outcome->result);
  EXPECT_EQ(cached.outcome->billed.usage.total_tokens, 0);
  EXPECT_DOUBLE_EQ(cached.outcome->billed.cost_usd, 0);
}

}  // namespace
}  // namespace anima::broker
