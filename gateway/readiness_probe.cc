#include "gateway/readiness_probe.h"

#include <algorithm>
#include <string>
#include <vector>

#include "anima/v1/router.grpc.pb.h"
#include "gateway/admission.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace {
constexpr auto kRoutesRefresh = std::chrono::seconds(30);
constexpr auto kRoutesRetry = std::chrono::seconds(5);
}  // namespace

ReadinessProbe::ReadinessProbe(std::shared_ptr<grpc::ChannelInterface> channel,
                               std::chrono::milliseconds interval, Admission* admission)
    : channel_(std::move(channel)), interval_(interval), admission_(admission) {
  thread_ = std::thread([this] { Run(); });
}

ReadinessProbe::~ReadinessProbe() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void ReadinessProbe::Run() {
  // A router that comes back may come back with another configuration: routes are fetched
  // again whenever it turns ready, then every 30 s (every 5 s while the fetch fails).
  bool attempted = false, routes_current = false;
  auto routes_at = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    bool ready = CheckOnce();
    ready_.store(ready, std::memory_order_relaxed);
    auto since = std::chrono::steady_clock::now() - routes_at;
    if (!ready) {
      attempted = false;
    } else if (admission_ &&
               (!attempted || since > (routes_current ? kRoutesRefresh : kRoutesRetry))) {
      attempted = true;
      routes_current = FetchRoutes();
      routes_at = std::chrono::steady_clock::now();
    }
    lock.lock();
    wake_.wait_for(lock, interval_, [this] { return stop_; });
  }
}

bool ReadinessProbe::CheckOnce() {
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::max(interval_, std::chrono::milliseconds(1000)));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status =
      stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);  // service ""
  return status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

bool ReadinessProbe::FetchRoutes() {
  auto stub = anima::v1::Router::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  anima::v1::ListRoutesResponse response;
  grpc::Status status = stub->ListRoutes(&context, anima::v1::ListRoutesRequest(), &response);
  if (!status.ok()) {
    spdlog::warn("router ListRoutes: {}; admission holds nothing until it answers",
                 status.error_message());
    return false;
  }
  std::map<std::string, std::string> priorities;
  for (const auto& route : response.routes()) priorities[route.type()] = route.priority();
  admission_->SetRoutes(std::move(priorities), response.default_priority());
  return true;
}

}  // namespace anima::gateway
