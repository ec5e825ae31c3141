#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <vector>

namespace anima::selfcoding {

// Set once to stop a job: the broker call in flight is cancelled through its callback and a
// sandboxed process sees cancelled() within one poll interval. Thread-safe.
class CancelToken {
 public:
  // Callbacks run under the token's lock, so once Remove() returns its callback is not running
  // and never will; they must be quick and must not touch the token.
  void Cancel() {
    std::lock_guard lock(mu_);
    if (cancelled_.exchange(true)) return;
    for (auto& cb : callbacks_) cb();
    callbacks_.clear();
  }
  bool cancelled() const { return cancelled_.load(); }

  // Runs `cb` on Cancel(), or at once when already cancelled. Returns an id for Remove().
  int OnCancel(std::function<void()> cb) {
    {
      std::lock_guard lock(mu_);
      if (!cancelled_) {
        callbacks_.push_back(std::move(cb));
        return static_cast<int>(callbacks_.size()) - 1;
      }
    }
    cb();
    return -1;
  }
  // Forgets callback `id` (its captures may be about to die). Safe after Cancel().
  void Remove(int id) {
    std::lock_guard lock(mu_);
    if (id >= 0 && id < static_cast<int>(callbacks_.size())) callbacks_[id] = [] {};
  }

 private:
  std::mutex mu_;
  std::atomic<bool> cancelled_{false};
  std::vector<std::function<void()>> callbacks_;
};

}  // namespace anima::selfcoding
