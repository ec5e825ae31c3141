#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "anima/v1/llm_broker.grpc.pb.h"
#include "anima/v1/router.grpc.pb.h"
#include "prometheus/registry.h"
#include "services/router/conversation_memory.h"
#include "services/router/state_poller.h"

namespace anima::router {

struct RouterOptions {
  // Default deadline per request type, lowered by the client's timeout_ms.
  std::chrono::milliseconds chat_deadline{120000};
  std::chrono::milliseconds query_deadline{5000};
  std::chrono::milliseconds watch_interval{5000};
  ConversationMemory::Limits memory;
};

class RouterMetrics;

// anima.v1.Router: routes each envelope to the module that handles its type and streams the
// module's events back. Built-in routes today: chat -> llm-broker, consciousness_query -> the
// router's own state. Every stream ends with exactly one terminal event; failures of the
// downstream call become error events (see error_mapping.h), never a failed Dispatch status.
class RouterService final : public anima::v1::Router::CallbackService {
 public:
  RouterService(std::shared_ptr<grpc::Channel> broker, StatePoller* state,
                DispatchCounters* counters, prometheus::Registry& registry, RouterOptions options);
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
  StatePoller* state_;
  DispatchCounters* counters_;
  std::unique_ptr<RouterMetrics> metrics_;
  RouterOptions options_;
  ConversationMemory memory_;
};

}  // namespace anima::router
