#pragma once

#include <chrono>
#include <memory>
#include <mutex>

#include "anima/v1/introspection.pb.h"
#include "grpcpp/support/server_callback.h"
#include "services/router/state_poller.h"

namespace anima::router {

// Streams the state to one watcher (Router.WatchState): the current state at once, then after
// polls, at most one every `interval`. One write in flight; a snapshot that arrives while a write
// is pending replaces the older pending one, so a slow watcher only ever gets the latest.
class WatchReactor final : public grpc::ServerWriteReactor<anima::v1::ConsciousnessState> {
 public:
  WatchReactor(StatePoller* state, std::chrono::milliseconds interval);

 private:
  // The poller calls the sink; the sink forwards to the reactor until the reactor is done.
  struct Sink {
    std::mutex mu;
    WatchReactor* reactor = nullptr;
  };

  void Offer(const anima::v1::ConsciousnessState& state);
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  void FinishOnce(const grpc::Status& status);

  StatePoller* state_;
  std::chrono::milliseconds interval_;
  std::shared_ptr<Sink> sink_;
  int listener_ = 0;
  std::mutex mu_;
  anima::v1::ConsciousnessState current_;
  anima::v1::ConsciousnessState pending_;
  bool has_pending_ = false;
  bool writing_ = false;
  bool done_ = false;
  std::chrono::steady_clock::time_point next_send_{};
};

}  // namespace anima::router
