#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"

namespace anima::common {

// Builds and starts a gRPC server the way every Anima service wants one: the given services,
// grpc.health.v1 (SERVING once started, NOT_SERVING from Shutdown), server reflection, and the
// RED metrics interceptor.
class GrpcServer {
 public:
  // `address` is "host:port"; port 0 picks a free port, reported by port().
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const std::string& address, const std::vector<grpc::Service*>& services,
      prometheus::Registry& metrics);

  int port() const { return port_; }
  grpc::Server& server() { return *server_; }
  // Marks the server NOT_SERVING, then waits for in-flight RPCs up to `grace`, then cancels
  // what is left.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// A channel to another Anima service, with the client metrics interceptor and reconnect backoff
// short enough that a restarted peer is used again within about a second.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           prometheus::Registry* metrics);

// The metadata key that carries the request id between services.
inline constexpr char kRequestIdKey[] = "x-request-id";

// The request id of an incoming call, or "-" when the caller sent none.
std::string RequestIdOf(const grpc::ServerContextBase& context);

}  // namespace anima::common
