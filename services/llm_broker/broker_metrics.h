#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/llm_broker/types.h"

namespace anima::broker {

// The broker's own metrics. Label values stay bounded: provider names and origins come from the
// configuration, and a model that is not configured for its provider is counted as "other".
//   anima_broker_provider_requests_total{provider,model,outcome}   outcome: ok or an error code
//   anima_broker_provider_request_seconds{provider}                histogram
//   anima_broker_tokens_total{provider,model,kind=prompt|completion}
//   anima_broker_overhead_seconds                                  histogram: time in the broker
//                                                                  minus time waiting on providers
//   anima_broker_http_connections_opened_total{origin}
//   anima_broker_cost_usd_total{provider,model}                     from the configured prices
//   anima_broker_cache_requests_total{result=hit|miss}             lookups of the response cache
//   anima_broker_breaker_state{provider}                           0 closed, 1 open, 2 half-open
// Thread-safe.
class BrokerMetrics {
 public:
  explicit BrokerMetrics(prometheus::Registry& registry);

  // Declares the models of a provider (others are labelled "other").
  void AddModels(const std::string& provider, const std::vector<std::string>& models);

  void ProviderRequest(const std::string& provider, const std::string& model,
                       const std::string& outcome, double seconds);
  void Tokens(const std::string& provider, const std::string& model, const Usage& usage);
  void Overhead(double seconds);
  void ConnectionOpened(const std::string& origin);
  void Cost(const std::string& provider, const std::string& model, double usd);
  void CacheLookup(bool hit);
  // 0 closed, 1 open, 2 half-open.
  void BreakerState(const std::string& provider, int state);
  // A transition to `state`: the gauge, and the transitions counter (a gauge scraped every 15 s
  // misses a breaker that opened and closed again between two scrapes).
  void BreakerTransition(const std::string& provider, int state);

 private:
  std::string ModelLabel(const std::string& provider, const std::string& model) const;

  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Histogram& overhead_;
  prometheus::Family<prometheus::Counter>& connections_;
  prometheus::Family<prometheus::Gauge>& breaker_state_;
  prometheus::Family<prometheus::Counter>& breaker_transitions_;
  prometheus::Family<prometheus::Counter>& cost_;
  prometheus::Family<prometheus::Counter>& cache_;
  mutable std::mutex mu_;
  std::map<std::string, std::set<std::string>> models_;
};

}  // namespace anima::broker
