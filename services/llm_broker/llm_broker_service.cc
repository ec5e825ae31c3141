#include "services/llm_broker/llm_broker_service.h"

#include <deque>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/common/grpc_server.h"
#include "services/common/process.h"
#include "spdlog/spdlog.h"

namespace anima::broker {
namespace {

namespace v1 = anima::v1;

ChatRequest ToChatRequest(const grpc::CallbackServerContext& context,
                          const v1::CompletionRequest& in, bool stream) {
  ChatRequest out;
  out.request_id = in.request_id();
  if (out.request_id.empty()) {
    out.request_id = common::RequestIdOf(context);
    if (out.request_id == "-") out.request_id = common::NewRequestId();
  }
  for (const auto& m : in.messages()) out.messages.push_back({m.role(), m.content()});
  out.system = in.system();
  out.model = in.model();
  out.provider = in.provider();
  out.strategy = in.strategy();
  if (in.has_temperature()) out.temperature = in.temperature();
  if (in.has_max_tokens()) out.max_tokens = in.max_tokens();
  out.stream = stream;
  auto deadline = context.deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    auto left = deadline - std::chrono::system_clock::now();
    out.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
  }
  return out;
}

void FillUsage(const std::optional<Usage>& usage, v1::Usage* out) {
  if (!usage) return;
  out->set_prompt_tokens(usage->prompt_tokens);
  out->set_completion_tokens(usage->completion_tokens);
  out->set_total_tokens(usage->total_tokens);
}

// PROTOCOL.md `candidates` (fanout): every provider's outcome, in provider order.
void FillCandidates(const std::vector<ProviderOutcome>& candidates, v1::CompletionResponse* out) {
  for (const auto& outcome : candidates) {
    auto* c = out->add_candidates();
    if (const auto* result = std::get_if<ChatResult>(&outcome)) {
      c->set_provider(result->provider);
      c->set_model(result->model);
      c->set_message(result->text);
      c->set_finish_reason(result->finish_reason);
      FillUsage(result->usage, c->mutable_usage());
      c->set_latency_ms(result->latency.count());
    } else {
      const auto& error = std::get<ProviderError>(outcome);
      c->set_provider(error.provider);
      c->mutable_error()->set_provider(error.provider);
      c->mutable_error()->set_code(error.code);
      c->mutable_error()->set_message(error.message);
      c->mutable_error()->set_http_status(error.http_status);
    }
  }
}

// The answer, and what every provider call of the request cost (`billed`).
void FillResponse(const StrategyOutcome& outcome, Clock::duration elapsed,
                  v1::CompletionResponse* out) {
  const ChatResult& result = *outcome.result;
  out->set_message(result.text);
  out->set_provider(result.provider);
  out->set_model(result.model);
  out->set_finish_reason(result.finish_reason);
  FillUsage(result.usage, out->mutable_usage());
  out->set_latency_ms(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count());
  FillCandidates(outcome.candidates, out);
  out->set_cost_usd(outcome.billed.cost_usd);
  FillUsage(outcome.billed.usage, out->mutable_billed_usage());
  out->set_provider_time_us(
      std::chrono::duration_cast<std::chrono::microseconds>(outcome.provider_time).count());
}

grpc::Status InvalidStatus(const absl::Status& status) {
  v1::BrokerFailure failure;
  failure.set_code("invalid_message");
  failure.set_message(std::string(status.message()));
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(status.message()),
                      failure.SerializeAsString());
}

// Logs the end of a request and records the broker's own overhead.
void RecordEnd(LlmBrokerService& service, const ChatRequest& request,
               const StrategyOutcome& outcome, Clock::duration elapsed) {
  bool ok = outcome.result.has_value();
  service.RequestEnded(ok);
  if (auto* metrics = service.metrics()) {
    metrics->Overhead(std::chrono::duration<double>(elapsed - outcome.provider_time).count());
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
  if (ok) {
    spdlog::debug("req={} completed provider={} model={} finish={} ms={}", request.request_id,
                  outcome.result->provider, outcome.result->model, outcome.result->finish_reason,
                  ms);
  } else {
    spdlog::info("req={} failed code={} ms={}: {}", request.request_id, outcome.code, ms,
                 outcome.message);
    for (const auto& c : outcome.causes) {
      spdlog::info("req={} cause provider={} code={} http={}: {}", request.request_id, c.provider,
                   c.code, c.http_status, c.message);
    }
  }
}

class CompleteReactor : public grpc::ServerUnaryReactor {
 public:
  CompleteReactor(LlmBrokerService& service, grpc::CallbackServerContext* context,
                  const v1::CompletionRequest& request, v1::CompletionResponse* response)
      : service_(service),
        response_(response),
        request_(ToChatRequest(*context, request, /*stream=*/false)) {
    service_.RequestStarted();
    StrategySink sink;
    sink.on_done = [this](StrategyOutcome outcome) { OnOutcome(std::move(outcome)); };
    auto call = service_.broker().Start(request_, std::move(sink));
    if (!call.ok()) {
      service_.RequestEnded(false);
      spdlog::info("req={} rejected: {}", request_.request_id, call.status().ToString());
      Finish(InvalidStatus(call.status()));
      return;
    }
    std::lock_guard lock(mu_);
    call_ = *std::move(call);
  }

  void OnCancel() override {
    std::shared_ptr<StrategyCall> call;
    {
      std::lock_guard lock(mu_);
      call = call_;
    }
    if (call != nullptr) call->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  void OnOutcome(StrategyOutcome outcome) {
    auto elapsed = Clock::now() - started_;
    RecordEnd(service_, request_, outcome, elapsed);
    if (outcome.result) {
      FillResponse(outcome, elapsed, response_);
      Finish(grpc::Status::OK);
    } else {
      Finish(FailureStatus(outcome));
    }
    // `this` may be deleted from here on.
  }

  LlmBrokerService& service_;
  v1::CompletionResponse* response_;
  const Clock::time_point started_ = Clock::now();
  ChatRequest request_;
  std::mutex mu_;
  std::shared_ptr<StrategyCall> call_;
};

class StreamReactor : public grpc::ServerWriteReactor<v1::CompletionChunk> {
 public:
  StreamReactor(LlmBrokerService& service, grpc::CallbackServerContext* context,
                const v1::CompletionRequest& request)
      : service_(service), request_(ToChatRequest(*context, request, /*stream=*/true)) {
    service_.RequestStarted();
    StrategySink sink;
    sink.on_delta = [this](std::string_view delta) { OnDelta(delta); };
    sink.on_done = [this](StrategyOutcome outcome) { OnOutcome(std::move(outcome)); };
    auto call = service_.broker().Start(request_, std::move(sink));
    if (!call.ok()) {
      service_.RequestEnded(false);
      spdlog::info("req={} rejected: {}", request_.request_id, call.status().ToString());
      Finish(InvalidStatus(call.status()));
      return;
    }
    std::lock_guard lock(mu_);
    call_ = *std::move(call);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    writing_ = false;
    pending_.pop_front();
    if (!ok && !broken_) {
      // The client is gone: stop the provider; Finish follows its (cancelled) outcome.
      broken_ = true;
      pending_.clear();
      auto call = call_;
      lock.unlock();
      if (call != nullptr) call->Cancel();
      lock.lock();
    }
    MaybeWrite(lock);
  }

  void OnCancel() override {
    std::shared_ptr<StrategyCall> call;
    {
      std::lock_guard lock(mu_);
      call = call_;
    }
    if (call != nullptr) call->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  void OnDelta(std::string_view delta) {
    std::unique_lock lock(mu_);
    if (broken_) return;
    // The front chunk may be in flight; later deltas are merged into one chunk while waiting.
    if (pending_.size() >= 2 && pending_.back().has_delta()) {
      pending_.back().mutable_delta()->append(delta);
    } else {
      pending_.emplace_back().set_delta(std::string(delta));
    }
    MaybeWrite(lock);
  }

  void OnOutcome(StrategyOutcome outcome) {
    auto elapsed = Clock::now() - started_;
    RecordEnd(service_, request_, outcome, elapsed);
    std::unique_lock lock(mu_);
    if (outcome.result) {
      auto* done = pending_.emplace_back().mutable_done();
      FillResponse(outcome, elapsed, done);
      final_status_ = grpc::Status::OK;
    } else {
      final_status_ = FailureStatus(outcome);
    }
    upstream_done_ = true;
    MaybeWrite(lock);
  }

  // Starts the next write, or finishes once everything is written. Called with mu_ held;
  // releases it before Finish (after which OnDone may delete this).
  void MaybeWrite(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finished_) return;
    if (!pending_.empty() && !broken_) {
      writing_ = true;
      StartWrite(&pending_.front());
      return;
    }
    if (!upstream_done_) return;
    finished_ = true;
    grpc::Status status = broken_ && final_status_.ok()
                              ? grpc::Status(grpc::StatusCode::CANCELLED, "client went away")
                              : final_status_;
    lock.unlock();
    Finish(status);
  }

  LlmBrokerService& service_;
  const Clock::time_point started_ = Clock::now();
  ChatRequest request_;
  std::mutex mu_;
  std::shared_ptr<StrategyCall> call_;
  std::deque<v1::CompletionChunk> pending_;  // front is in flight while writing_
  bool writing_ = false;
  bool broken_ = false;
  bool upstream_done_ = false;
  bool finished_ = false;
  grpc::Status final_status_;
};

std::string Rfc3339(Clock::time_point at) {
  auto since = Clock::now() - at;
  absl::Time t = absl::Now() - absl::FromChrono(since);
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

}  // namespace

grpc::Status FailureStatus(const StrategyOutcome& outcome) {
  v1::BrokerFailure failure;
  failure.set_code(outcome.code);
  failure.set_message(outcome.message);
  for (const auto& c : outcome.causes) {
    auto* cause = failure.add_causes();
    cause->set_provider(c.provider);
    cause->set_code(c.code);
    cause->set_message(c.message);
    cause->set_http_status(c.http_status);
  }
  if (outcome.retry_after) failure.set_retry_after_ms(outcome.retry_after->count());
  failure.set_provider_time_us(
      std::chrono::duration_cast<std::chrono::microseconds>(outcome.provider_time).count());
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  if (outcome.code == "provider_error") code = grpc::StatusCode::UNAVAILABLE;
  if (outcome.code == "deadline_exceeded") code = grpc::StatusCode::DEADLINE_EXCEEDED;
  if (outcome.code == "cancelled") code = grpc::StatusCode::CANCELLED;
  if (outcome.code == "invalid_message") code = grpc::StatusCode::INVALID_ARGUMENT;
  return grpc::Status(code, outcome.message, failure.SerializeAsString());
}

LlmBrokerService::LlmBrokerService(std::shared_ptr<Broker> broker,
                                   std::shared_ptr<BrokerMetrics> metrics)
    : broker_(std::move(broker)), metrics_(std::move(metrics)) {}

grpc::ServerUnaryReactor* LlmBrokerService::Complete(grpc::CallbackServerContext* context,
                                                     const v1::CompletionRequest* request,
                                                     v1::CompletionResponse* response) {
  return new CompleteReactor(*this, context, *request, response);
}

grpc::ServerWriteReactor<v1::CompletionChunk>* LlmBrokerService::StreamComplete(
    grpc::CallbackServerContext* context, const v1::CompletionRequest* request) {
  return new StreamReactor(*this, context, *request);
}

grpc::ServerUnaryReactor* LlmBrokerService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest* request,
                                                       v1::ListModelsResponse* response) {
  for (const auto& provider : broker_->providers()) {
    std::vector<std::string> models = provider->models();
    if (models.empty()) models.push_back(provider->default_model());
    for (const auto& model : models) {
      auto* info = response->add_models();
      info->set_id(provider->name() + "/" + model);
      info->set_provider(provider->name());
      info->set_model(model);
    }
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

BrokerIntrospectionService::BrokerIntrospectionService(
    const LlmBrokerService* service, std::vector<std::shared_ptr<InstrumentedProvider>> providers)
    : service_(service), providers_(std::move(providers)) {}

v1::DescribeResponse BrokerIntrospectionService::Snapshot() const {
  v1::DescribeResponse out;
  out.set_service("llm-broker");
  auto now = Clock::now();
  int down = 0;
  auto* self = out.add_modules();
  for (const auto& provider : providers_) {
    ProviderHealth h = provider->stats().Snapshot(now);
    if (auto* breaker = provider->breaker()) {
      // An open breaker sends nothing to the provider: down; half-open is a probation: degraded.
      auto state = breaker->state();
      if (state == CircuitBreaker::State::kOpen) {
        h.state = ProviderHealth::State::kDown;
        h.detail = "circuit breaker open" + (h.detail.empty() ? "" : ": " + h.detail);
      } else if (state == CircuitBreaker::State::kHalfOpen &&
                 h.state == ProviderHealth::State::kHealthy) {
        h.state = ProviderHealth::State::kDegraded;
        h.detail = "circuit breaker half-open";
      }
    }
    auto* m = out.add_modules();
    m->set_name("llm-broker/" + provider->name());
    m->set_service("llm-broker");
    m->set_kind("provider");
    switch (h.state) {
      case ProviderHealth::State::kHealthy:
        m->set_health(v1::MODULE_HEALTH_HEALTHY);
        break;
      case ProviderHealth::State::kDegraded:
        m->set_health(v1::MODULE_HEALTH_DEGRADED);
        break;
      case ProviderHealth::State::kDown:
        m->set_health(v1::MODULE_HEALTH_DOWN);
        ++down;
        break;
    }
    m->set_in_flight(h.in_flight);
    m->set_requests_per_second(h.requests_per_second);
    m->set_error_rate(h.error_rate);
    m->set_p95_ms(h.p95_ms);
    if (h.last_active != Clock::time_point{}) m->set_last_active(Rfc3339(h.last_active));
    (*m->mutable_counters())["requests_total"] = static_cast<double>(h.requests);
    (*m->mutable_counters())["errors_total"] = static_cast<double>(h.errors);
    m->set_detail(h.detail);
  }
  self->set_name("llm-broker");
  self->set_service("llm-broker");
  self->set_kind("service");
  self->set_in_flight(service_ != nullptr ? service_->in_flight() : 0);
  if (service_ != nullptr) {
    (*self->mutable_counters())["requests_total"] = static_cast<double>(service_->requests());
    (*self->mutable_counters())["failures_total"] = static_cast<double>(service_->failures());
  }
  if (!providers_.empty() && down == static_cast<int>(providers_.size())) {
    self->set_health(v1::MODULE_HEALTH_DEGRADED);
    self->set_detail("every provider is down");
  } else {
    self->set_health(v1::MODULE_HEALTH_HEALTHY);
  }
  return out;
}

grpc::ServerUnaryReactor* BrokerIntrospectionService::Describe(grpc::CallbackServerContext* context,
                                                               const v1::DescribeRequest* request,
                                                               v1::DescribeResponse* response) {
  *response = Snapshot();
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace anima::broker
