#include "services/llm_broker/instrumented_provider.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/llm_broker/billing.h"

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

namespace {

// A call that never reached the provider: nothing to cancel.
class RejectedCall : public ProviderCall {
 public:
  void Cancel() override {}
};

}  // namespace

InstrumentedProvider::InstrumentedProvider(std::shared_ptr<Provider> inner,
                                           std::shared_ptr<BrokerMetrics> metrics,
                                           ProviderGuards guards)
    : inner_(std::move(inner)),
      metrics_(std::move(metrics)),
      stats_(std::make_shared<ProviderStats>()),
      guards_(std::move(guards)) {
  if (guards_.breaker != nullptr && metrics_ != nullptr) {
    metrics_->BreakerState(inner_->name(), 0);
    guards_.breaker->OnTransition(
        [metrics = metrics_, name = inner_->name()](CircuitBreaker::State state) {
          metrics->BreakerTransition(name, static_cast<int>(state));
        });
  }
}

std::optional<ModelPrice> InstrumentedProvider::PriceOf(const std::string& model) const {
  auto it = guards_.prices.find(model);
  if (it == guards_.prices.end()) return std::nullopt;
  return it->second;
}

std::shared_ptr<ProviderCall> InstrumentedProvider::Start(const ChatRequest& request,
                                                          ProviderSink sink) {
  auto reject = [&](std::string code, std::string message,
                    std::optional<std::chrono::milliseconds> retry_after) {
    ProviderError e;
    e.provider = inner_->name();
    e.code = std::move(code);
    e.message = std::move(message);
    e.retryable = true;
    e.retry_after = retry_after;
    if (metrics_ != nullptr) metrics_->ProviderRequest(inner_->name(), request.model, e.code, 0);
    if (sink.on_done) sink.on_done(std::move(e));
    return std::make_shared<RejectedCall>();
  };
  if (guards_.max_concurrency > 0 && ++*in_flight_ > guards_.max_concurrency) {
    --*in_flight_;
    return reject("concurrency_limit",
                  absl::StrCat(guards_.max_concurrency, " calls are already in flight"),
                  std::nullopt);
  }
  if (guards_.breaker != nullptr && !guards_.breaker->Allow()) {
    if (guards_.max_concurrency > 0) --*in_flight_;
    return reject("circuit_open", "the circuit breaker is open after repeated failures",
                  guards_.breaker->RetryIn());
  }
  stats_->Begin();
  auto started = Clock::now();
  ProviderSink wrapped;
  wrapped.on_delta = std::move(sink.on_delta);
  wrapped.on_done = [done = std::move(sink.on_done), stats = stats_, metrics = metrics_,
                     provider = inner_->name(), model = request.model, started,
                     breaker = guards_.breaker, price = PriceOf(request.model),
                     in_flight = guards_.max_concurrency > 0 ? in_flight_ : nullptr](
                        ProviderOutcome outcome) mutable {
    if (in_flight != nullptr) --*in_flight;
    auto latency = Clock::now() - started;
    double seconds = std::chrono::duration<double>(latency).count();
    if (auto* result = std::get_if<ChatResult>(&outcome)) {
      stats->End(true, true, latency, "");
      if (breaker != nullptr) breaker->Record(true);
      if (result->usage && price) result->cost_usd = CostOf(*result->usage, *price);
      if (metrics != nullptr) {
        metrics->ProviderRequest(provider, model, "ok", seconds);
        if (result->usage) {
          metrics->Tokens(provider, model, *result->usage);
          if (price) metrics->Cost(provider, model, result->cost_usd);
        }
      }
    } else {
      const auto& error = std::get<ProviderError>(outcome);
      bool counted = error.code != "cancelled" && error.code != "deadline_exceeded";
      stats->End(counted, false, latency, error.code + ": " + error.message);
      if (breaker != nullptr) {
        if (counted && error.retryable) {
          breaker->Record(false);
        } else {
          breaker->Release();
        }
      }
      if (metrics != nullptr) metrics->ProviderRequest(provider, model, error.code, seconds);
    }
    if (done) done(std::move(outcome));
  };
  return inner_->Start(request, std::move(wrapped));
}

}  // namespace anima::broker
