#pragma once

#include <memory>

#include "grpcpp/support/client_interceptor.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/registry.h"

namespace anima::common {

// RED metrics for every RPC, recorded by interceptors so no handler has to remember:
//   anima_grpc_server_handled_total{service,method,code}, anima_grpc_server_handling_seconds
//   anima_grpc_client_handled_total{service,method,code}, anima_grpc_client_handling_seconds
// `service` is the gRPC service name ("anima.v1.Router"), `method` the method name.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeServerMetricsFactory(
    prometheus::Registry& registry);
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> MakeClientMetricsFactory(
    prometheus::Registry& registry);

// The canonical name of a status code, as used in the `code` label ("OK", "UNAVAILABLE").
const char* StatusCodeName(int code);

}  // namespace anima::common
