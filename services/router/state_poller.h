#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "anima/v1/introspection.grpc.pb.h"
#include "grpcpp/channel.h"
#include "services/router/conversation_store.h"
#include "services/router/priority_scheduler.h"

namespace anima::router {

// Counters of the router's own dispatch path, read by the poller to describe the router.
struct DispatchCounters {
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> handled{0};
  std::atomic<int64_t> failed{0};
};

// A back-end service the router depends on.
struct Backend {
  std::string name;  // "llm-broker", "self-coding"
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
};

// Polls every back end on its own thread: Introspection/Describe for its modules, falling back
// to grpc.health.v1 when Describe is not implemented; an unreachable back end is one module with
// status down. Keeps the latest modules and pushes a fresh ConsciousnessState to listeners after
// every poll. Thread-safe.
class StatePoller {
 public:
  using Listener = std::function<void(const anima::v1::ConsciousnessState&)>;

  // `memory` (may be null; outlives the poller) is reported as the module "router/memory".
  StatePoller(std::vector<Backend> backends, std::chrono::milliseconds interval,
              const DispatchCounters* counters, const ConversationStore* memory = nullptr);
  ~StatePoller();

  // The scheduler whose queues are reported (depth in `load`, one module per class). Call
  // before Start().
  void SetScheduler(PriorityScheduler* scheduler, PriorityScheduler::Options options);

  void Start();
  void Stop();
  // Runs one poll now (also used by tests and at start-up).
  void PollOnce();

  // The latest state; `connections` is the caller's (the gateway's) connection count.
  anima::v1::ConsciousnessState Snapshot(int64_t connections);

  int Subscribe(Listener listener);
  void Unsubscribe(int id);

 private:
  std::vector<anima::v1::ModuleStatus> Describe(const Backend& backend);
  anima::v1::ModuleStatus RouterModule(std::chrono::steady_clock::time_point now);
  void AddQueueModules(std::vector<anima::v1::ModuleStatus>* modules);
  anima::v1::ModuleStatus MemoryModule() const;

  std::vector<Backend> backends_;
  std::chrono::milliseconds interval_;
  const DispatchCounters* counters_;
  const ConversationStore* memory_;
  PriorityScheduler* scheduler_ = nullptr;
  PriorityScheduler::Options scheduler_options_;
  uint64_t last_rejected_[kPriorityCount] = {0, 0, 0};

  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::vector<anima::v1::ModuleStatus> modules_;
  double cpu_percent_ = 0;
  int64_t rss_bytes_ = 0;
  std::map<int, Listener> listeners_;
  int next_listener_ = 1;

  // Previous poll, for rates.
  std::chrono::steady_clock::time_point last_poll_{};
  double last_cpu_seconds_ = 0;
  int64_t last_handled_ = 0;
  int64_t last_failed_ = 0;
  std::string last_active_;

  std::thread thread_;
};

}  // namespace anima::router
