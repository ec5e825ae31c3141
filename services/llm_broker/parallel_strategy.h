#pragma once

#include <chrono>
#include <memory>

#include "services/llm_broker/strategy.h"

namespace anima::broker {

// The strategies that run several providers at once. Each candidate is tried at most once (no
// retries: the other providers are the redundancy), and every call that can no longer matter is
// cancelled, which closes its connection so it stops costing.
//  - kRace: every candidate starts at once. The first to succeed wins; when streaming, the first
//    to send a token wins at that moment (its tokens are the ones the caller sees). The others
//    are cancelled. Failures are waited out while any candidate is still running.
//  - kHedge: the first candidate starts; each further one starts `hedge_delay` after the
//    previous one, or at once when every started one has failed. Winning and cancelling as in
//    kRace.
//  - kFanout: every candidate starts at once and each runs to its end. The answer is the first
//    success in candidate (configured provider) order; `candidates` carries every outcome in
//    that order. When streaming, the chosen answer is sent as one delta at the end.
// Once the winner has sent tokens its failure is the request's failure (nothing is retried after
// tokens reached the caller). When every candidate failed the outcome is provider_error with one
// cause per provider.
enum class ParallelMode { kRace, kHedge, kFanout };

class ParallelStrategy : public Strategy {
 public:
  ParallelStrategy(ParallelMode mode, std::shared_ptr<Scheduler> scheduler,
                   std::chrono::milliseconds hedge_delay = std::chrono::milliseconds(500));

  std::shared_ptr<StrategyCall> Start(const ChatRequest& request,
                                      std::vector<std::shared_ptr<Provider>> candidates,
                                      StrategySink sink) override;

 private:
  ParallelMode mode_;
  std::shared_ptr<Scheduler> scheduler_;
  std::chrono::milliseconds hedge_delay_;
};

}  // namespace anima::broker
