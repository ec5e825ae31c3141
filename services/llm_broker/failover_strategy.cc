#include "services/llm_broker/failover_strategy.h"

#include <algorithm>
#include <mutex>
#include <random>

namespace anima::broker {
namespace {

double DefaultJitter() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

class FailoverCall : public StrategyCall, public std::enable_shared_from_this<FailoverCall> {
 public:
  FailoverCall(std::shared_ptr<Scheduler> scheduler, const RetryPolicy& policy, ChatRequest request,
               std::vector<std::shared_ptr<Provider>> candidates, StrategySink sink)
      : scheduler_(std::move(scheduler)),
        policy_(policy),
        request_(std::move(request)),
        candidates_(std::move(candidates)),
        sink_(std::move(sink)) {}

  void StartAttempt() {
    std::shared_ptr<Provider> provider;
    ChatRequest attempt_request;
    uint64_t generation = 0;
    {
      std::unique_lock lock(mu_);
      if (finished_) return;
      waiting_ = false;
      if (cancelled_) return FinishLocked(lock, Failure("cancelled", "the request was cancelled"));
      if (Clock::now() >= request_.deadline) {
        return FinishLocked(lock, Failure("deadline_exceeded", "the request deadline passed"));
      }
      provider = candidates_[index_];
      attempt_request = request_;
      if (attempt_request.model.empty()) attempt_request.model = provider->default_model();
      attempt_started_ = Clock::now();
      generation = ++generation_;
    }
    auto self = shared_from_this();
    ProviderSink sink;
    sink.on_delta = [self](std::string_view delta) { self->OnDelta(delta); };
    sink.on_done = [self, generation](ProviderOutcome outcome) {
      self->OnAttemptDone(generation, std::move(outcome));
    };
    auto call = provider->Start(attempt_request, std::move(sink));
    std::shared_ptr<ProviderCall> to_cancel;
    {
      std::lock_guard lock(mu_);
      if (generation_ == generation && !finished_) current_ = call;
      if (cancelled_) to_cancel = call;
    }
    if (to_cancel != nullptr) to_cancel->Cancel();
  }

  void Cancel() override {
    std::shared_ptr<ProviderCall> current;
    {
      std::unique_lock lock(mu_);
      if (cancelled_ || finished_) return;
      cancelled_ = true;
      current = current_;
      if (waiting_) {
        // Between attempts: nothing upstream to stop, end now (the timer finds finished_).
        return FinishLocked(lock, Failure("cancelled", "the request was cancelled"));
      }
    }
    if (current != nullptr) current->Cancel();
  }

 private:
  void OnDelta(std::string_view delta) {
    {
      std::lock_guard lock(mu_);
      if (finished_ || cancelled_) return;
      streamed_ = true;
    }
    if (sink_.on_delta) sink_.on_delta(delta);
  }

  void OnAttemptDone(uint64_t generation, ProviderOutcome outcome) {
    std::unique_lock lock(mu_);
    if (generation != generation_) return;
    ++generation_;  // a late Start() return must not install this finished call as current_
    current_.reset();
    provider_time_ += Clock::now() - attempt_started_;
    if (finished_) return;
    if (auto* result = std::get_if<ChatResult>(&outcome)) {
      StrategyOutcome done;
      done.result = std::move(*result);
      return FinishLocked(lock, std::move(done));
    }
    ProviderError error = std::move(std::get<ProviderError>(outcome));
    if (error.provider.empty()) error.provider = candidates_[index_]->name();
    RecordCause(error);
    if (cancelled_ || error.code == "cancelled") {
      return FinishLocked(lock, Failure("cancelled", "the request was cancelled"));
    }
    if (error.code == "deadline_exceeded" || Clock::now() >= request_.deadline) {
      return FinishLocked(lock, Failure("deadline_exceeded", "the request deadline passed"));
    }
    if (streamed_ || !error.retryable) {
      return FinishLocked(lock, Failure("provider_error"));
    }
    // A provider that refused the call itself (breaker open, too many calls in flight) would only
    // be waited on: the next candidate may answer now. The last one is still retried.
    bool refused = error.code == "circuit_open" || error.code == "concurrency_limit";
    bool has_next = index_ + 1 < candidates_.size();
    std::chrono::milliseconds delay{0};
    bool retry_same = attempt_ < candidates_[index_]->max_retries() && !(refused && has_next);
    if (retry_same) {
      if (error.retry_after) {
        if (*error.retry_after > policy_.max_retry_after) {
          retry_same = false;
        } else {
          delay = *error.retry_after;
        }
      } else {
        auto backoff = policy_.initial_backoff * (1LL << std::min(attempt_, 16));
        backoff = std::min<std::chrono::milliseconds>(backoff, policy_.max_backoff);
        double j = policy_.jitter ? policy_.jitter() : DefaultJitter();
        delay = std::chrono::milliseconds(static_cast<int64_t>(backoff.count() * (1 - 0.25 * j)));
      }
      if (retry_same && Clock::now() + delay >= request_.deadline) retry_same = false;
    }
    if (retry_same) {
      ++attempt_;
    } else if (has_next) {
      ++index_;
      attempt_ = 0;
      delay = std::chrono::milliseconds(0);
    } else {
      return FinishLocked(lock, Failure("provider_error"));
    }
    auto self = shared_from_this();
    if (delay.count() == 0) {
      lock.unlock();
      StartAttempt();
      return;
    }
    waiting_ = true;
    wait_started_ = Clock::now();
    lock.unlock();
    scheduler_->RunAfter(delay, [self] {
      {
        std::lock_guard lock(self->mu_);
        self->provider_time_ += Clock::now() - self->wait_started_;
      }
      self->StartAttempt();
    });
  }

  void RecordCause(const ProviderError& error) {
    for (auto& cause : causes_) {
      if (cause.provider == error.provider) {
        cause = error;
        return;
      }
    }
    causes_.push_back(error);
  }

  // An empty `message` names every cause.
  StrategyOutcome Failure(std::string code, std::string message = {}) const {
    return FailedOutcome(std::move(code), std::move(message), causes_);
  }

  // Ends the request: called with mu_ held, releases it before calling the sink.
  void FinishLocked(std::unique_lock<std::mutex>& lock, StrategyOutcome outcome) {
    if (finished_) return;
    finished_ = true;
    outcome.provider_time = provider_time_;
    auto sink = std::move(sink_.on_done);
    sink_ = StrategySink();
    current_.reset();
    lock.unlock();
    if (sink) sink(std::move(outcome));
  }

  std::shared_ptr<Scheduler> scheduler_;
  const RetryPolicy policy_;
  const ChatRequest request_;
  const std::vector<std::shared_ptr<Provider>> candidates_;
  StrategySink sink_;

  std::mutex mu_;
  size_t index_ = 0;
  int attempt_ = 0;
  uint64_t generation_ = 0;
  bool streamed_ = false;
  bool cancelled_ = false;
  bool finished_ = false;
  bool waiting_ = false;
  std::shared_ptr<ProviderCall> current_;
  std::vector<ProviderError> causes_;
  Clock::time_point attempt_started_;
  Clock::time_point wait_started_;
  Clock::duration provider_time_{0};
};

}  // namespace

FailoverStrategy::FailoverStrategy(std::shared_ptr<Scheduler> scheduler, RetryPolicy policy)
    : scheduler_(std::move(scheduler)), policy_(std::move(policy)) {}

std::shared_ptr<StrategyCall> FailoverStrategy::Start(
    const ChatRequest& request, std::vector<std::shared_ptr<Provider>> candidates,
    StrategySink sink) {
  auto call = std::make_shared<FailoverCall>(scheduler_, policy_, request, std::move(candidates),
                                             std::move(sink));
  call->StartAttempt();
  return call;
}

}  // namespace anima::broker
