#include "gateway/readiness_probe.h"

#include <algorithm>
#include <future>
#include <string>
#include <vector>

#include "grpcpp/generic/generic_stub.h"

namespace anima::gateway {

namespace {
// grpc.health.v1 without its generated code (the package does not install it): the request
// HealthCheckRequest{service: ""} is the empty message, and SERVING is HealthCheckResponse
// {status: 1}, encoded as field 1 varint 1.
constexpr char kCheckMethod[] = "/grpc.health.v1.Health/Check";
constexpr char kServing[] = "\x08\x01";
}  // namespace

ReadinessProbe::ReadinessProbe(std::shared_ptr<grpc::ChannelInterface> channel,
                               std::chrono::milliseconds interval)
    : channel_(std::move(channel)), interval_(interval) {
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
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    ready_.store(CheckOnce(), std::memory_order_relaxed);
    lock.lock();
    wake_.wait_for(lock, interval_, [this] { return stop_; });
  }
}

bool ReadinessProbe::CheckOnce() {
  grpc::GenericStub stub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::max(interval_, std::chrono::milliseconds(1000)));
  grpc::Slice empty_message{std::string()};  // HealthCheckRequest{}
  grpc::ByteBuffer request(&empty_message, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, kCheckMethod, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  grpc::Status status = done.get_future().get();
  if (!status.ok()) return false;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes == std::string(kServing, 2);
}

}  // namespace anima::gateway
