#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "anima/v1/router.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "services/common/identity.h"

namespace anima::gateway::testing {

// An in-process Router for gateway tests, serving grpc.health.v1 as well. Dispatch answers:
//   chat: "hang" never answers until cancelled; "fail:UNAVAILABLE" (or another code name, e.g.
//     INTERNAL, DEADLINE_EXCEEDED) ends with that status and no event; otherwise chat_delta
//     "Hel", "lo!" when stream, then chat_response "echo: <message>".
//   consciousness_query: one consciousness_state.
//   self_coding_request: accepted, one progress, a succeeded result.
//   chat "error:<code>": an error event with that code (after chat_delta "Hel" when stream);
//     overloaded and rate_limited carry retry_after_ms 1500, provider_error one cause.
//   chat "cost:<tokens>:<usd>": the usual answer, with billed_usage.total_tokens and cost_usd.
//   chat "slow:<ms>": the usual answer, <ms> milliseconds late; "big:<n>": a chat_response whose
//     message is <n> bytes of 'x'.
//   weather and low_work (raw_json): one module frame {"type":"<type>_result","echo":<frame>};
//     low_work with "hang":true never answers until cancelled; any other raw_json type: error
//     unknown_type.
// ListRoutes: chat, consciousness_query and self_coding_request high, weather normal, low_work
// low, anything else normal.
// WatchState: a consciousness_state (load.connections 999, ts counting up) at once and then every
// interval_ms of the request, until cancelled.
class FakeRouter final : public anima::v1::Router::CallbackService {
 public:
  // Starts on 127.0.0.1:port (0: a free port); nullptr when the port cannot be bound.
  static std::unique_ptr<FakeRouter> Start(int port = 0);
  ~FakeRouter() override;

  int port() const { return port_; }
  // Stops serving: open calls are cancelled, new connections refused.
  void Stop();

  int dispatched() const { return dispatched_.load(); }
  int cancelled() const { return cancelled_.load(); }
  int watches() const { return watches_.load(); }
  int routes_listed() const { return routes_listed_.load(); }
  // The client ids of every Dispatch, in arrival order.
  std::vector<std::string> dispatched_ids();
  std::string last_request_id();
  anima::v1::Envelope last_envelope();
  // The identity metadata (x-anima-principal, ...) of the last Dispatch.
  common::Identity last_identity();

  grpc::ServerWriteReactor<anima::v1::Event>* Dispatch(grpc::CallbackServerContext* context,
                                                       const anima::v1::Envelope* request) override;
  grpc::ServerWriteReactor<anima::v1::ConsciousnessState>* WatchState(
      grpc::CallbackServerContext* context, const anima::v1::WatchStateRequest* request) override;
  // Two models: fake/fake-1 and sim/sim-large; UNAVAILABLE after FailListModels().
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const anima::v1::ListModelsRequest* request,
                                       anima::v1::ListModelsResponse* response) override;
  void FailListModels() { fail_list_models_ = true; }
  grpc::ServerUnaryReactor* ListRoutes(grpc::CallbackServerContext* context,
                                       const anima::v1::ListRoutesRequest* request,
                                       anima::v1::ListRoutesResponse* response) override;

 private:
  FakeRouter() = default;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<int> dispatched_{0};
  std::atomic<int> cancelled_{0};
  std::atomic<int> watches_{0};
  std::atomic<int> routes_listed_{0};
  std::atomic<bool> fail_list_models_{false};
  std::mutex mu_;
  std::string last_request_id_;
  anima::v1::Envelope last_envelope_;
  common::Identity last_identity_;
  std::vector<std::string> dispatched_ids_;
  friend class FakeDispatch;
};

}  // namespace anima::gateway::testing
