#include "tools/bench/load_lane.h"

#include <algorithm>

namespace anima::bench {

Lane::Lane(boost::asio::io_context& io, int index, const LoadPlan& plan, LaneStats& stats)
    : index_(index), plan_(plan), stats_(stats), tick_(io), end_(io) {}

void Lane::Start() {
  if (finished_) return;
  end_.expires_at(plan_.record_until);
  end_.async_wait([this](boost::system::error_code ec) {
    if (!ec) StopSending();
  });
  if (plan_.open_loop) {
    interval_ = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(plan_.lanes / plan_.rate));
    next_due_ = plan_.start + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(index_ / plan_.rate));
    tick_.expires_at(next_due_);
    tick_.async_wait([this](boost::system::error_code ec) {
      if (!ec) OnTick();
    });
  } else {
    // Every lane begins at the same instant, after all of them have been started.
    tick_.expires_at(plan_.start);
    tick_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      for (int i = 0; i < plan_.in_flight && !stopped_; ++i) Issue(Clock::now());
    });
  }
}

void Lane::Issue(Clock::time_point scheduled) {
  if (stopped_) return;
  if (scheduled >= plan_.record_until) return StopSending();
  const bool recorded = scheduled >= plan_.record_from;
  if (recorded && plan_.budget != nullptr && plan_.budget->fetch_sub(1) <= 0) {
    return StopSending();
  }
  const uint64_t seq = ++next_seq_;
  outstanding_.emplace(seq, Outstanding{scheduled, recorded});
  if (recorded) ++stats_.sent;
  Transmit(seq);
}

void Lane::OnTick() {
  // Sends everything that is due, each with its own scheduled time: when this thread falls
  // behind, the lateness shows up in the latency instead of silently lowering the rate.
  const Clock::time_point now = Clock::now();
  while (!stopped_ && next_due_ <= now) {
    Issue(next_due_);
    next_due_ += interval_;
  }
  if (stopped_) return;
  tick_.expires_at(next_due_);
  tick_.async_wait([this](boost::system::error_code ec) {
    if (!ec) OnTick();
  });
}

void Lane::Complete(uint64_t seq, std::string_view error, Clock::time_point at,
                    std::chrono::milliseconds retry_after) {
  auto it = outstanding_.find(seq);
  if (it == outstanding_.end()) return;  // already failed (drain deadline) or not ours
  const Outstanding o = it->second;
  outstanding_.erase(it);
  if (o.recorded) {
    if (error.empty()) {
      ++stats_.ok;
      stats_.latency.Record(at - o.scheduled);
      stats_.last_answer = std::max(stats_.last_answer, at);
    } else {
      ++stats_.errors[std::string(error)];
      stats_.error_latency.Record(at - o.scheduled);
    }
  }
  if (!plan_.open_loop && !stopped_) {
    if (retry_after.count() > 0) {
      // Run on this lane's io_context, which outlives it only until its work is done: the
      // timer is that work, so the lane is still there when it fires.
      auto timer = std::make_shared<boost::asio::steady_timer>(tick_.get_executor(), retry_after);
      ++backing_off_;
      timer->async_wait([this, timer](boost::system::error_code) {
        --backing_off_;
        if (!stopped_) Issue(Clock::now());
        MaybeFinish();
      });
    } else {
      Issue(Clock::now());
    }
  }
  MaybeFinish();
}

void Lane::FailAll(std::string_view error) {
  StopSending();
  const Clock::time_point now = Clock::now();
  while (!outstanding_.empty()) Complete(outstanding_.begin()->first, error, now);
  MaybeFinish();
}

void Lane::StopSending() {
  if (stopped_) return;
  stopped_ = true;
  tick_.cancel();
  end_.cancel();
  end_.expires_at(plan_.drain_until);
  end_.async_wait([this](boost::system::error_code ec) {
    if (!ec) OnDrainDeadline();
  });
  MaybeFinish();
}

void Lane::OnDrainDeadline() {
  for (const auto& [seq, o] : outstanding_) {
    if (o.recorded) ++stats_.errors["timeout"];
  }
  outstanding_.clear();
  MaybeFinish();
}

void Lane::MaybeFinish() {
  if (finished_ || !stopped_ || !outstanding_.empty() || backing_off_ > 0) return;
  finished_ = true;
  tick_.cancel();
  end_.cancel();
  Shutdown();
}

}  // namespace anima::bench
