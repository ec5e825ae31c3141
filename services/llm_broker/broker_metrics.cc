#include "services/llm_broker/broker_metrics.h"

#include "services/common/metrics.h"

namespace anima::broker {
namespace {

const prometheus::Histogram::BucketBoundaries& OverheadBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
      0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    0.25};
  return kBuckets;
}

}  // namespace

BrokerMetrics::BrokerMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("anima_broker_provider_requests_total")
                    .Help("Provider requests (attempts) by provider, model and outcome")
                    .Register(registry)),
      request_seconds_(prometheus::BuildHistogram()
                           .Name("anima_broker_provider_request_seconds")
                           .Help("Duration of provider requests, body included")
                           .Register(registry)),
      tokens_(prometheus::BuildCounter()
                  .Name("anima_broker_tokens_total")
                  .Help("Tokens reported by providers")
                  .Register(registry)),
      overhead_(prometheus::BuildHistogram()
                    .Name("anima_broker_overhead_seconds")
                    .Help("Time in the broker minus time waiting on providers, per request")
                    .Register(registry)
                    .Add({}, OverheadBuckets())),
      connections_(prometheus::BuildCounter()
                       .Name("anima_broker_http_connections_opened_total")
                       .Help("Upstream HTTP connections opened, by origin")
                       .Register(registry)),
      breaker_state_(prometheus::BuildGauge()
                         .Name("anima_broker_breaker_state")
                         .Help("Circuit breaker state per provider: 0 closed, 1 open, 2 half-open")
                         .Register(registry)),
      breaker_transitions_(
          prometheus::BuildCounter()
              .Name("anima_broker_breaker_transitions_total")
              .Help("Circuit breaker transitions by provider and the state entered")
              .Register(registry)),
      cost_(prometheus::BuildCounter()
                .Name("anima_broker_cost_usd_total")
                .Help("Cost of the tokens providers reported, from the configured prices (USD)")
                .Register(registry)),
      cache_(prometheus::BuildCounter()
                 .Name("anima_broker_cache_requests_total")
                 .Help("Lookups of the response cache for deterministic requests")
                 .Register(registry)) {}

void BrokerMetrics::AddModels(const std::string& provider, const std::vector<std::string>& models) {
  std::lock_guard lock(mu_);
  models_[provider].insert(models.begin(), models.end());
}

std::string BrokerMetrics::ModelLabel(const std::string& provider, const std::string& model) const {
  std::lock_guard lock(mu_);
  auto it = models_.find(provider);
  if (it != models_.end() && it->second.count(model) > 0) return model;
  return "other";
}

void BrokerMetrics::ProviderRequest(const std::string& provider, const std::string& model,
                                    const std::string& outcome, double seconds) {
  requests_
      .Add({{"provider", provider}, {"model", ModelLabel(provider, model)}, {"outcome", outcome}})
      .Increment();
  request_seconds_.Add({{"provider", provider}}, common::LatencyBuckets()).Observe(seconds);
}

void BrokerMetrics::Tokens(const std::string& provider, const std::string& model,
                           const Usage& usage) {
  std::string label = ModelLabel(provider, model);
  tokens_.Add({{"provider", provider}, {"model", label}, {"kind", "prompt"}})
      .Increment(static_cast<double>(usage.prompt_tokens));
  tokens_.Add({{"provider", provider}, {"model", label}, {"kind", "completion"}})
      .Increment(static_cast<double>(usage.completion_tokens));
}

void BrokerMetrics::Overhead(double seconds) { overhead_.Observe(seconds < 0 ? 0 : seconds); }

void BrokerMetrics::ConnectionOpened(const std::string& origin) {
  connections_.Add({{"origin", origin}}).Increment();
}

void BrokerMetrics::Cost(const std::string& provider, const std::string& model, double usd) {
  if (!(usd > 0)) return;
  cost_.Add({{"provider", provider}, {"model", ModelLabel(provider, model)}}).Increment(usd);
}

void BrokerMetrics::CacheLookup(bool hit) {
  cache_.Add({{"result", hit ? "hit" : "miss"}}).Increment();
}

void BrokerMetrics::BreakerState(const std::string& provider, int state) {
  breaker_state_.Add({{"provider", provider}}).Set(state);
}

void BrokerMetrics::BreakerTransition(const std::string& provider, int state) {
  static constexpr const char* kStates[] = {"closed", "open", "half_open"};
  BreakerState(provider, state);
  const char* to = state >= 0 && state <= 2 ? kStates[state] : "other";
  breaker_transitions_.Add({{"provider", provider}, {"to", to}}).Increment();
}

}  // namespace anima::broker
