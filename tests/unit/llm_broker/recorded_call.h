#pragma once

// One provider call run to its end, with what its sink received: for tests of the providers
// against a real upstream (the simulator binary), where each call has to be waited for.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "services/llm_broker/provider.h"

namespace anima::broker::testing {

struct RecordedCall {
  std::vector<std::string> deltas;         // in the order they arrived
  std::optional<ProviderOutcome> outcome;  // nullopt: none came within the timeout
  // The deltas, concatenated.
  std::string Joined() const;
};

// Starts `request` on `provider` and waits up to `timeout` for its outcome.
RecordedCall CallAndWait(Provider& provider, const ChatRequest& request,
                         std::chrono::milliseconds timeout = std::chrono::seconds(20));

}  // namespace anima::broker::testing
