#include "services/router/watch_reactor.h"

namespace anima::router {

WatchReactor::WatchReactor(StatePoller* state, std::chrono::milliseconds interval)
    : state_(state), interval_(interval), sink_(std::make_shared<Sink>()) {
  sink_->reactor = this;
  Offer(state_->Snapshot(0));
  listener_ = state_->Subscribe([sink = sink_](const anima::v1::ConsciousnessState& s) {
    std::lock_guard lock(sink->mu);
    if (sink->reactor != nullptr) sink->reactor->Offer(s);
  });
}

void WatchReactor::Offer(const anima::v1::ConsciousnessState& state) {
  bool start = false;
  {
    std::lock_guard lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (done_ || now < next_send_) return;
    // A little slack, so a poll that lands just before the interval is not skipped.
    next_send_ = now + interval_ - std::chrono::milliseconds(50);
    if (writing_) {
      pending_ = state;
      has_pending_ = true;
    } else {
      current_ = state;
      writing_ = true;
      start = true;
    }
  }
  if (start) StartWrite(&current_);
}

void WatchReactor::OnWriteDone(bool ok) {
  bool start = false;
  {
    std::lock_guard lock(mu_);
    writing_ = false;
    if (ok && has_pending_) {
      current_ = std::move(pending_);
      has_pending_ = false;
      writing_ = true;
      start = true;
    }
  }
  if (start) StartWrite(&current_);
  if (!ok) FinishOnce(grpc::Status::CANCELLED);
}

void WatchReactor::OnCancel() { FinishOnce(grpc::Status::CANCELLED); }

void WatchReactor::FinishOnce(const grpc::Status& status) {
  {
    std::lock_guard lock(mu_);
    if (done_) return;
    done_ = true;
  }
  Finish(status);
}

void WatchReactor::OnDone() {
  {
    std::lock_guard lock(sink_->mu);
    sink_->reactor = nullptr;
  }
  state_->Unsubscribe(listener_);
  delete this;
}

}  // namespace anima::router
