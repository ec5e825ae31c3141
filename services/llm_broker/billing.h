#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "services/llm_broker/provider.h"

namespace anima::broker {

// What the provider calls of one request consumed: the tokens of every call that reported usage
// and their cost at the configured prices. This is what the principal is charged, which is more
// than the answer's own usage when several providers were called (fanout, a race loser that
// answered).
struct Bill {
  Usage usage;
  double cost_usd = 0;
};

// The cost of `usage` at `price`, in US dollars.
double CostOf(const Usage& usage, const ModelPrice& price);

// Adds up the calls of one request. Thread-safe: parallel strategies end their calls on several
// threads.
class BillMeter {
 public:
  void Add(const Usage& usage, double cost_usd);
  Bill Total() const;

 private:
  mutable std::mutex mu_;
  Bill total_;
};

// A decorator made for one request: every call of `inner` that ends with a result carrying
// usage adds that usage and the result's cost_usd to `meter` before the caller's sink sees it.
// Failed and cancelled calls add nothing (providers report no usage for them).
class MeteredProvider : public Provider {
 public:
  MeteredProvider(std::shared_ptr<Provider> inner, std::shared_ptr<BillMeter> meter);

  const std::string& name() const override { return inner_->name(); }
  const std::string& default_model() const override { return inner_->default_model(); }
  const std::vector<std::string>& models() const override { return inner_->models(); }
  bool Supports(const std::string& model) const override { return inner_->Supports(model); }
  int max_retries() const override { return inner_->max_retries(); }
  std::shared_ptr<ProviderCall> Start(const ChatRequest& request, ProviderSink sink) override;

 private:
  std::shared_ptr<Provider> inner_;
  std::shared_ptr<BillMeter> meter_;
};

}  // namespace anima::broker
