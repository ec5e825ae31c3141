#include "services/router/priority_scheduler.h"

#include <algorithm>

namespace anima::router {

namespace {
constexpr int Index(Priority p) { return static_cast<int>(p); }
constexpr double kDrainSmoothing = 0.2;
constexpr int64_t kUnknownRetryAfterMs = 1000;
}  // namespace

const char* PriorityName(Priority p) {
  switch (p) {
    case Priority::kHigh:
      return "high";
    case Priority::kNormal:
      return "normal";
    case Priority::kLow:
      return "low";
  }
  return "normal";
}

bool ParsePriority(const std::string& name, Priority* out) {
  if (name == "high") {
    *out = Priority::kHigh;
  } else if (name == "normal") {
    *out = Priority::kNormal;
  } else if (name == "low") {
    *out = Priority::kLow;
  } else {
    return false;
  }
  return true;
}

PriorityScheduler::PriorityScheduler(Options options, Clock clock)
    : options_(options), clock_(std::move(clock)) {}

bool PriorityScheduler::CanStartLocked(Priority p) const {
  if (p == Priority::kHigh) return in_flight_[0] < options_.high_in_flight;
  return in_flight_[1] + in_flight_[2] < options_.max_in_flight;
}

void PriorityScheduler::StartLocked(Priority p, uint64_t ticket) {
  ++in_flight_[Index(p)];
  ++started_[Index(p)];
  running_[ticket] = p;
}

PriorityScheduler::Admission PriorityScheduler::Submit(Priority p, const std::string& session,
                                                       StartFn start) {
  Admission admission{Admission::kQueued, 0, 0};
  {
    std::lock_guard lock(mu_);
    admission.ticket = next_ticket_++;
    // Work that is already waiting goes first: a newcomer only starts at once if its queue
    // (and, for normal and low, the queue of the other class) is empty.
    bool waiting = queues_[Index(p)].size > 0 ||
                   (p != Priority::kHigh && (queues_[1].size > 0 || queues_[2].size > 0));
    if (!waiting && CanStartLocked(p)) {
      StartLocked(p, admission.ticket);
      admission.kind = Admission::kStarted;
    } else if (queues_[Index(p)].size >= options_.queue_capacity[Index(p)]) {
      ++rejected_[Index(p)];
      admission.kind = Admission::kRejected;
      admission.retry_after_ms = RetryAfterMsLocked(p);
      return admission;
    } else {
      Enqueue(p, Waiting{admission.ticket, session, std::move(start), clock_()});
      queued_[admission.ticket] = p;
      return admission;
    }
  }
  start(admission.ticket);
  return admission;
}

void PriorityScheduler::Enqueue(Priority p, Waiting w) {
  ClassQueue& q = queues_[Index(p)];
  auto& fifo = q.by_session[w.session];
  if (fifo.empty()) q.order.push_back(w.session);
  fifo.push_back(std::move(w));
  ++q.size;
}

PriorityScheduler::Waiting PriorityScheduler::PopLocked(Priority p) {
  ClassQueue& q = queues_[Index(p)];
  std::string session = q.order.front();
  q.order.pop_front();
  auto it = q.by_session.find(session);
  Waiting w = std::move(it->second.front());
  it->second.pop_front();
  if (it->second.empty()) {
    q.by_session.erase(it);
  } else {
    q.order.push_back(session);  // the session goes to the back of the rotation
  }
  --q.size;
  queued_.erase(w.ticket);
  auto now = clock_();
  if (q.last_drain != std::chrono::steady_clock::time_point{}) {
    double ms = std::chrono::duration<double, std::milli>(now - q.last_drain).count();
    q.drain_interval_ms = q.drain_interval_ms == 0
                              ? ms
                              : (1 - kDrainSmoothing) * q.drain_interval_ms + kDrainSmoothing * ms;
  }
  q.last_drain = now;
  return w;
}

bool PriorityScheduler::NextLocked(Priority* p, Waiting* w) {
  if (queues_[0].size > 0 && CanStartLocked(Priority::kHigh)) {
    *p = Priority::kHigh;
    *w = PopLocked(*p);
    return true;
  }
  if (queues_[1].size + queues_[2].size == 0 || !CanStartLocked(Priority::kNormal)) return false;
  int cycle = std::max(1, options_.normal_weight + options_.low_weight);
  bool prefer_normal = wrr_credit_ % cycle < options_.normal_weight;
  Priority chosen = prefer_normal ? Priority::kNormal : Priority::kLow;
  if (queues_[Index(chosen)].size == 0) {
    chosen = prefer_normal ? Priority::kLow : Priority::kNormal;
  }
  wrr_credit_ = (wrr_credit_ + 1) % cycle;
  *p = chosen;
  *w = PopLocked(chosen);
  return true;
}

namespace {
// Start callbacks can finish at once and call Finish again (a request answered from memory).
// Only the outermost Finish on a thread runs callbacks, so the stack stays flat however long the
// queue is.
thread_local bool tl_in_finish = false;
thread_local std::deque<std::pair<PriorityScheduler::StartFn, uint64_t>>* tl_pending = nullptr;
}  // namespace

void PriorityScheduler::Finish(uint64_t ticket) {
  std::vector<std::pair<StartFn, uint64_t>> to_start;
  {
    std::lock_guard lock(mu_);
    auto it = running_.find(ticket);
    if (it == running_.end()) return;
    --in_flight_[Index(it->second)];
    running_.erase(it);
    Priority p;
    Waiting w;
    while (NextLocked(&p, &w)) {
      StartLocked(p, w.ticket);
      to_start.emplace_back(std::move(w.start), w.ticket);
    }
  }
  if (tl_in_finish) {
    for (auto& item : to_start) tl_pending->push_back(std::move(item));
    return;
  }
  std::deque<std::pair<StartFn, uint64_t>> pending(std::make_move_iterator(to_start.begin()),
                                                   std::make_move_iterator(to_start.end()));
  tl_in_finish = true;
  tl_pending = &pending;
  while (!pending.empty()) {
    auto [start, t] = std::move(pending.front());
    pending.pop_front();
    start(t);
  }
  tl_in_finish = false;
  tl_pending = nullptr;
}

bool PriorityScheduler::Withdraw(uint64_t ticket) {
  std::lock_guard lock(mu_);
  auto it = queued_.find(ticket);
  if (it == queued_.end()) return false;
  ClassQueue& q = queues_[Index(it->second)];
  queued_.erase(it);
  for (auto s = q.by_session.begin(); s != q.by_session.end(); ++s) {
    auto& fifo = s->second;
    auto w = std::find_if(fifo.begin(), fifo.end(),
                          [ticket](const Waiting& x) { return x.ticket == ticket; });
    if (w == fifo.end()) continue;
    fifo.erase(w);
    --q.size;
    if (fifo.empty()) {
      q.order.remove(s->first);
      q.by_session.erase(s);
    }
    return true;
  }
  return false;
}

int64_t PriorityScheduler::RetryAfterMsLocked(Priority p) const {
  const ClassQueue& q = queues_[Index(p)];
  if (q.drain_interval_ms <= 0) return kUnknownRetryAfterMs;
  double ms = q.drain_interval_ms * static_cast<double>(std::max<size_t>(q.size, 1));
  return std::clamp<int64_t>(static_cast<int64_t>(ms), 10, 60000);
}

PriorityScheduler::Stats PriorityScheduler::stats() {
  std::lock_guard lock(mu_);
  Stats s;
  for (int i = 0; i < kPriorityCount; ++i) {
    s.queue_depth[i] = queues_[i].size;
    s.in_flight[i] = in_flight_[i];
    s.rejected[i] = rejected_[i];
    s.started[i] = started_[i];
  }
  return s;
}

}  // namespace anima::router
