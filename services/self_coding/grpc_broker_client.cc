#include "anima/v1/llm_broker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "services/common/grpc_server.h"
#include "services/self_coding/broker_client.h"

namespace anima::selfcoding {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  std::string message = "llm-broker: " + status.error_message();
  anima::v1::BrokerFailure failure;
  if (!status.error_details().empty() && failure.ParseFromString(status.error_details()) &&
      !failure.code().empty()) {
    message += " (" + failure.code() + ")";
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
}

class GrpcBrokerClient : public BrokerClient {
 public:
  GrpcBrokerClient(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds deadline)
      : stub_(anima::v1::LlmBroker::NewStub(channel)), deadline_(deadline) {}

  absl::StatusOr<anima::v1::CompletionResponse> Complete(
      const anima::v1::CompletionRequest& request, CancelToken* cancel) override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline_);
    // A job is not in a hurry to fail: a broker restarting (a rolling update, a crash the
    // kubelet restarts) is waited for within the deadline instead of costing an attempt.
    context.set_wait_for_ready(true);
    if (!request.request_id().empty()) {
      context.AddMetadata(common::kRequestIdKey, request.request_id());
    }
    int id = cancel != nullptr ? cancel->OnCancel([&context] { context.TryCancel(); }) : -1;
    anima::v1::CompletionResponse response;
    grpc::Status status = stub_->Complete(&context, request, &response);
    if (cancel != nullptr) cancel->Remove(id);
    if (cancel != nullptr && cancel->cancelled()) return absl::CancelledError("cancelled");
    if (!status.ok()) return FromGrpc(status);
    return response;
  }

 private:
  std::unique_ptr<anima::v1::LlmBroker::Stub> stub_;
  std::chrono::milliseconds deadline_;
};

}  // namespace

std::unique_ptr<BrokerClient> MakeGrpcBrokerClient(std::shared_ptr<grpc::Channel> channel,
                                                   std::chrono::milliseconds deadline) {
  return std::make_unique<GrpcBrokerClient>(std::move(channel), deadline);
}

}  // namespace anima::selfcoding
