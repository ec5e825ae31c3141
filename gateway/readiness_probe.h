#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "grpcpp/grpcpp.h"

namespace anima::gateway {

class Admission;

// Polls the router on its own thread: grpc.health.v1.Health/Check (overall status, service "")
// every `interval`, remembering whether the answer was SERVING (/readyz reads ready()); and, when
// the router turns ready and every 30 s while it stays so, Router.ListRoutes, whose priority
// classes it gives to `admission` (when not null).
class ReadinessProbe {
 public:
  ReadinessProbe(std::shared_ptr<grpc::ChannelInterface> channel,
                 std::chrono::milliseconds interval, Admission* admission = nullptr);
  ~ReadinessProbe();  // stops the thread

  bool ready() const { return ready_.load(std::memory_order_relaxed); }

 private:
  void Run();
  bool CheckOnce();
  bool FetchRoutes();

  std::shared_ptr<grpc::ChannelInterface> channel_;
  std::chrono::milliseconds interval_;
  Admission* const admission_;
  std::atomic<bool> ready_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace anima::gateway
