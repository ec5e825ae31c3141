#include "services/llm_broker/parallel_strategy.h"

#include <mutex>

namespace anima::broker {
namespace {

class ParallelCall : public StrategyCall, public std::enable_shared_from_this<ParallelCall> {
 public:
  ParallelCall(ParallelMode mode, std::shared_ptr<Scheduler> scheduler,
               std::chrono::milliseconds hedge_delay, ChatRequest request,
               std::vector<std::shared_ptr<Provider>> candidates, StrategySink sink)
      : mode_(mode),
        scheduler_(std::move(scheduler)),
        hedge_delay_(hedge_delay),
        request_(std::move(request)),
        candidates_(std::move(candidates)),
        sink_(std::move(sink)),
        slots_(candidates_.size()) {}

  void Begin() {
    if (mode_ == ParallelMode::kHedge) {
      if (LaunchNext()) ScheduleHedge();
      return;
    }
    {
      // Every slot is claimed before any provider starts: one that rejects the call inline from
      // Start() (breaker open, concurrency cap) must not look like the last one left.
      std::lock_guard lock(mu_);
      for (auto& slot : slots_) slot.started = true;
    }
    for (size_t i = 0; i < candidates_.size(); ++i) Launch(i);
  }

  // The outcome waits for the calls in flight to end: one of them may be inside the sink right
  // now, and the sink's owner may go away once on_done has run.
  void Cancel() override {
    std::vector<std::shared_ptr<ProviderCall>> calls;
    {
      std::unique_lock lock(mu_);
      if (finished_ || cancelled_) return;
      cancelled_ = true;
      calls = RunningCallsLocked(candidates_.size());
      SettleLocked(lock);
    }
    for (auto& call : calls) call->Cancel();
  }

 private:
  struct Slot {
    bool started = false;  // claimed: Start() is about to run, runs, or has run
    bool done = false;
    std::shared_ptr<ProviderCall> call;
    std::optional<ProviderOutcome> outcome;  // unset when the slot was skipped
    Clock::time_point started_at;
  };

  void ScheduleHedge() {
    std::weak_ptr<ParallelCall> weak = weak_from_this();
    scheduler_->RunAfter(hedge_delay_, [weak] {
      if (auto self = weak.lock()) {
        if (self->LaunchNext()) self->ScheduleHedge();
      }
    });
  }

  // Claims and starts the first candidate not started yet, unless the request is decided.
  // Returns whether one was started and more remain.
  bool LaunchNext() {
    size_t next = 0;
    {
      std::lock_guard lock(mu_);
      if (finished_ || cancelled_ || committed_ >= 0) return false;
      while (next < slots_.size() && slots_[next].started) ++next;
      if (next == slots_.size()) return false;
      slots_[next].started = true;
    }
    Launch(next);
    return next + 1 < slots_.size();
  }

  // Starts the claimed slot `i`, or skips it when the request was decided meanwhile (an earlier
  // candidate answered or sent a token inline from Start()).
  void Launch(size_t i) {
    {
      std::unique_lock lock(mu_);
      if (finished_ || cancelled_ || committed_ >= 0) {
        slots_[i].done = true;
        if (!finished_) SettleLocked(lock);
        return;
      }
      slots_[i].started_at = Clock::now();
      if (earliest_start_ == Clock::time_point{}) earliest_start_ = slots_[i].started_at;
    }
    ChatRequest attempt = request_;
    if (attempt.model.empty()) attempt.model = candidates_[i]->default_model();
    auto self = shared_from_this();
    ProviderSink sink;
    sink.on_delta = [self, i](std::string_view delta) { self->OnDelta(i, delta); };
    sink.on_done = [self, i](ProviderOutcome outcome) { self->OnDone(i, std::move(outcome)); };
    auto call = candidates_[i]->Start(attempt, std::move(sink));
    bool cancel = false;
    {
      std::lock_guard lock(mu_);
      if (!slots_[i].done) slots_[i].call = call;
      cancel =
          !slots_[i].done && (finished_ || cancelled_ || (committed_ >= 0 && committed_ != int(i)));
    }
    if (cancel && call != nullptr) call->Cancel();
  }

  // Only the committed candidate gets here past the checks, and its OnDone (the only other place
  // that may end the request while it runs) never overlaps its OnDelta: so the sink is not used
  // concurrently and sink_ is not reset under it.
  void OnDelta(size_t i, std::string_view delta) {
    if (mode_ == ParallelMode::kFanout) return;  // the chosen answer is sent at the end
    std::vector<std::shared_ptr<ProviderCall>> losers;
    {
      std::lock_guard lock(mu_);
      if (finished_ || cancelled_) return;
      if (committed_ < 0) {
        committed_ = static_cast<int>(i);
        losers = RunningCallsLocked(i);
      }
      if (committed_ != static_cast<int>(i)) return;
    }
    for (auto& call : losers) call->Cancel();
    if (sink_.on_delta) sink_.on_delta(delta);
  }

  void OnDone(size_t i, ProviderOutcome outcome) {
    std::vector<std::shared_ptr<ProviderCall>> losers;
    bool launch_next = false;
    {
      std::unique_lock lock(mu_);
      Slot& slot = slots_[i];
      slot.done = true;
      slot.call.reset();
      if (auto* error = std::get_if<ProviderError>(&outcome); error && error->provider.empty()) {
        error->provider = candidates_[i]->name();
      }
      slot.outcome = outcome;
      if (finished_) return;
      auto* result = std::get_if<ChatResult>(&outcome);
      if (cancelled_ || mode_ == ParallelMode::kFanout) {
        launch_next = SettleLocked(lock);
      } else if (result != nullptr) {
        if (committed_ >= 0 && committed_ != static_cast<int>(i)) return;
        losers = RunningCallsLocked(i);
        StrategyOutcome done;
        done.result = std::move(*result);
        FinishLocked(lock, std::move(done));
      } else if (committed_ == static_cast<int>(i)) {
        // Tokens of this provider reached the caller: its failure is final.
        FinishLocked(lock, Failure("provider_error"));
      } else {
        launch_next = SettleLocked(lock);
      }
    }
    for (auto& call : losers) call->Cancel();
    if (launch_next) LaunchNext();
  }

  // Ends the request once no call is in flight: "cancelled" after Cancel(), the fanout answer,
  // or provider_error. Returns true instead when a hedge should start its next candidate now
  // rather than wait for the timer. Called with mu_ held; releases it when the request ends.
  bool SettleLocked(std::unique_lock<std::mutex>& lock) {
    bool unstarted = false;
    for (const auto& s : slots_) {
      if (s.started && !s.done) return false;
      unstarted |= !s.started;
    }
    if (cancelled_) {
      FinishLocked(lock, Failure("cancelled", "the request was cancelled"));
    } else if (mode_ == ParallelMode::kFanout) {
      FinishFanout(lock);
    } else if (unstarted && mode_ == ParallelMode::kHedge) {
      return true;
    } else {
      FinishLocked(lock, Failure("provider_error"));
    }
    return false;
  }

  void FinishFanout(std::unique_lock<std::mutex>& lock) {
    StrategyOutcome out;
    for (const auto& s : slots_) {
      out.candidates.push_back(*s.outcome);
      if (!out.result) {
        if (const auto* result = std::get_if<ChatResult>(&*s.outcome)) out.result = *result;
      }
    }
    if (!out.result) {
      StrategyOutcome failure = Failure("provider_error");
      failure.candidates = std::move(out.candidates);
      return FinishLocked(lock, std::move(failure));
    }
    std::string text = out.result->text;
    auto on_delta = sink_.on_delta;
    if (request_.stream && !text.empty() && on_delta) {
      // Still under mu_: nothing else can call the sink any more (every provider is done).
      on_delta(text);
    }
    FinishLocked(lock, std::move(out));
  }

  // Calls in flight other than slot `except` (pass size() for all). Called with mu_ held.
  std::vector<std::shared_ptr<ProviderCall>> RunningCallsLocked(size_t except) {
    std::vector<std::shared_ptr<ProviderCall>> calls;
    for (size_t k = 0; k < slots_.size(); ++k) {
      if (k != except && slots_[k].started && !slots_[k].done && slots_[k].call != nullptr) {
        calls.push_back(slots_[k].call);
      }
    }
    return calls;
  }

  std::vector<ProviderError> CausesLocked() const {
    std::vector<ProviderError> causes;
    for (const auto& s : slots_) {
      if (s.outcome) {
        if (const auto* e = std::get_if<ProviderError>(&*s.outcome)) causes.push_back(*e);
      }
    }
    return causes;
  }

  // An empty `message` names every cause.
  StrategyOutcome Failure(std::string code, std::string message = {}) const {
    return FailedOutcome(std::move(code), std::move(message), CausesLocked());
  }

  // Ends the request: called with mu_ held, releases it before calling the sink.
  void FinishLocked(std::unique_lock<std::mutex>& lock, StrategyOutcome outcome) {
    if (finished_) return;
    finished_ = true;
    if (earliest_start_ != Clock::time_point{})
      outcome.provider_time = Clock::now() - earliest_start_;
    auto sink = std::move(sink_.on_done);
    sink_ = StrategySink();
    lock.unlock();
    if (sink) sink(std::move(outcome));
  }

  const ParallelMode mode_;
  std::shared_ptr<Scheduler> scheduler_;
  const std::chrono::milliseconds hedge_delay_;
  const ChatRequest request_;
  const std::vector<std::shared_ptr<Provider>> candidates_;
  StrategySink sink_;

  mutable std::mutex mu_;
  std::vector<Slot> slots_;
  int committed_ = -1;  // the candidate whose tokens the caller sees
  bool cancelled_ = false;
  bool finished_ = false;
  Clock::time_point earliest_start_{};
};

}  // namespace

ParallelStrategy::ParallelStrategy(ParallelMode mode, std::shared_ptr<Scheduler> scheduler,
                                   std::chrono::milliseconds hedge_delay)
    : mode_(mode), scheduler_(std::move(scheduler)), hedge_delay_(hedge_delay) {}

std::shared_ptr<StrategyCall> ParallelStrategy::Start(
    const ChatRequest& request, std::vector<std::shared_ptr<Provider>> candidates,
    StrategySink sink) {
  auto call = std::make_shared<ParallelCall>(mode_, scheduler_, hedge_delay_, request,
                                             std::move(candidates), std::move(sink));
  call->Begin();
  return call;
}

}  // namespace anima::broker
