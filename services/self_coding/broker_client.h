#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "anima/v1/llm_broker.pb.h"
#include "services/self_coding/cancel_token.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace anima::selfcoding {

// The one broker call the pipeline makes. Implementations return Cancelled promptly once
// `cancel` fires. Thread-safe.
class BrokerClient {
 public:
  virtual ~BrokerClient() = default;
  virtual absl::StatusOr<anima::v1::CompletionResponse> Complete(
      const anima::v1::CompletionRequest& request, CancelToken* cancel) = 0;
};

// Calls anima.v1.LlmBroker/Complete over `channel` with a deadline and the request id as
// x-request-id metadata.
std::unique_ptr<BrokerClient> MakeGrpcBrokerClient(std::shared_ptr<grpc::Channel> channel,
                                                   std::chrono::milliseconds deadline);

}  // namespace anima::selfcoding
