#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "anima/v1/llm_broker.grpc.pb.h"
#include "anima/v1/router.grpc.pb.h"
#include "anima/v1/self_coding.grpc.pb.h"
#include "prometheus/registry.h"
#include "services/router/conversation_memory.h"
#include "services/router/state_poller.h"

namespace anima::router {

struct RouterOptions {
  // Default deadline per request type, lowered by the client's timeout_ms.
  std::chrono::milliseconds chat_deadline{120000};
  std::chrono::milliseconds self_coding_deadline{std::chrono::minutes(30)};
  std::chrono::milliseconds watch_interval{5000};
  ConversationMemory::Limits memory;
};

class RouterMetrics;

// anima.v1.Router: routes each envelope to the module that handles its type and streams the
// module's events back. Built-in routes today: chat -> llm-broker, consciousness_query -> the
// router's own state, self_coding_* -> self-coding. Every stream ends with exactly one terminal
// event; failures of the downstream call become error events (see error_mapping.h), never a failed
// Dispatch status.
class RouterService final : public anima::v1::Router::CallbackService {
 public:
  // `self_coding` may be null: the service is not deployed, and its requests get unavailable.
  RouterService(std::shared_ptr<grpc::Channel> broker, std::shared_ptr<grpc::Channel> self_coding,
                StatePoller* state, DispatchCounters* counters, prometheus::Registry& registry,
                RouterOptions options);
  ~RouterService() override;

  grpc::ServerWriteReactor<anima::v1::Event>* Dispatch(
      grpc::CallbackServerContext* context, const anima::v1::Envelope* envelope) override;
  grpc::ServerUnaryReactor* GetState(grpc::CallbackServerContext* context,
                                     const anima::v1::GetStateRequest* request,
                                     anima::v1::ConsciousnessState* response) override;
  grpc::ServerWriteReactor<anima::v1::ConsciousnessState>* WatchState(
      grpc::CallbackServerContext* context, const anima::v1::WatchStateRequest* request) override;

 private:
  std::unique_ptr<anima::v1::LlmBroker::Stub> broker_;
  std::unique_ptr<anima::v1::SelfCoding::Stub> self_coding_;
  StatePoller* state_;
  DispatchCounters* counters_;
  std::unique_ptr<RouterMetrics> metrics_;
  RouterOptions options_;
  ConversationMemory memory_;
};

}  // namespace anima::router
