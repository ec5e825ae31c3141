#pragma once

#include <functional>
#include <map>
#include <mutex>

#include "services/self_coding/job_store.h"

namespace anima::selfcoding {

// The subscribers of a JobStore's changes (JobStore::Subscribe). Thread-safe.
class JobChangeHub {
 public:
  int Subscribe(std::function<void(const JobChange&)> fn) {
    std::lock_guard lock(mu_);
    subscribers_[next_id_] = std::move(fn);
    return next_id_++;
  }

  // Waits for a Publish in progress, so the function is never called after this returns.
  void Unsubscribe(int id) {
    std::lock_guard dispatch(dispatch_mu_);
    std::lock_guard lock(mu_);
    subscribers_.erase(id);
  }

  // Calls every subscriber in turn, on this thread. Subscribers must not publish.
  void Publish(const JobChange& change) {
    std::lock_guard dispatch(dispatch_mu_);
    std::vector<std::function<void(const JobChange&)>*> targets;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, fn] : subscribers_) targets.push_back(&fn);
    }
    // Unsubscribe waits on dispatch_mu_, so the functions stay alive while they run.
    for (auto* fn : targets) (*fn)(change);
  }

 private:
  std::mutex dispatch_mu_;
  std::mutex mu_;
  std::map<int, std::function<void(const JobChange&)>> subscribers_;
  int next_id_ = 1;
};

}  // namespace anima::selfcoding
