#include "services/llm_broker/billing.h"

namespace anima::broker {

double CostOf(const Usage& usage, const ModelPrice& price) {
  return (static_cast<double>(usage.prompt_tokens) * price.input_per_mtok +
          static_cast<double>(usage.completion_tokens) * price.output_per_mtok) /
         1e6;
}

void BillMeter::Add(const Usage& usage, double cost_usd) {
  std::lock_guard lock(mu_);
  total_.usage.prompt_tokens += usage.prompt_tokens;
  total_.usage.completion_tokens += usage.completion_tokens;
  total_.usage.total_tokens += usage.total_tokens;
  total_.cost_usd += cost_usd;
}

Bill BillMeter::Total() const {
  std::lock_guard lock(mu_);
  return total_;
}

MeteredProvider::MeteredProvider(std::shared_ptr<Provider> inner, std::shared_ptr<BillMeter> meter)
    : inner_(std::move(inner)), meter_(std::move(meter)) {}

std::shared_ptr<ProviderCall> MeteredProvider::Start(const ChatRequest& request,
                                                     ProviderSink sink) {
  ProviderSink wrapped;
  wrapped.on_delta = std::move(sink.on_delta);
  wrapped.on_done = [done = std::move(sink.on_done), meter = meter_](ProviderOutcome outcome) {
    if (const auto* result = std::get_if<ChatResult>(&outcome); result && result->usage) {
      meter->Add(*result->usage, result->cost_usd);
    }
    if (done) done(std::move(outcome));
  };
  return inner_->Start(request, std::move(wrapped));
}

}  // namespace anima::broker
