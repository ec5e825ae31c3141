#include "services/common/grpc_metrics.h"

#include <chrono>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "services/common/metrics.h"

namespace anima::common {

namespace {

using Clock = std::chrono::steady_clock;
using grpc::experimental::InterceptionHookPoints;

struct RpcMetrics {
  prometheus::Family<prometheus::Counter>& handled;
  prometheus::Family<prometheus::Histogram>& seconds;

  void Record(const char* full_method, int code, Clock::time_point start) {
    // "/anima.v1.Router/Dispatch" -> service "anima.v1.Router", method "Dispatch".
    std::string_view path = full_method != nullptr ? full_method : "";
    if (!path.empty() && path.front() == '/') path.remove_prefix(1);
    auto slash = path.find('/');
    std::string service(path.substr(0, slash));
    std::string method(slash == std::string_view::npos ? "" : path.substr(slash + 1));
    handled.Add({{"service", service}, {"method", method}, {"code", StatusCodeName(code)}})
        .Increment();
    seconds.Add({{"service", service}, {"method", method}}, LatencyBuckets())
        .Observe(std::chrono::duration<double>(Clock::now() - start).count());
  }
};

class ServerMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  ServerMetricsInterceptor(grpc::experimental::ServerRpcInfo* info, RpcMetrics* metrics)
      : info_(info), metrics_(metrics), start_(Clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->Record(info_->method(), methods->GetSendStatus().error_code(), start_);
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  RpcMetrics* metrics_;
  Clock::time_point start_;
};

class ServerFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ServerFactory(prometheus::Registry& registry)
      : metrics_{prometheus::BuildCounter()
                     .Name("anima_grpc_server_handled_total")
                     .Help("RPCs completed by this server, by method and status code.")
                     .Register(registry),
                 prometheus::BuildHistogram()
                     .Name("anima_grpc_server_handling_seconds")
                     .Help("Time from an RPC's arrival to its status, in seconds.")
                     .Register(registry)} {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ServerMetricsInterceptor(info, &metrics_);
  }

 private:
  RpcMetrics metrics_;
};

class ClientMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  ClientMetricsInterceptor(grpc::experimental::ClientRpcInfo* info, RpcMetrics* metrics)
      : info_(info), metrics_(metrics), start_(Clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_STATUS)) {
      metrics_->Record(info_->method(), methods->GetRecvStatus()->error_code(), start_);
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ClientRpcInfo* info_;
  RpcMetrics* metrics_;
  Clock::time_point start_;
};

class ClientFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ClientFactory(prometheus::Registry& registry)
      : metrics_{prometheus::BuildCounter()
                     .Name("anima_grpc_client_handled_total")
                     .Help("RPCs this process made that completed, by method and status code.")
                     .Register(registry),
                 prometheus::BuildHistogram()
                     .Name("anima_grpc_client_handling_seconds")
                     .Help("Time from starting an outgoing RPC to its status, in seconds.")
                     .Register(registry)} {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new ClientMetricsInterceptor(info, &metrics_);
  }

 private:
  RpcMetrics metrics_;
};

}  // namespace

const char* StatusCodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code < 0 || code > 16) return "UNKNOWN";
  return kNames[code];
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeServerMetricsFactory(
    prometheus::Registry& registry) {
  return std::make_unique<ServerFactory>(registry);
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> MakeClientMetricsFactory(
    prometheus::Registry& registry) {
  return std::make_unique<ClientFactory>(registry);
}

}  // namespace anima::common
