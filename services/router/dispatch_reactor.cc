#include "services/router/dispatch_reactor.h"

#include "absl/strings/str_format.h"
#include "services/common/grpc_server.h"
#include "services/router/chat_translation.h"
#include "services/router/downstream_stream.h"
#include "services/router/error_mapping.h"
#include "spdlog/spdlog.h"

namespace anima::router {

namespace {

using anima::v1::Event;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kMemoryWarningInterval{10};

// The chat goes on without memory: counted always, logged at most every 10 s per process so an
// outage of the store does not flood the log.
void MemoryUnavailable(RouterMetrics* metrics, const char* op, const absl::Status& status,
                       const std::string& request_id) {
  metrics->MemoryUnavailable(op);
  static std::atomic<int64_t> next_warning{0};
  static std::atomic<int64_t> suppressed{0};
  int64_t now = Clock::now().time_since_epoch().count();
  int64_t next = next_warning.load();
  if (now >= next &&
      next_warning.compare_exchange_strong(
          next,
          now + std::chrono::duration_cast<Clock::duration>(kMemoryWarningInterval).count())) {
    spdlog::warn(
        "req={} conversation memory unavailable for {}: {}; the chat goes on without it ({} "
        "more since the last warning)",
        request_id, op, std::string(status.message()), suppressed.exchange(0));
  } else {
    suppressed++;
  }
}

}  // namespace

DispatchReactor::DispatchReactor(DispatchDeps deps, grpc::CallbackServerContext* context,
                                 const anima::v1::Envelope* envelope)
    : deps_(deps),
      context_(context),
      envelope_(*envelope),
      priority_(deps.config->PriorityOf(envelope->type())),
      arrived_(Clock::now()),
      identity_(common::IdentityOf(*context)),
      // Every type a module serves counts as "module": the label stays bounded by the built-in
      // types, whatever the routing table holds.
      type_label_(deps.config->ModuleFor(envelope->type()) != nullptr
                      ? "module"
                      : TypeLabel(envelope->type())) {
  request_id_ = common::RequestIdOf(*context_);
  if (request_id_ == "-") request_id_ = envelope_.request_id();
  deps_.counters->in_flight++;
  deps_.metrics->Started(type_label_);
}

void DispatchReactor::Admit() {
  auto admission = deps_.scheduler->Submit(priority_, envelope_.session_id(),
                                           [this](uint64_t ticket) { Route(ticket); });
  deps_.metrics->QueueDepths(deps_.scheduler->stats());
  if (admission.kind == PriorityScheduler::Admission::kRejected) {
    deps_.metrics->Rejected(PriorityName(priority_));
    auto error = MakeError(
        "overloaded", absl::StrFormat("the %s priority queue is full", PriorityName(priority_)));
    error.set_retry_after_ms(admission.retry_after_ms);
    EmitError(std::move(error));
    return;
  }
  std::lock_guard lock(mu_);
  ticket_ = admission.ticket;
}

void DispatchReactor::Route(uint64_t ticket) {
  deps_.metrics->QueueWait(PriorityName(priority_),
                           std::chrono::duration<double>(Clock::now() - arrived_).count());
  {
    std::lock_guard lock(mu_);
    ticket_ = ticket;
    running_ = true;
  }
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
    case anima::v1::Envelope::kSelfCodingList:
      StartSelfCoding();
      return;
    default:
      StartModule();
      return;
  }
}

void DispatchReactor::PrepareDownstream() {
  auto deadline = std::chrono::system_clock::now() + deps_.config->DeadlineOf(envelope_.type());
  if (envelope_.timeout_ms() > 0) {
    deadline = std::min(deadline, std::chrono::system_clock::now() +
                                      std::chrono::milliseconds(envelope_.timeout_ms()));
  }
  downstream_.set_deadline(std::min(deadline, context_->deadline()));
  downstream_.AddMetadata(common::kRequestIdKey, request_id_);
  common::AttachIdentity(identity_, &downstream_);
  // A cancellation that arrived already (OnCancel) is applied by gRPC when the call starts.
  refs_++;
}

void DispatchReactor::StartChat() {
  const auto& chat = envelope_.chat();
  conversation_id_ = chat.conversation_id();
  if (conversation_id_.empty() && !chat.stateless()) {
    conversation_id_ = common::NewSecureId("conv-");
  }
  // Memory is read only when it is used: not for a stateless request, not when the client sent
  // its own turns (they replace it), not for a conversation this request just started.
  if (chat.stateless() || chat.history_size() != 0 || chat.conversation_id().empty()) {
    SendChat(ChatHistory());
    return;
  }
  // The reactor stays alive while the store answers; a cancellation meanwhile is applied when
  // the broker call starts (PrepareDownstream).
  refs_++;
  deps_.memory->History(
      {identity_.principal, conversation_id_}, [this](absl::StatusOr<ChatHistory> history) {
        if (!history.ok()) {
          MemoryUnavailable(deps_.metrics, "history", history.status(), request_id_);
        }
        SendChat(history.ok() ? *history : ChatHistory());
        Release();
      });
}

void DispatchReactor::SendChat(const ChatHistory& remembered) {
  request_ = ToCompletionRequest(envelope_, remembered);
  request_.set_request_id(request_id_);
  PrepareDownstream();
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

void DispatchReactor::ChatDone(const anima::v1::CompletionResponse& completion) {
  if (envelope_.chat().stateless()) {
    EmitChatResponse(completion);
    return;
  }
  // The response waits for the store (one round trip, bounded by its timeout): a client that
  // sends its next turn as soon as it has this answer finds this turn remembered, on any
  // router. `completion` is response_, which lives as long as the reactor.
  refs_++;
  deps_.memory->Append({identity_.principal, conversation_id_}, envelope_.chat().message(),
                       completion.message(), [this, &completion](absl::Status status) {
                         if (!status.ok()) {
                           MemoryUnavailable(deps_.metrics, "append", status, request_id_);
                         }
                         if (auto n = deps_.memory->conversations()) {
                           deps_.metrics->ConversationsStored(static_cast<double>(*n));
                         }
                         EmitChatResponse(completion);
                         Release();
                       });
}

void DispatchReactor::EmitChatResponse(const anima::v1::CompletionResponse& completion) {
  Event event;
  *event.mutable_chat_response() = ToChatResponse(completion, conversation_id_);
  Emit(std::move(event), true);
}

void DispatchReactor::StartSelfCoding() {
  if (deps_.self_coding == nullptr) {
    EmitError(MakeError("unavailable", "the self-coding service is not deployed"));
    return;
  }
  PrepareDownstream();
  if (envelope_.has_self_coding_cancel()) {
    cancel_request_.set_job_id(envelope_.self_coding_cancel().job_id());
    deps_.self_coding->async()->Cancel(
        &downstream_, &cancel_request_, &cancel_response_, [this](grpc::Status status) {
          Event event;
          if (status.ok()) *event.mutable_self_coding_result() = cancel_response_.result();
          EndUnaryCall(status, std::move(event));
        });
    return;
  }
  if (envelope_.has_self_coding_list()) {
    const auto& body = envelope_.self_coding_list();
    list_request_.set_limit(body.limit());
    list_request_.set_status(body.status());
    list_request_.set_all_principals(body.all_principals());
    deps_.self_coding->async()->List(
        &downstream_, &list_request_, &list_response_, [this](grpc::Status status) {
          Event event;
          if (status.ok()) *event.mutable_self_coding_jobs() = std::move(list_response_);
          EndUnaryCall(status, std::move(event));
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
        // After the result this error is dropped: the stream has its terminal event already.
        EmitError(status.ok()
                      ? MakeError("internal", "self-coding ended the stream without a result")
                      : ErrorFromStatus(status, "self-coding"));
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

void DispatchReactor::StartModule() {
  const ModuleRoute* route = deps_.config->ModuleFor(envelope_.type());
  if (route == nullptr || envelope_.body_case() != anima::v1::Envelope::kRawJson) {
    EmitError(MakeError("unknown_type",
                        "no module handles messages of type \"" + envelope_.type() + "\""));
    return;
  }
  auto* stub = deps_.modules->at(route->name).get();
  module_request_.set_request_id(request_id_);
  module_request_.set_session_id(envelope_.session_id());
  module_request_.set_type(envelope_.type());
  module_request_.set_payload_json(envelope_.raw_json());
  PrepareDownstream();
  auto* stream = new DownstreamStream<anima::v1::ModuleEvent>(
      [this](anima::v1::ModuleEvent& e) {
        Event event;
        event.set_raw_json(e.payload_json());
        Emit(std::move(event), e.final());
      },
      [this, name = route->name](const grpc::Status& status) {
        EmitError(status.ok()
                      ? MakeError("internal", "module " + name + " ended without a final event")
                      : ErrorFromStatus(status, "module " + name));
        Release();
      });
  stub->async()->Handle(&downstream_, &module_request_, stream);
  stream->Go();
}

void DispatchReactor::EndUnaryCall(const grpc::Status& status, Event answer) {
  if (status.ok()) {
    Emit(std::move(answer), true);
  } else {
    EmitError(ErrorFromStatus(status, "self-coding"));
  }
  Release();
}

void DispatchReactor::EmitError(anima::v1::ErrorEvent error) {
  Event event;
  *event.mutable_error() = std::move(error);
  Emit(std::move(event), true);
}

void DispatchReactor::Emit(Event event, bool terminal) {
  Event* to_write = nullptr;
  uint64_t finish_ticket = 0;
  {
    std::lock_guard lock(mu_);
    if (terminal_queued_ || finished_) return;
    if (terminal) {
      terminal_queued_ = true;
      outcome_ = event.has_error() ? event.error().code() : "ok";
      if (running_) {
        running_ = false;
        finish_ticket = ticket_;
      }
    }
    queue_.push_back(std::move(event));
    if (!writing_) {
      writing_ = true;
      to_write = &queue_.front();
    }
  }
  if (to_write != nullptr) StartWrite(to_write);
  // The work is done: its slot goes to the next queued request (which may start on this thread).
  if (finish_ticket != 0) {
    deps_.scheduler->Finish(finish_ticket);
    deps_.metrics->QueueDepths(deps_.scheduler->stats());
  }
}

void DispatchReactor::OnWriteDone(bool ok) {
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

void DispatchReactor::OnCancel() {
  uint64_t ticket;
  {
    std::lock_guard lock(mu_);
    ticket = ticket_;
  }
  // Still waiting in a queue: it never starts. Already running: its downstream call stops.
  if (ticket != 0 && deps_.scheduler->Withdraw(ticket)) {
    deps_.metrics->QueueDepths(deps_.scheduler->stats());
    EmitError(MakeError("cancelled", "the request was cancelled before it started"));
    return;
  }
  downstream_.TryCancel();
}

void DispatchReactor::OnDone() {
  double seconds = std::chrono::duration<double>(Clock::now() - arrived_).count();
  std::string outcome;
  uint64_t finish_ticket = 0;
  {
    std::lock_guard lock(mu_);
    outcome = outcome_.empty() ? "cancelled" : outcome_;
    if (running_) {
      running_ = false;
      finish_ticket = ticket_;
    }
  }
  if (finish_ticket != 0) deps_.scheduler->Finish(finish_ticket);
  deps_.counters->in_flight--;
  deps_.counters->handled++;
  if (outcome != "ok") deps_.counters->failed++;
  deps_.metrics->Finished(type_label_, outcome, seconds);
  spdlog::debug("req={} type={} outcome={} ms={:.1f}", request_id_, envelope_.type(), outcome,
                seconds * 1000);
  Release();
}

void DispatchReactor::Release() {
  if (--refs_ == 0) delete this;
}

}  // namespace anima::router
