// The circuit breaker with a fake clock, and the guards of InstrumentedProvider (breaker and
// concurrency cap) with a fake provider.
#include "services/llm_broker/circuit_breaker.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/llm_broker/instrumented_provider.h"

namespace anima::broker {
namespace {

using namespace std::chrono_literals;
using State = CircuitBreaker::State;

class BreakerTest : public ::testing::Test {
 protected:
  CircuitBreaker breaker_{{3, 1000ms}, [this] { return now_; }};
  Clock::time_point now_ = Clock::time_point(1h);
};

TEST_F(BreakerTest, OpensAfterConsecutiveFailuresOnly) {
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(breaker_.Allow());
    breaker_.Record(false);
  }
  ASSERT_TRUE(breaker_.Allow());
  breaker_.Record(true);  // a success resets the count
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(breaker_.Allow());
    breaker_.Record(false);
  }
  EXPECT_EQ(breaker_.state(), State::kClosed);
  ASSERT_TRUE(breaker_.Allow());
  breaker_.Record(false);
  EXPECT_EQ(breaker_.state(), State::kOpen);
  EXPECT_FALSE(breaker_.Allow());
  EXPECT_EQ(breaker_.RetryIn(), 1000ms);
}

TEST_F(BreakerTest, HalfOpenLetsOneProbeThroughAndItDecides) {
  std::vector<State> transitions;
  breaker_.OnTransition([&](State s) { transitions.push_back(s); });
  for (int i = 0; i < 3; ++i) {
    breaker_.Allow();
    breaker_.Record(false);
  }
  now_ += 999ms;
  EXPECT_FALSE(breaker_.Allow());
  now_ += 1ms;
  EXPECT_EQ(breaker_.state(), State::kHalfOpen);
  EXPECT_TRUE(breaker_.Allow());   // the probe
  EXPECT_FALSE(breaker_.Allow());  // only one at a time
  breaker_.Record(false);          // the probe failed: open again
  EXPECT_EQ(breaker_.state(), State::kOpen);
  now_ += 1000ms;
  EXPECT_TRUE(breaker_.Allow());
  breaker_.Release();  // a probe that said nothing (cancelled) frees the slot
  EXPECT_TRUE(breaker_.Allow());
  breaker_.Record(true);
  EXPECT_EQ(breaker_.state(), State::kClosed);
  EXPECT_EQ(transitions, (std::vector<State>{State::kOpen, State::kHalfOpen, State::kOpen,
                                             State::kHalfOpen, State::kClosed}));
}

TEST(BreakerDisabledTest, ThresholdZeroNeverOpens) {
  CircuitBreaker breaker({0, 1000ms});
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(breaker.Allow());
    breaker.Record(false);
  }
  EXPECT_EQ(breaker.state(), State::kClosed);
}

// Holds every call open until the test ends it.
class HeldProvider : public Provider {
 public:
  const std::string& name() const override { return name_; }
  const std::string& default_model() const override { return name_; }
  const std::vector<std::string>& models() const override { return models_; }
  std::shared_ptr<ProviderCall> Start(const ChatRequest&, ProviderSink sink) override {
    ++starts;
    sinks.push_back(std::move(sink));
    return nullptr;
  }
  void End(size_t i, ProviderOutcome outcome) { sinks[i].on_done(std::move(outcome)); }
  int starts = 0;
  std::vector<ProviderSink> sinks;

 private:
  std::string name_ = "p";
  std::vector<std::string> models_;
};

ProviderError Err(std::string code, bool retryable) {
  ProviderError e;
  e.code = std::move(code);
  e.retryable = retryable;
  return e;
}

struct Captured {
  std::optional<ProviderOutcome> outcome;
  ProviderSink Sink() {
    return ProviderSink{nullptr, [this](ProviderOutcome o) { outcome = std::move(o); }};
  }
  std::string code() const {
    return outcome && std::holds_alternative<ProviderError>(*outcome)
               ? std::get<ProviderError>(*outcome).code
               : "";
  }
};

TEST(ProviderGuardsTest, AnOpenBreakerStopsCallsBeforeTheProviderAndShowsInTheMetric) {
  prometheus::Registry registry;
  auto metrics = std::make_shared<BrokerMetrics>(registry);
  auto inner = std::make_shared<HeldProvider>();
  Clock::time_point now = Clock::time_point(1h);
  ProviderGuards guards;
  guards.breaker =
      std::make_shared<CircuitBreaker>(CircuitBreaker::Options{2, 5000ms}, [&] { return now; });
  InstrumentedProvider provider(inner, metrics, guards);
  ChatRequest request;
  // Caller errors do not count.
  for (int i = 0; i < 3; ++i) {
    Captured c;
    provider.Start(request, c.Sink());
    inner->End(inner->sinks.size() - 1, Err("http_400", false));
  }
  EXPECT_EQ(guards.breaker->state(), CircuitBreaker::State::kClosed);
  for (int i = 0; i < 2; ++i) {
    Captured c;
    provider.Start(request, c.Sink());
    inner->End(inner->sinks.size() - 1, Err("http_503", true));
  }
  EXPECT_EQ(guards.breaker->state(), CircuitBreaker::State::kOpen);
  int starts = inner->starts;
  Captured rejected;
  provider.Start(request, rejected.Sink());
  EXPECT_EQ(inner->starts, starts);  // never reached the provider
  EXPECT_EQ(rejected.code(), "circuit_open");
  EXPECT_TRUE(std::get<ProviderError>(*rejected.outcome).retryable);
  EXPECT_EQ(std::get<ProviderError>(*rejected.outcome).retry_after, 5000ms);
  double gauge = -1, opened = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name == "anima_broker_breaker_state") gauge = family.metric.at(0).gauge.value;
    if (family.name == "anima_broker_breaker_transitions_total") {
      for (const auto& m : family.metric) {
        for (const auto& label : m.label) {
          if (label.name == "to" && label.value == "open") opened = m.counter.value;
        }
      }
    }
  }
  EXPECT_EQ(gauge, 1);
  EXPECT_EQ(opened, 1);  // counted, whatever the gauge says at the next scrape
}

TEST(ProviderGuardsTest, TheConcurrencyCapRejectsTheCallOverIt) {
  auto inner = std::make_shared<HeldProvider>();
  ProviderGuards guards;
  guards.max_concurrency = 2;
  InstrumentedProvider provider(inner, nullptr, guards);
  ChatRequest request;
  Captured a, b, c, d;
  provider.Start(request, a.Sink());
  provider.Start(request, b.Sink());
  provider.Start(request, c.Sink());
  EXPECT_EQ(inner->starts, 2);
  EXPECT_EQ(c.code(), "concurrency_limit");
  ChatResult ok;
  inner->End(0, ok);
  provider.Start(request, d.Sink());  // a slot was freed
  EXPECT_EQ(inner->starts, 3);
  EXPECT_FALSE(d.outcome.has_value());
}

}  // namespace
}  // namespace anima::broker
