#include "gateway/state_watcher.h"

#include <algorithm>

#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace {
constexpr std::chrono::milliseconds kFirstBackoff{100};
}  // namespace

StateWatcher::StateWatcher(std::shared_ptr<grpc::ChannelInterface> channel,
                           std::chrono::milliseconds interval,
                           std::chrono::milliseconds max_backoff)
    : stub_(anima::v1::Router::NewStub(std::move(channel))),
      interval_(interval),
      max_backoff_(std::max(max_backoff, kFirstBackoff)),
      thread_([this] { Run(); }) {}

StateWatcher::~StateWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    if (current_ != nullptr) current_->TryCancel();
  }
  wake_.notify_all();
  thread_.join();
}

std::optional<anima::v1::ConsciousnessState> StateWatcher::Latest() const {
  std::lock_guard<std::mutex> lock(mu_);
  return latest_;
}

bool StateWatcher::Live() const {
  std::lock_guard<std::mutex> lock(mu_);
  return latest_.has_value();
}

void StateWatcher::Run() {
  std::chrono::milliseconds backoff = kFirstBackoff;
  for (;;) {
    grpc::ClientContext context;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      current_ = &context;
    }
    anima::v1::WatchStateRequest request;
    request.set_interval_ms(interval_.count());
    auto reader = stub_->WatchState(&context, request);
    anima::v1::ConsciousnessState state;
    while (reader->Read(&state)) {
      std::lock_guard<std::mutex> lock(mu_);
      latest_ = state;
      backoff = kFirstBackoff;  // the stream worked: the next failure retries quickly
    }
    grpc::Status status = reader->Finish();
    std::unique_lock<std::mutex> lock(mu_);
    current_ = nullptr;
    latest_.reset();
    if (stop_) return;
    spdlog::debug("router WatchState ended ({}: {}); retrying in {} ms",
                  static_cast<int>(status.error_code()), status.error_message(), backoff.count());
    wake_.wait_for(lock, backoff, [this] { return stop_; });
    backoff = std::min(backoff * 2, max_backoff_);
  }
}

}  // namespace anima::gateway
