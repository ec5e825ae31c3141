#include "tests/unit/llm_broker/recorded_call.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <utility>

namespace anima::broker::testing {

std::string RecordedCall::Joined() const {
  std::string joined;
  for (const auto& d : deltas) joined += d;
  return joined;
}

RecordedCall CallAndWait(Provider& provider, const ChatRequest& request,
                         std::chrono::milliseconds timeout) {
  // Shared with the sink, which may still be called after a timeout.
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    RecordedCall call;
  };
  auto state = std::make_shared<State>();
  ProviderSink sink;
  sink.on_delta = [state](std::string_view d) {
    std::lock_guard lock(state->mu);
    state->call.deltas.emplace_back(d);
  };
  sink.on_done = [state](ProviderOutcome o) {
    std::lock_guard lock(state->mu);
    state->call.outcome = std::move(o);
    state->cv.notify_all();
  };
  provider.Start(request, std::move(sink));
  std::unique_lock lock(state->mu);
  state->cv.wait_for(lock, timeout, [&] { return state->call.outcome.has_value(); });
  return state->call;
}

}  // namespace anima::broker::testing
