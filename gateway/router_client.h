#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "anima/v1/router.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "services/common/identity.h"

namespace anima::gateway {

// One Router.Dispatch call in flight.
class DispatchCall {
 public:
  virtual ~DispatchCall() = default;
  // Asks gRPC to end the call; on_done follows with CANCELLED unless it had already ended.
  // Safe from any thread, any number of times, also after the call ended.
  virtual void Cancel() = 0;
};

// Both run on gRPC's threads, never concurrently for one call: every on_event in stream order,
// then exactly one on_done. They must not block.
struct DispatchCallbacks {
  std::function<void(anima::v1::Event)> on_event;
  std::function<void(const grpc::Status&)> on_done;
};

// The gateway's side of Router.Dispatch, on gRPC's callback API. The channel reconnects by itself,
// so a router that comes back is used again without anything done here.
class RouterClient {
 public:
  explicit RouterClient(std::shared_ptr<grpc::ChannelInterface> channel);
  // Cancels every live call and waits for their on_done.
  ~RouterClient();

  // Starts one call for `envelope` on behalf of `identity`: metadata x-request-id =
  // envelope.request_id() and the identity keys (services/common/identity.h), deadline from
  // envelope.timeout_ms() when it is set.
  std::shared_ptr<DispatchCall> Dispatch(anima::v1::Envelope envelope,
                                         const common::Identity& identity,
                                         DispatchCallbacks callbacks);

  // Router.ListModels with a 5 s deadline; `done` runs once, on a gRPC thread, and must not
  // block. Counted among the live calls: CancelAllAndWait cancels and waits for it too.
  void ListModels(std::function<void(const grpc::Status&, anima::v1::ListModelsResponse)> done);

  // Cancels every live call and waits until each has run on_done.
  void CancelAllAndWait();

 private:
  class Reactor;
  struct UnaryCall;
  void Register(const std::shared_ptr<Reactor>& call);
  void Unregister(Reactor* call);

  std::unique_ptr<anima::v1::Router::Stub> stub_;
  std::mutex mu_;
  std::condition_variable idle_;
  std::unordered_map<Reactor*, std::weak_ptr<Reactor>> live_;
  std::unordered_map<UnaryCall*, std::shared_ptr<UnaryCall>> unary_;
};

}  // namespace anima::gateway
