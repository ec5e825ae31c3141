#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "anima/v1/router.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace anima::gateway {

// Keeps one Router.WatchState stream open on its own thread and remembers the latest state. When
// the stream fails (the router went away, or does not serve WatchState), it reconnects with
// exponential backoff from 100 ms up to `max_backoff`; while no stream is live there is no latest
// state, so a router that is gone is not reported as it was.
class StateWatcher {
 public:
  StateWatcher(std::shared_ptr<grpc::ChannelInterface> channel, std::chrono::milliseconds interval,
               std::chrono::milliseconds max_backoff = std::chrono::seconds(5));
  ~StateWatcher();  // cancels the stream and joins the thread

  std::optional<anima::v1::ConsciousnessState> Latest() const;
  // Whether a WatchState stream is live (Latest() has a state), without copying the state.
  bool Live() const;

 private:
  void Run();

  std::unique_ptr<anima::v1::Router::Stub> stub_;
  const std::chrono::milliseconds interval_;
  const std::chrono::milliseconds max_backoff_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  grpc::ClientContext* current_ = nullptr;  // the live stream's context, to cancel it
  std::optional<anima::v1::ConsciousnessState> latest_;
  std::thread thread_;
};

}  // namespace anima::gateway
