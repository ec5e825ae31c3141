#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "anima/v1/llm_broker.grpc.pb.h"
#include "anima/v1/module.grpc.pb.h"
#include "anima/v1/router.grpc.pb.h"
#include "anima/v1/self_coding.grpc.pb.h"
#include "prometheus/registry.h"
#include "services/router/conversation_memory.h"
#include "services/router/priority_scheduler.h"
#include "services/router/router_config.h"
#include "services/router/router_metrics.h"
#include "services/router/state_poller.h"

namespace anima::router {

// The channels to everything the router dispatches to.
struct Downstreams {
  std::shared_ptr<grpc::Channel> broker;
  std::shared_ptr<grpc::Channel> self_coding;                     // null: not deployed
  std::map<std::string, std::shared_ptr<grpc::Channel>> modules;  // by module name
};

struct RouterOptions {
  std::chrono::milliseconds watch_interval{5000};
  MemoryLimits memory;  // of the in-process memory made when no store is given
};

// anima.v1.Router. Every envelope is admitted by the priority scheduler and routed by type:
// chat -> llm-broker, self_coding_* -> self-coding, consciousness_query -> the router's own
// state, any type of the routing table -> that external module (anima.v1.Module/Handle), anything
// else -> unknown_type. Every stream ends with exactly one terminal event; failures downstream
// become error events (error_mapping.h), never a failed Dispatch status.
class RouterService final : public anima::v1::Router::CallbackService {
 public:
  // `memory`: where conversations are remembered (outlives the service); null: an in-process
  // ConversationMemory with options.memory, owned by the service.
  RouterService(const Downstreams& downstreams, const RouterConfig* config, StatePoller* state,
                DispatchCounters* counters, prometheus::Registry& registry, RouterOptions options,
                ConversationStore* memory = nullptr);
  ~RouterService() override;

  PriorityScheduler& scheduler() { return scheduler_; }

  grpc::ServerWriteReactor<anima::v1::Event>* Dispatch(
      grpc::CallbackServerContext* context, const anima::v1::Envelope* envelope) override;
  grpc::ServerUnaryReactor* GetState(grpc::CallbackServerContext* context,
                                     const anima::v1::GetStateRequest* request,
                                     anima::v1::ConsciousnessState* response) override;
  grpc::ServerWriteReactor<anima::v1::ConsciousnessState>* WatchState(
      grpc::CallbackServerContext* context, const anima::v1::WatchStateRequest* request) override;
  // Forwarded to LlmBroker.ListModels with a 5 s deadline; the broker's failure status is
  // returned as is (UNAVAILABLE when it is down).
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const anima::v1::ListModelsRequest* request,
                                       anima::v1::ListModelsResponse* response) override;
  // The routing table: every built-in type, every type with a configured priority and every
  // module's types, each with its priority class and the module that handles it.
  grpc::ServerUnaryReactor* ListRoutes(grpc::CallbackServerContext* context,
                                       const anima::v1::ListRoutesRequest* request,
                                       anima::v1::ListRoutesResponse* response) override;

 private:
  std::unique_ptr<anima::v1::LlmBroker::Stub> broker_;
  std::unique_ptr<anima::v1::SelfCoding::Stub> self_coding_;
  std::map<std::string, std::unique_ptr<anima::v1::Module::Stub>> modules_;
  const RouterConfig* config_;
  PriorityScheduler scheduler_;
  StatePoller* state_;
  DispatchCounters* counters_;
  RouterMetrics metrics_;
  RouterOptions options_;
  std::unique_ptr<ConversationMemory> own_memory_;
  ConversationStore* memory_;
};

}  // namespace anima::router
