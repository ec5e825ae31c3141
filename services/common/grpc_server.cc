#include "services/common/grpc_server.h"

#include <mutex>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "services/common/grpc_metrics.h"

namespace anima::common {

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const std::string& address, const std::vector<grpc::Service*>& services,
    prometheus::Registry& metrics) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // gRPC's default health service is built without protobuf descriptors, so reflection could list
  // grpc.health.v1.Health but not describe it. Naming one of its messages links health.proto's
  // descriptor into every binary (the generated code registers it with the pool reflection reads).
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  auto server = std::unique_ptr<GrpcServer>(new GrpcServer());
  grpc::ServerBuilder builder;
  // Clients reconnect, and so re-resolve, at least every 5 minutes, which spreads them over new
  // replicas; a stream in progress gets 30 minutes to finish (self-coding jobs are long).
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, 5 * 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 30 * 60 * 1000);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &server->port_);
  for (auto* service : services) builder.RegisterService(service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(MakeServerMetricsFactory(metrics));
  builder.experimental().SetInterceptorCreators(std::move(factories));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", address));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  return server;
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() + grace);
}

// The first channel MakeChannel made, never freed (below). A pointer with external linkage, not
// a static local the compiler may drop: LeakSanitizer must find it reachable.
std::shared_ptr<grpc::Channel>* first_channel = nullptr;

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           prometheus::Registry* metrics) {
  grpc::ChannelArguments args;
  // Reconnect attempts start 100 ms after a failure and back off to at most 1 s, so a restarted
  // peer is used again quickly. gRPC also uses MIN_RECONNECT_BACKOFF as the least time one
  // connection attempt is given (its "min connect timeout"): 2 s, or a busy machine fails the
  // first call. It may exceed MAX: they bound different things.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Each channel owns its connections: sharing subchannels across channels (gRPC's global pool)
  // tied a new channel to an address to the backoff state of an old one.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // A dns:/// target of a headless Service resolves to every pod: spread calls over them.
  args.SetLoadBalancingPolicyName("round_robin");
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  if (metrics != nullptr) factories.push_back(MakeClientMetricsFactory(*metrics));
  auto channel = grpc::experimental::CreateCustomChannelWithInterceptors(
      target, grpc::InsecureChannelCredentials(), args, std::move(factories));
  // gRPC 1.51 shares one completion queue among the channels' callback calls and shuts it down
  // when the last channel goes; a channel created while that happens can abort the process
  // (grpc_cq_internal_unref assertion, seen when tests destroy and create channels). The first
  // channel is kept for the life of the process, deliberately never freed, so that queue lives
  // as long as the process does.
  static std::once_flag once;
  std::call_once(once, [&] { first_channel = new std::shared_ptr<grpc::Channel>(channel); });
  return channel;
}

std::string RequestIdOf(const grpc::ServerContextBase& context) {
  const auto& md = context.client_metadata();
  auto it = md.find(kRequestIdKey);
  if (it == md.end()) return "-";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace anima::common
