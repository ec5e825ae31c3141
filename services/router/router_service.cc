#include "services/router/router_service.h"

#include <deque>
#include <mutex>
#include <random>

#include "absl/strings/str_format.h"
#include "services/common/grpc_server.h"
#include "services/router/chat_translation.h"
#include "services/router/error_mapping.h"
#include "services/router/router_metrics.h"
#include "spdlog/spdlog.h"

namespace anima::router {

namespace {

using anima::v1::Event;
using Clock = std::chrono::steady_clock;

std::string NewConversationId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("conv-%012x", rng() & 0xffffffffffffULL);
}

struct DispatchDeps {
  anima::v1::LlmBroker::Stub* broker;
  StatePoller* state;
  DispatchCounters* counters;
  RouterMetrics* metrics;
  const RouterOptions* options;
  ConversationMemory* memory;
};

// One Dispatch call. Owns the downstream call it starts; lives until both gRPC has called
// OnDone() and the downstream call has completed (a reference each).
//
// Threading: Emit() may be called from any gRPC thread. The queue and flags are guarded by mu_;
// Start*/Finish are called without holding it, so a reaction run inline cannot deadlock.
class DispatchReactor final : public grpc::ServerWriteReactor<Event> {
 public:
  DispatchReactor(DispatchDeps deps, grpc::CallbackServerContext* context,
                  const anima::v1::Envelope* envelope)
      : deps_(deps), context_(context), envelope_(*envelope), started_(Clock::now()) {
    deps_.counters->in_flight++;
    deps_.metrics->Started(envelope_.type());
  }

  void Route() {
    request_id_ = common::RequestIdOf(*context_);
    if (request_id_ == "-") request_id_ = envelope_.request_id();
    switch (envelope_.body_case()) {
      case anima::v1::Envelope::kChat:
        StartChat();
        return;
      case anima::v1::Envelope::kConsciousnessQuery: {
        Event event;
        *event.mutable_consciousness_state() = deps_.state->Snapshot(0);
        Emit(std::move(event), true);
        return;
      }
      case anima::v1::Envelope::kSelfCoding:
      case anima::v1::Envelope::kSelfCodingWatch:
      case anima::v1::Envelope::kSelfCodingCancel:
        EmitError(MakeError("unavailable",
                            "the self-coding service is not available in this deployment"));
        return;
      default:
        EmitError(MakeError("unknown_type",
                            "no module handles messages of type \"" + envelope_.type() + "\""));
        return;
    }
  }

 private:
  // Reads the broker's stream and hands every chunk to the reactor.
  class BrokerStream final : public grpc::ClientReadReactor<anima::v1::CompletionChunk> {
   public:
    explicit BrokerStream(DispatchReactor* parent) : parent_(parent) {}
    void Begin(anima::v1::LlmBroker::Stub* stub, grpc::ClientContext* ctx,
               const anima::v1::CompletionRequest* req) {
      stub->async()->StreamComplete(ctx, req, this);
      StartRead(&chunk_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;  // OnDone follows with the status
      if (chunk_.has_done()) {
        done_ = std::move(*chunk_.mutable_done());
        have_done_ = true;
      } else {
        Event event;
        event.mutable_chat_delta()->set_delta(chunk_.delta());
        event.mutable_chat_delta()->set_index(0);
        parent_->Emit(std::move(event), false);
      }
      StartRead(&chunk_);
    }
    void OnDone(const grpc::Status& status) override {
      if (status.ok() && have_done_) {
        parent_->ChatDone(done_);
      } else if (status.ok()) {
        parent_->EmitError(MakeError("internal", "llm-broker ended the stream without a result"));
      } else {
        parent_->EmitError(ErrorFromStatus(status, "llm-broker"));
      }
      parent_->Release();
      delete this;
    }

   private:
    DispatchReactor* parent_;
    anima::v1::CompletionChunk chunk_;
    anima::v1::CompletionResponse done_;
    bool have_done_ = false;
  };

  void StartChat() {
    conversation_id_ = envelope_.chat().conversation_id();
    if (conversation_id_.empty()) conversation_id_ = NewConversationId();
    request_ = ToCompletionRequest(envelope_, deps_.memory->History(conversation_id_));
    request_.set_request_id(request_id_);
    auto deadline = Clock::now() + deps_.options->chat_deadline;
    if (envelope_.timeout_ms() > 0) {
      deadline =
          std::min(deadline, Clock::now() + std::chrono::milliseconds(envelope_.timeout_ms()));
    }
    // The gateway's own deadline (if any) is already on context_; gRPC keeps the earlier one.
    auto system_deadline =
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline - Clock::now());
    if (context_->deadline() < system_deadline) system_deadline = context_->deadline();
    downstream_.set_deadline(system_deadline);
    downstream_.AddMetadata(common::kRequestIdKey, request_id_);
    // A cancellation that arrived already (OnCancel) is applied by gRPC when the call starts.
    refs_++;
    if (envelope_.chat().stream()) {
      auto* stream = new BrokerStream(this);
      stream->Begin(deps_.broker, &downstream_, &request_);
    } else {
      deps_.broker->async()->Complete(&downstream_, &request_, &response_,
                                      [this](grpc::Status status) {
                                        if (status.ok()) {
                                          ChatDone(response_);
                                        } else {
                                          EmitError(ErrorFromStatus(status, "llm-broker"));
                                        }
                                        Release();
                                      });
    }
  }

  void ChatDone(const anima::v1::CompletionResponse& completion) {
    deps_.memory->Append(conversation_id_, envelope_.chat().message(), completion.message());
    deps_.metrics->ConversationsStored(static_cast<double>(deps_.memory->size()));
    Event event;
    *event.mutable_chat_response() = ToChatResponse(completion, conversation_id_);
    Emit(std::move(event), true);
  }

  void EmitError(anima::v1::ErrorEvent error) {
    Event event;
    *event.mutable_error() = std::move(error);
    Emit(std::move(event), true);
  }

  void Emit(Event event, bool terminal) {
    Event* to_write = nullptr;
    {
      std::lock_guard lock(mu_);
      if (terminal_queued_ || finished_) return;
      if (terminal) {
        terminal_queued_ = true;
        outcome_ = event.has_error() ? event.error().code() : "ok";
      }
      queue_.push_back(std::move(event));
      if (!writing_) {
        writing_ = true;
        to_write = &queue_.front();
      }
    }
    if (to_write != nullptr) StartWrite(to_write);
  }

  void OnWriteDone(bool ok) override {
    Event* to_write = nullptr;
    bool finish = false;
    {
      std::lock_guard lock(mu_);
      queue_.pop_front();
      if (!ok) {
        // The client is gone; stop the downstream work it caused.
        queue_.clear();
        writing_ = false;
        downstream_.TryCancel();
        finish = !finished_;
        finished_ = true;
        if (!terminal_queued_) outcome_ = "cancelled";
      } else if (!queue_.empty()) {
        to_write = &queue_.front();
      } else {
        writing_ = false;
        finish = terminal_queued_ && !finished_;
        if (finish) finished_ = true;
      }
    }
    if (to_write != nullptr) StartWrite(to_write);
    if (finish) Finish(ok ? grpc::Status::OK : grpc::Status::CANCELLED);
  }

  void OnCancel() override {
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
    }
    downstream_.TryCancel();
  }

  void OnDone() override {
    double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
    std::string outcome;
    {
      std::lock_guard lock(mu_);
      outcome = outcome_.empty() ? "cancelled" : outcome_;
    }
    deps_.counters->in_flight--;
    deps_.counters->handled++;
    if (outcome != "ok") deps_.counters->failed++;
    deps_.metrics->Finished(envelope_.type(), outcome, seconds);
    spdlog::debug("req={} type={} outcome={} ms={:.1f}", request_id_, envelope_.type(), outcome,
                  seconds * 1000);
    Release();
  }

  void Release() {
    if (--refs_ == 0) delete this;
  }

  DispatchDeps deps_;
  grpc::CallbackServerContext* context_;
  anima::v1::Envelope envelope_;
  Clock::time_point started_;
  std::string request_id_;
  std::string conversation_id_;

  grpc::ClientContext downstream_;
  anima::v1::CompletionRequest request_;
  anima::v1::CompletionResponse response_;

  std::atomic<int> refs_{1};
  std::mutex mu_;
  std::deque<Event> queue_;
  bool writing_ = false;
  bool terminal_queued_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  std::string outcome_;
};

// Streams the state to one watcher: at most one write in flight; a snapshot that arrives while
// a write is pending replaces any older pending one (a slow watcher only ever gets the latest).
class WatchReactor final : public grpc::ServerWriteReactor<anima::v1::ConsciousnessState> {
 public:
  // The poller calls the sink; the sink forwards to the reactor until the reactor is done.
  struct Sink {
    std::mutex mu;
    WatchReactor* reactor = nullptr;
  };

  WatchReactor(StatePoller* state, std::chrono::milliseconds interval)
      : state_(state), interval_(interval), sink_(std::make_shared<Sink>()) {
    sink_->reactor = this;
    Offer(state_->Snapshot(0));
    listener_ = state_->Subscribe([sink = sink_](const anima::v1::ConsciousnessState& s) {
      std::lock_guard lock(sink->mu);
      if (sink->reactor != nullptr) sink->reactor->Offer(s);
    });
  }

  void Offer(const anima::v1::ConsciousnessState& state) {
    bool start = false;
    {
      std::lock_guard lock(mu_);
      auto now = Clock::now();
      if (done_ || now < next_send_) return;
      next_send_ = now + interval_ - std::chrono::milliseconds(50);
      if (writing_) {
        pending_ = state;
        has_pending_ = true;
      } else {
        current_ = state;
        writing_ = true;
        start = true;
      }
    }
    if (start) StartWrite(&current_);
  }

 private:
  void OnWriteDone(bool ok) override {
    bool start = false;
    {
      std::lock_guard lock(mu_);
      writing_ = false;
      if (ok && has_pending_) {
        current_ = std::move(pending_);
        has_pending_ = false;
        writing_ = true;
        start = true;
      }
    }
    if (start) StartWrite(&current_);
    if (!ok) FinishOnce(grpc::Status::CANCELLED);
  }

  void OnCancel() override { FinishOnce(grpc::Status::CANCELLED); }

  void FinishOnce(const grpc::Status& status) {
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      done_ = true;
    }
    Finish(status);
  }

  void OnDone() override {
    {
      std::lock_guard lock(sink_->mu);
      sink_->reactor = nullptr;
    }
    state_->Unsubscribe(listener_);
    delete this;
  }

  StatePoller* state_;
  std::chrono::milliseconds interval_;
  std::shared_ptr<Sink> sink_;
  int listener_ = 0;
  std::mutex mu_;
  anima::v1::ConsciousnessState current_;
  anima::v1::ConsciousnessState pending_;
  bool has_pending_ = false;
  bool writing_ = false;
  bool done_ = false;
  Clock::time_point next_send_{};
};

}  // namespace

RouterService::RouterService(std::shared_ptr<grpc::Channel> broker, StatePoller* state,
                             DispatchCounters* counters, prometheus::Registry& registry,
                             RouterOptions options)
    : broker_(anima::v1::LlmBroker::NewStub(std::move(broker))),
      state_(state),
      counters_(counters),
      metrics_(std::make_unique<RouterMetrics>(registry)),
      options_(options),
      memory_(options.memory) {}

RouterService::~RouterService() = default;

grpc::ServerWriteReactor<Event>* RouterService::Dispatch(grpc::CallbackServerContext* context,
                                                         const anima::v1::Envelope* envelope) {
  auto* reactor = new DispatchReactor(
      DispatchDeps{broker_.get(), state_, counters_, metrics_.get(), &options_, &memory_}, context,
      envelope);
  reactor->Route();
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::GetState(grpc::CallbackServerContext* context,
                                                  const anima::v1::GetStateRequest* request,
                                                  anima::v1::ConsciousnessState* response) {
  *response = state_->Snapshot(request->connections());
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<anima::v1::ConsciousnessState>* RouterService::WatchState(
    grpc::CallbackServerContext* context, const anima::v1::WatchStateRequest* request) {
  auto interval = request->interval_ms() > 0 ? std::chrono::milliseconds(request->interval_ms())
                                             : options_.watch_interval;
  return new WatchReactor(state_, interval);
}

}  // namespace anima::router
