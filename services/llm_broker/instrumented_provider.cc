#include "services/llm_broker/instrumented_provider.h"

#include <algorithm>
#include <vector>

namespace anima::broker {
namespace {
constexpr size_t kMaxRecent = 512;
constexpr auto kWindow = std::chrono::seconds(60);
constexpr auto kDownMemory = std::chrono::minutes(5);
}  // namespace

void ProviderStats::Begin() {
  std::lock_guard lock(mu_);
  ++in_flight_;
  last_active_ = Clock::now();
}

void ProviderStats::End(bool counted, bool ok, Clock::duration latency, const std::string& error) {
  std::lock_guard lock(mu_);
  --in_flight_;
  last_active_ = Clock::now();
  if (!counted) return;
  ++requests_;
  if (!ok) {
    ++errors_;
    last_error_ = error;
  }
  recent_.push_back({last_active_, ok, latency});
  if (recent_.size() > kMaxRecent) recent_.pop_front();
}

ProviderHealth ProviderStats::Snapshot(Clock::time_point now) const {
  std::lock_guard lock(mu_);
  ProviderHealth h;
  h.in_flight = in_flight_;
  h.requests = requests_;
  h.errors = errors_;
  h.last_active = last_active_;
  int total = 0;
  int failed = 0;
  std::vector<double> latencies;
  for (const auto& o : recent_) {
    if (now - o.at > kWindow) continue;
    ++total;
    if (!o.ok) {
      ++failed;
    } else {
      latencies.push_back(std::chrono::duration<double, std::milli>(o.latency).count());
    }
  }
  if (total > 0) {
    h.requests_per_second = total / std::chrono::duration<double>(kWindow).count();
    h.error_rate = static_cast<double>(failed) / total;
  }
  if (!latencies.empty()) {
    std::sort(latencies.begin(), latencies.end());
    h.p95_ms = latencies[std::min(
        latencies.size() - 1, static_cast<size_t>(0.95 * static_cast<double>(latencies.size())))];
  }
  // Old failures do not keep a provider down forever when nothing has tried it since.
  bool last_three_failed =
      recent_.size() >= 3 && now - recent_.back().at < kDownMemory &&
      std::all_of(recent_.end() - 3, recent_.end(), [](const Outcome& o) { return !o.ok; });
  if (last_three_failed) {
    h.state = ProviderHealth::State::kDown;
  } else if (total > 0 && h.error_rate > 0.2) {
    h.state = ProviderHealth::State::kDegraded;
  }
  if (h.state != ProviderHealth::State::kHealthy) h.detail = last_error_;
  return h;
}

InstrumentedProvider::InstrumentedProvider(std::shared_ptr<Provider> inner,
                                           std::shared_ptr<BrokerMetrics> metrics)
    : inner_(std::move(inner)),
      metrics_(std::move(metrics)),
      stats_(std::make_shared<ProviderStats>()) {}

std::shared_ptr<ProviderCall> InstrumentedProvider::Start(const ChatRequest& request,
                                                          ProviderSink sink) {
  stats_->Begin();
  auto started = Clock::now();
  ProviderSink wrapped;
  wrapped.on_delta = std::move(sink.on_delta);
  wrapped.on_done = [done = std::move(sink.on_done), stats = stats_, metrics = metrics_,
                     provider = inner_->name(), model = request.model,
                     started](ProviderOutcome outcome) mutable {
    auto latency = Clock::now() - started;
    double seconds = std::chrono::duration<double>(latency).count();
    if (auto* result = std::get_if<ChatResult>(&outcome)) {
      stats->End(true, true, latency, "");
      if (metrics != nullptr) {
        metrics->ProviderRequest(provider, model, "ok", seconds);
        if (result->usage) metrics->Tokens(provider, model, *result->usage);
      }
    } else {
      const auto& error = std::get<ProviderError>(outcome);
      bool counted = error.code != "cancelled" && error.code != "deadline_exceeded";
      stats->End(counted, false, latency, error.code + ": " + error.message);
      if (metrics != nullptr) metrics->ProviderRequest(provider, model, error.code, seconds);
    }
    if (done) done(std::move(outcome));
  };
  return inner_->Start(request, std::move(wrapped));
}

}  // namespace anima::broker
