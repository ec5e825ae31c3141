#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "anima/v1/llm_broker.grpc.pb.h"
#include "anima/v1/module.grpc.pb.h"
#include "anima/v1/router.grpc.pb.h"
#include "anima/v1/self_coding.grpc.pb.h"
#include "services/common/identity.h"
#include "services/router/conversation_store.h"
#include "services/router/priority_scheduler.h"
#include "services/router/router_config.h"
#include "services/router/router_metrics.h"
#include "services/router/state_poller.h"

namespace anima::router {

// What a Dispatch call needs; owned by RouterService and outliving every call.
struct DispatchDeps {
  anima::v1::LlmBroker::Stub* broker;
  anima::v1::SelfCoding::Stub* self_coding;  // null when not deployed
  const std::map<std::string, std::unique_ptr<anima::v1::Module::Stub>>* modules;  // by name
  const RouterConfig* config;
  PriorityScheduler* scheduler;
  StatePoller* state;
  DispatchCounters* counters;
  RouterMetrics* metrics;
  ConversationStore* memory;
};

// One Router.Dispatch call: admitted by the scheduler (started, queued or rejected with
// `overloaded`), then routed to the module that handles its type, whose events it relays. The
// caller's identity (services/common/identity.h) goes with every downstream call it makes, and
// its conversation memory is the caller's principal's.
//
// A chat asks the conversation store for its history and goes on in the store's callback (inline
// for the in-process store, on a Redis I/O thread otherwise); after the answer, the turn is
// stored and the response sent once the store has it, so the next turn reads it whichever
// router replica serves it. A store that fails costs the memory, never the chat
// (anima_router_memory_unavailable_total).
//
// Lifetime: one reference for gRPC (dropped in OnDone), one for each downstream call in progress
// and one while the conversation store is asked; the reactor deletes itself when the last goes.
// Threading: Emit() may be called from any gRPC thread, from the conversation store's thread and
// from another reactor's thread (a queued request is started by whoever frees its slot). The queue
// and flags are guarded by mu_; Start*/Finish and the scheduler are called without holding it.
class DispatchReactor final : public grpc::ServerWriteReactor<anima::v1::Event> {
 public:
  DispatchReactor(DispatchDeps deps, grpc::CallbackServerContext* context,
                  const anima::v1::Envelope* envelope);

  // Hands the request to the scheduler. Call once, right after construction.
  void Admit();

 private:
  void Route(uint64_t ticket);
  void StartChat();
  // Sends the chat to the broker with `remembered` as its earlier turns.
  void SendChat(const ChatHistory& remembered);
  void StartSelfCoding();
  void StartModule();
  void ChatDone(const anima::v1::CompletionResponse& completion);
  void EmitChatResponse(const anima::v1::CompletionResponse& completion);
  // Sets the downstream deadline (the type's, lowered by timeout_ms and by the caller's own
  // deadline), request id and identity, and takes the reference the downstream call holds.
  void PrepareDownstream();

  void Emit(anima::v1::Event event, bool terminal);
  void EmitError(anima::v1::ErrorEvent error);
  // The end of a unary self-coding call (Cancel, List): `answer` as the terminal event when it
  // succeeded, else its error; then the call's reference is released.
  void EndUnaryCall(const grpc::Status& status, anima::v1::Event answer);
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  void Release();

  DispatchDeps deps_;
  grpc::CallbackServerContext* context_;
  anima::v1::Envelope envelope_;
  Priority priority_;
  std::chrono::steady_clock::time_point arrived_;
  common::Identity identity_;
  std::string type_label_;  // for metrics
  std::string request_id_;
  std::string conversation_id_;

  grpc::ClientContext downstream_;
  anima::v1::CompletionRequest request_;
  anima::v1::CompletionResponse response_;
  bool have_response_ = false;
  anima::v1::SubmitRequest submit_;
  anima::v1::WatchRequest watch_;
  anima::v1::CancelRequest cancel_request_;
  anima::v1::CancelResponse cancel_response_;
  anima::v1::ListJobsRequest list_request_;
  anima::v1::ListJobsResponse list_response_;
  anima::v1::ModuleRequest module_request_;

  std::atomic<int> refs_{1};
  std::mutex mu_;
  std::deque<anima::v1::Event> queue_;
  bool writing_ = false;
  bool terminal_queued_ = false;
  bool finished_ = false;
  uint64_t ticket_ = 0;   // the scheduler's ticket, once admitted
  bool running_ = false;  // started by the scheduler and not yet finished there
  std::string outcome_;
};

}  // namespace anima::router
