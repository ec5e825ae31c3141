#include "services/router/router_service.h"

#include <deque>
#include <functional>
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
  anima::v1::SelfCoding::Stub* self_coding;  // null when not deployed
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
        StartSelfCoding();
        return;
      default:
        EmitError(MakeError("unknown_type",
                            "no module handles messages of type \"" + envelope_.type() + "\""));
        return;
    }
  }

 private:
  // Reads one downstream server stream and hands every message to the reactor; OnDone gives the
  // final status. Deletes itself when the call is over.
  template <typename T>
  class DownstreamStream final : public grpc::ClientReadReactor<T> {
   public:
    using MessageFn = std::function<void(T&)>;
    using DoneFn = std::function<void(const grpc::Status&)>;
    DownstreamStream(MessageFn on_message, DoneFn on_done)
        : on_message_(std::move(on_message)), on_done_(std::move(on_done)) {}
    // Call after the stub's async() method has bound this reactor to the call.
    void Go() {
      this->StartRead(&message_);
      this->StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;  // OnDone follows with the status
      on_message_(message_);
      this->StartRead(&message_);
    }
    void OnDone(const grpc::Status& status) override {
      on_done_(status);
      delete this;
    }

   private:
    MessageFn on_message_;
    DoneFn on_done_;
    T message_;
  };

  // Sets the downstream deadline (the type's default, lowered by timeout_ms and by the caller's
  // own deadline) and the request id, and takes the reference the downstream call holds.
  void PrepareDownstream(std::chrono::milliseconds type_deadline) {
    auto deadline = std::chrono::system_clock::now() + type_deadline;
    if (envelope_.timeout_ms() > 0) {
      deadline = std::min(deadline, std::chrono::system_clock::now() +
                                        std::chrono::milliseconds(envelope_.timeout_ms()));
    }
    downstream_.set_deadline(std::min(deadline, context_->deadline()));
    downstream_.AddMetadata(common::kRequestIdKey, request_id_);
    // A cancellation that arrived already (OnCancel) is applied by gRPC when the call starts.
    refs_++;
  }

  void StartSelfCoding() {
    if (deps_.self_coding == nullptr) {
      EmitError(MakeError("unavailable", "the self-coding service is not deployed"));
      return;
    }
    PrepareDownstream(deps_.options->self_coding_deadline);
    if (envelope_.has_self_coding_cancel()) {
      cancel_request_.set_job_id(envelope_.self_coding_cancel().job_id());
      deps_.self_coding->async()->Cancel(
          &downstream_, &cancel_request_, &cancel_response_, [this](grpc::Status status) {
            if (status.ok()) {
              Event event;
              *event.mutable_self_coding_result() = cancel_response_.result();
              Emit(std::move(event), true);
            } else {
              EmitError(ErrorFromStatus(status, "self-coding"));
            }
            Release();
          });
      return;
    }
    auto* stream = new DownstreamStream<anima::v1::JobEvent>(
        [this](anima::v1::JobEvent& e) {
          Event event;
          bool terminal = false;
          if (e.has_accepted()) {
            *event.mutable_self_coding_accepted() = e.accepted();
          } else if (e.has_progress()) {
            *event.mutable_self_coding_progress() = e.progress();
          } else if (e.has_result()) {
            *event.mutable_self_coding_result() = e.result();
            terminal = true;
          } else {
            return;
          }
          Emit(std::move(event), terminal);
        },
        [this](const grpc::Status& status) {
          if (!status.ok()) {
            EmitError(ErrorFromStatus(status, "self-coding"));
          } else {
            EmitError(MakeError("internal", "self-coding ended the stream without a result"));
          }
          Release();
        });
    if (envelope_.has_self_coding()) {
      const auto& body = envelope_.self_coding();
      submit_.set_request_id(request_id_);
      submit_.set_task(body.task());
      submit_.set_language(body.language());
      submit_.set_tests(body.tests());
      *submit_.mutable_files() = body.files();
      submit_.set_max_attempts(body.max_attempts());
      deps_.self_coding->async()->Run(&downstream_, &submit_, stream);
    } else {
      watch_.set_job_id(envelope_.self_coding_watch().job_id());
      watch_.set_after_seq(envelope_.self_coding_watch().after_seq());
      deps_.self_coding->async()->Watch(&downstream_, &watch_, stream);
    }
    stream->Go();
  }

  void StartChat() {
    conversation_id_ = envelope_.chat().conversation_id();
    if (conversation_id_.empty()) conversation_id_ = NewConversationId();
    request_ = ToCompletionRequest(envelope_, deps_.memory->History(conversation_id_));
    request_.set_request_id(request_id_);
    PrepareDownstream(deps_.options->chat_deadline);
    if (!envelope_.chat().stream()) {
      deps_.broker->async()->Complete(&downstream_, &request_, &response_,
                                      [this](grpc::Status status) {
                                        if (status.ok()) {
                                          ChatDone(response_);
                                        } else {
                                          EmitError(ErrorFromStatus(status, "llm-broker"));
                                        }
                                        Release();
                                      });
      return;
    }
    auto* stream = new DownstreamStream<anima::v1::CompletionChunk>(
        [this](anima::v1::CompletionChunk& chunk) {
          if (chunk.has_done()) {
            response_ = std::move(*chunk.mutable_done());
            have_response_ = true;
            return;
          }
          Event event;
          event.mutable_chat_delta()->set_delta(chunk.delta());
          Emit(std::move(event), false);
        },
        [this](const grpc::Status& status) {
          if (status.ok() && have_response_) {
            ChatDone(response_);
          } else if (status.ok()) {
            EmitError(MakeError("internal", "llm-broker ended the stream without a result"));
          } else {
            EmitError(ErrorFromStatus(status, "llm-broker"));
          }
          Release();
        });
    deps_.broker->async()->StreamComplete(&downstream_, &request_, stream);
    stream->Go();
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
  bool have_response_ = false;
  anima::v1::SubmitRequest submit_;
  anima::v1::WatchRequest watch_;
  anima::v1::CancelRequest cancel_request_;
  anima::v1::CancelResponse cancel_response_;

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

RouterService::RouterService(std::shared_ptr<grpc::Channel> broker,
                             std::shared_ptr<grpc::Channel> self_coding, StatePoller* state,
                             DispatchCounters* counters, prometheus::Registry& registry,
                             RouterOptions options)
    : broker_(anima::v1::LlmBroker::NewStub(std::move(broker))),
      self_coding_(self_coding ? anima::v1::SelfCoding::NewStub(std::move(self_coding)) : nullptr),
      state_(state),
      counters_(counters),
      metrics_(std::make_unique<RouterMetrics>(registry)),
      options_(options),
      memory_(options.memory) {}

RouterService::~RouterService() = default;

grpc::ServerWriteReactor<Event>* RouterService::Dispatch(grpc::CallbackServerContext* context,
                                                         const anima::v1::Envelope* envelope) {
  auto* reactor = new DispatchReactor(DispatchDeps{broker_.get(), self_coding_.get(), state_,
                                                   counters_, metrics_.get(), &options_, &memory_},
                                      context, envelope);
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
