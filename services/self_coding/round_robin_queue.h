#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <map>
#include <optional>
#include <string>

namespace anima::selfcoding {

// A FIFO per key, served in turn: Pop() takes the oldest item of the key whose turn it is, then
// that key goes to the back of the line if it still has items. A key with many items therefore
// gets one of every N pops when N keys are waiting, however early it queued. A key that joins
// waits behind the keys already in line, not behind their items. Not thread-safe.
template <typename T>
class RoundRobinQueue {
 public:
  void Push(const std::string& key, T item) {
    auto& items = queues_[key];
    if (items.empty()) turns_.push_back(key);
    items.push_back(std::move(item));
    size_++;
  }

  std::optional<T> Pop() {
    if (turns_.empty()) return std::nullopt;
    std::string key = std::move(turns_.front());
    turns_.pop_front();
    auto it = queues_.find(key);
    T item = std::move(it->second.front());
    it->second.pop_front();
    size_--;
    if (it->second.empty()) {
      queues_.erase(it);
    } else {
      turns_.push_back(std::move(key));
    }
    return item;
  }

  // Removes `item` from `key`'s queue; false when it is not there.
  bool Remove(const std::string& key, const T& item) {
    auto it = queues_.find(key);
    if (it == queues_.end()) return false;
    auto found = std::find(it->second.begin(), it->second.end(), item);
    if (found == it->second.end()) return false;
    it->second.erase(found);
    size_--;
    if (it->second.empty()) {
      queues_.erase(it);
      turns_.erase(std::find(turns_.begin(), turns_.end(), key));
    }
    return true;
  }

  bool Contains(const std::string& key, const T& item) const {
    auto it = queues_.find(key);
    return it != queues_.end() &&
           std::find(it->second.begin(), it->second.end(), item) != it->second.end();
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t size(const std::string& key) const {
    auto it = queues_.find(key);
    return it == queues_.end() ? 0 : it->second.size();
  }
  // Keys with at least one item.
  size_t keys() const { return turns_.size(); }

 private:
  std::map<std::string, std::deque<T>> queues_;  // only keys with items
  std::deque<std::string> turns_;                // each key of queues_ once, next turn first
  size_t size_ = 0;
};

}  // namespace anima::selfcoding
