#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "grpcpp/grpcpp.h"

namespace anima::gateway {

// Polls the router's grpc.health.v1.Health/Check (overall status, service "") on its own thread
// and remembers whether the answer was SERVING. /readyz reads ready().
class ReadinessProbe {
 public:
  ReadinessProbe(std::shared_ptr<grpc::ChannelInterface> channel,
                 std::chrono::milliseconds interval);
  ~ReadinessProbe();  // stops the thread

  bool ready() const { return ready_.load(std::memory_order_relaxed); }

 private:
  void Run();
  bool CheckOnce();

  std::shared_ptr<grpc::ChannelInterface> channel_;
  std::chrono::milliseconds interval_;
  std::atomic<bool> ready_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace anima::gateway
