#include "services/router/router_service.h"

#include <set>

#include "services/common/identity.h"
#include "services/router/dispatch_reactor.h"
#include "services/router/watch_reactor.h"

namespace anima::router {

RouterService::RouterService(const Downstreams& downstreams, const RouterConfig* config,
                             StatePoller* state, DispatchCounters* counters,
                             prometheus::Registry& registry, RouterOptions options,
                             ConversationStore* memory)
    : broker_(anima::v1::LlmBroker::NewStub(downstreams.broker)),
      self_coding_(downstreams.self_coding ? anima::v1::SelfCoding::NewStub(downstreams.self_coding)
                                           : nullptr),
      config_(config),
      scheduler_(config->scheduler),
      state_(state),
      counters_(counters),
      metrics_(registry),
      options_(options),
      own_memory_(memory == nullptr ? std::make_unique<ConversationMemory>(options.memory)
                                    : nullptr),
      memory_(memory != nullptr ? memory : own_memory_.get()) {
  for (const auto& [name, channel] : downstreams.modules) {
    modules_[name] = anima::v1::Module::NewStub(channel);
  }
}

RouterService::~RouterService() = default;

grpc::ServerWriteReactor<anima::v1::Event>* RouterService::Dispatch(
    grpc::CallbackServerContext* context, const anima::v1::Envelope* envelope) {
  auto* reactor =
      new DispatchReactor(DispatchDeps{broker_.get(), self_coding_.get(), &modules_, config_,
                                       &scheduler_, state_, counters_, &metrics_, memory_},
                          context, envelope);
  reactor->Admit();
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::GetState(grpc::CallbackServerContext* context,
                                                  const anima::v1::GetStateRequest* request,
                                                  anima::v1::ConsciousnessState* response) {
  *response = state_->Snapshot(request->connections());
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<anima::v1::ConsciousnessState>* RouterService::WatchState(
    grpc::CallbackServerContext* context, const anima::v1::WatchStateRequest* request) {
  auto interval = request->interval_ms() > 0 ? std::chrono::milliseconds(request->interval_ms())
                                             : options_.watch_interval;
  return new WatchReactor(state_, interval);
}

grpc::ServerUnaryReactor* RouterService::ListModels(grpc::CallbackServerContext* context,
                                                    const anima::v1::ListModelsRequest* request,
                                                    anima::v1::ListModelsResponse* response) {
  struct Call {
    grpc::ClientContext context;
    anima::v1::ListModelsRequest request;
  };
  auto call = std::make_shared<Call>();
  call->request = *request;
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto id = context->client_metadata().find("x-request-id");
  if (id != context->client_metadata().end()) {
    call->context.AddMetadata("x-request-id", std::string(id->second.data(), id->second.size()));
  }
  common::AttachIdentity(common::IdentityOf(*context), &call->context);
  auto* reactor = context->DefaultReactor();
  // `response` stays valid until Finish, so the broker's answer is written into it directly.
  broker_->async()->ListModels(
      &call->context, &call->request, response, [reactor, call](grpc::Status status) {
        if (!status.ok()) {
          status =
              grpc::Status(status.error_code(), "llm-broker ListModels: " + status.error_message());
        }
        reactor->Finish(status);
      });
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::ListRoutes(grpc::CallbackServerContext* context,
                                                    const anima::v1::ListRoutesRequest*,
                                                    anima::v1::ListRoutesResponse* response) {
  std::set<std::string> types = BuiltInTypes();
  for (const auto& [type, priority] : config_->priorities) types.insert(type);
  for (const auto& module : config_->modules)
    types.insert(module.types.begin(), module.types.end());
  for (const auto& type : types) {
    auto* route = response->add_routes();
    route->set_type(type);
    route->set_priority(PriorityName(config_->PriorityOf(type)));
    if (const ModuleRoute* module = config_->ModuleFor(type)) {
      route->set_module(module->name);
    } else if (type == "chat") {
      route->set_module("llm-broker");
    } else if (type == "consciousness_query") {
      route->set_module("router");
    } else if (IsBuiltInType(type)) {
      route->set_module("self-coding");
    }  // else: a priority without a module; Dispatch answers unknown_type
  }
  response->set_default_priority(PriorityName(config_->default_priority));
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace anima::router
