#include "gateway/ws_session.h"

#include <algorithm>
#include <cmath>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gateway/gateway_modules.h"
#include "services/common/grpc_metrics.h"
#include "services/common/identity.h"
#include "services/common/process.h"
#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace beast = boost::beast;
namespace net = boost::asio;
namespace websocket = beast::websocket;

namespace {

// A self-coding job's event stream: the job goes on without the connection, and its client can
// watch it again from after_seq on any gateway.
bool Resumable(const std::string& type) {
  return type == "self_coding_request" || type == "self_coding_watch";
}

constexpr size_t kIdleBufferBytes = 8192;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

WsSession::WsSession(net::ip::tcp::socket&& socket, GatewayContext& context, ConnectionSlot slot,
                     AccessDecision access)
    : context_(context),
      slot_(std::move(slot)),
      principal_(std::move(access.principal)),
      key_hash_(std::move(access.key_hash)),
      auth_generation_(context.access.auth() ? context.access.auth()->generation() : 0),
      ws_(std::move(socket)),
      session_id_(common::NewSecureId("s-")),
      slow_timer_(ws_.get_executor()),
      auth_timer_(ws_.get_executor()),
      token_expires_(access.expires),
      rate_(context.settings.messages_per_second, std::chrono::seconds(1),
            std::chrono::steady_clock::now()),
      held_timer_(ws_.get_executor()) {}

WsSession::~WsSession() {
  CancelAllCalls();
  context_.sessions.Remove(this);
  if (opened_) {
    context_.metrics->ConnectionClosed();
    context_.open_connections.fetch_sub(1);
  }
  spdlog::debug("session {} ended", session_id_);
}

void WsSession::Run(beast::http::request<beast::http::string_body> request) {
  context_.sessions.Add(shared_from_this());
  // A browser that sends its token as the subprotocol anima.bearer.<token> also offers anima.v1,
  // which is selected; the token itself is never echoed back.
  std::string_view offered = request[beast::http::field::sec_websocket_protocol];
  for (auto protocol : absl::StrSplit(absl::string_view(offered.data(), offered.size()), ',')) {
    if (absl::StripAsciiWhitespace(protocol) == "anima.v1") selects_subprotocol_ = true;
  }
  websocket::stream_base::timeout timeouts;
  timeouts.handshake_timeout = context_.settings.handshake_timeout;
  // Beast pings after half of idle_timeout without a frame from the client and closes the
  // connection when the other half passes without one either.
  timeouts.idle_timeout = context_.settings.idle_timeout;
  timeouts.keep_alive_pings = true;
  ws_.set_option(timeouts);
  ws_.set_option(websocket::stream_base::decorator(
      [select = selects_subprotocol_](websocket::response_type& res) {
        res.set(beast::http::field::server, "anima-gateway/0.1.0");
        if (select) res.set(beast::http::field::sec_websocket_protocol, "anima.v1");
      }));
  // Beast's own limit would fail the connection before the `too_large` frame could be sent, so
  // OnRead enforces max_message_bytes and Beast's is off.
  ws_.read_message_max(0);
  ws_.async_accept(request, beast::bind_front_handler(&WsSession::OnAccept, shared_from_this()));
}

void WsSession::Close(websocket::close_code code) {
  net::post(ws_.get_executor(), [self = shared_from_this(), code] {
    if (!self->opened_) {
      beast::error_code ignored;
      self->ws_.next_layer().close(ignored);
      return;
    }
    for (const std::string& id : self->awaiting_quota_) {
      self->SendError(kUnavailable,
                      "the gateway is shutting down; send it again on another connection", id);
    }
    self->awaiting_quota_.clear();
    while (!self->in_flight_.empty()) {
      auto it = self->in_flight_.begin();
      if (it->second.call) it->second.call->Cancel();
      self->SendError(kUnavailable,
                      Resumable(it->second.type)
                          ? "the gateway is shutting down; the job goes on: watch it again on "
                            "another connection (self_coding_watch with after_seq)"
                          : "the gateway is shutting down; send it again on another connection",
                      it->first);
      self->Finish(it, /*answered=*/false);
    }
    self->CloseAfterFlush(code);
  });
}

void WsSession::Broadcast(std::shared_ptr<const std::string> frame) {
  net::post(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame)]() mutable {
    if (!self->opened_ || !self->subscribed_ || self->close_after_flush_ || self->write_failed_) {
      return;
    }
    self->context_.metrics->FrameSent("consciousness_state");
    self->Enqueue(std::move(frame), /*state=*/true);
  });
}

void WsSession::OnAccept(beast::error_code ec) {
  if (ec) {
    spdlog::debug("websocket handshake failed: {}", ec.message());
    return;
  }
  opened_ = true;
  context_.metrics->ConnectionOpened();
  context_.open_connections.fetch_add(1);
  spdlog::debug("session {} opened", session_id_);
  FrameTranslator::WelcomeLimits limits;
  limits.max_message_bytes = static_cast<int64_t>(context_.settings.max_message_bytes);
  limits.max_in_flight = context_.settings.max_in_flight;
  limits.messages_per_second = context_.settings.messages_per_second;
  Send("welcome", FrameTranslator::RenderWelcome(session_id_, principal_->id,
                                                 principal_->role == Role::kAdmin, limits));
  if (token_expires_) {
    auth_timer_.expires_after(*token_expires_ - std::chrono::system_clock::now());
    auth_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->close_after_flush_ || self->write_failed_) return;
      self->context_.metrics->AuthFailed("expired");
      self->SendError(kUnauthenticated, "the token has expired",
                      self->context_.translator.AssignId());
      self->CloseAfterFlush(websocket::close_code::policy_error);
    });
  }
  if (context_.draining.load()) {
    CloseAfterFlush(websocket::close_code::going_away);
  }
  DoRead();
}

void WsSession::DoRead() {
  // Reads at most one byte past the limit, so an oversized message is noticed without holding
  // more than max_message_bytes + 1 of it.
  size_t limit = context_.settings.max_message_bytes + 1 - buffer_.size();
  ws_.async_read_some(buffer_, limit,
                      beast::bind_front_handler(&WsSession::OnRead, shared_from_this()));
}

void WsSession::OnRead(beast::error_code ec, size_t) {
  if (ec) {
    if (ec == beast::error::timeout) {
      context_.metrics->LimitHit("idle_timeout");
      spdlog::debug("session {}: idle timeout", session_id_);
    } else if (ec != websocket::error::closed && ec != net::error::operation_aborted) {
      spdlog::debug("session {} read: {}", session_id_, ec.message());
    }
    Teardown();
    return;
  }
  if (close_after_flush_) return;  // closing: what the client still sends is not answered
  if (buffer_.size() > context_.settings.max_message_bytes) {
    context_.metrics->LimitHit("message_size");
    context_.metrics->FrameReceived("other", kTooLarge);
    SendError(kTooLarge,
              absl::StrCat("the frame is over max_message_bytes (",
                           context_.settings.max_message_bytes, ")"),
              context_.translator.AssignId());
    CloseAfterFlush(websocket::close_code::too_big);
    return;
  }
  if (!ws_.is_message_done()) {
    DoRead();
    return;
  }
  if (ws_.got_binary()) {
    context_.metrics->FrameReceived("other", kInvalidMessage);
    SendError(kInvalidMessage, "binary frames are not supported: send JSON text frames",
              context_.translator.AssignId());
  } else {
    // flat_buffer is contiguous: the frame is parsed in place.
    HandleText(std::string_view(static_cast<const char*>(buffer_.data().data()), buffer_.size()));
  }
  buffer_.consume(buffer_.size());
  // An idle connection should not keep the memory of the largest frame it ever sent.
  if (buffer_.capacity() > kIdleBufferBytes) buffer_.shrink_to_fit();
  if (close_after_flush_) return;
  if (quota_pending_ > 0) {
    read_paused_ = true;  // the next frame waits for the quota answer (QuotaAnswered)
    return;
  }
  DoRead();
}

void WsSession::QuotaAnswered() {
  --quota_pending_;
  if (quota_pending_ > 0 || !read_paused_) return;
  read_paused_ = false;
  if (!close_after_flush_ && !torn_down_) DoRead();
}

void WsSession::HandleText(std::string_view text) {
  auto start = std::chrono::steady_clock::now();
  ParseResult result = context_.translator.Parse(text);
  if (!rate_.TryTake(start)) {
    auto* frame = std::get_if<ParsedFrame>(&result);
    const std::string& id = frame ? frame->id : std::get<ProtocolError>(result).id;
    context_.metrics->LimitHit("messages_per_second");
    context_.metrics->FrameReceived(frame ? frame->type : "other", kRateLimited);
    context_.metrics->ErrorSent(kRateLimited);
    Send("error", FrameTranslator::RenderRetryLater(
                      kRateLimited,
                      absl::StrCat("over messages_per_second (",
                                   context_.settings.messages_per_second, ") on this connection"),
                      id, std::max<int64_t>(1, rate_.WaitFor(start).count())));
    return;
  }
  if (auto* error = std::get_if<ProtocolError>(&result)) {
    context_.metrics->FrameReceived(error->type.empty() ? "other" : error->type, error->code);
    SendError(error->code, error->message, error->id);
    return;
  }
  ParsedFrame& frame = std::get<ParsedFrame>(result);
  switch (frame.kind) {
    case ParsedFrame::Kind::kPing:
      context_.metrics->FrameReceived(frame.type, "ok");
      Send("pong", FrameTranslator::RenderPong(frame.id));
      context_.metrics->RequestDone(frame.type, SecondsSince(start));
      return;
    case ParsedFrame::Kind::kSubscribe:
    case ParsedFrame::Kind::kUnsubscribe: {
      // Only consciousness_state exists.
      bool subscribe = frame.kind == ParsedFrame::Kind::kSubscribe;
      subscribed_ = subscribe;
      context_.metrics->FrameReceived(frame.type, "ok");
      const char* reply = subscribe ? "subscribed" : "unsubscribed";
      Send(reply, FrameTranslator::RenderTopics(reply, frame.id, frame.topics));
      return;
    }
    case ParsedFrame::Kind::kCancel:
      HandleCancel(frame);
      return;
    case ParsedFrame::Kind::kUsageQuery:
      HandleUsageQuery(frame);
      return;
    case ParsedFrame::Kind::kRouted:
      StartRequest(std::move(frame), start);
      return;
  }
}

void WsSession::StartRequest(ParsedFrame frame, std::chrono::steady_clock::time_point start) {
  if (in_flight_.count(frame.id) > 0) {
    context_.metrics->FrameReceived(frame.type, kInvalidMessage);
    SendError(kInvalidMessage,
              absl::StrCat("id: \"", frame.id, "\" is already used by a request in flight"),
              frame.id);
    return;
  }
  if (in_flight_.size() >= static_cast<size_t>(context_.settings.max_in_flight)) {
    context_.metrics->LimitHit("in_flight");
    context_.metrics->FrameReceived(frame.type, kTooManyInFlight);
    SendError(kTooManyInFlight,
              absl::StrCat("over max_in_flight (", context_.settings.max_in_flight,
                           ") requests in flight on this connection"),
              frame.id);
    return;
  }
  std::shared_ptr<const Principal> principal = CurrentPrincipal(frame.id);
  if (!principal) return;  // revoked: the connection is closing
  if (frame.envelope.self_coding_list().all_principals() && principal->role != Role::kAdmin) {
    // Self-coding would list the caller's own jobs anyway; saying so is clearer.
    context_.metrics->FrameReceived(frame.type, kInvalidMessage);
    SendError(kInvalidMessage, "all: only an admin may list every principal's jobs", frame.id);
    return;
  }
  bool spends = frame.type == "chat" || frame.type == "self_coding_request";
  ++quota_pending_;
  awaiting_quota_.push_back(frame.id);
  // Held strongly: the answer comes within the store's deadline, and an admission must reach a
  // live session to be released.
  std::shared_ptr<const Principal> asking = principal;
  context_.quotas->Admit(
      *asking, spends,
      [self = shared_from_this(), executor = ws_.get_executor(), frame = std::move(frame), start,
       principal = std::move(principal)](QuotaDecision decision) mutable {
        // Inline when the store answered at once and this is the strand already.
        net::dispatch(executor, [self = std::move(self), frame = std::move(frame), start,
                                 principal = std::move(principal),
                                 decision = std::move(decision)]() mutable {
          self->OnQuotaDecision(std::move(frame), start, std::move(principal), std::move(decision));
          self->QuotaAnswered();
        });
      });
}

bool WsSession::TakeAwaitingQuota(const std::string& id) {
  auto it = std::find(awaiting_quota_.begin(), awaiting_quota_.end(), id);
  if (it == awaiting_quota_.end()) return false;
  awaiting_quota_.erase(it);
  return true;
}

void WsSession::OnQuotaDecision(ParsedFrame frame, std::chrono::steady_clock::time_point start,
                                std::shared_ptr<const Principal> principal,
                                QuotaDecision decision) {
  if (!TakeAwaitingQuota(frame.id) || torn_down_ || close_after_flush_ || write_failed_) {
    // Nobody is left to answer.
    if (decision.admitted()) context_.quotas->Release(*principal, decision.ticket);
    return;
  }
  if (decision.refusal) {
    const QuotaRefusal& refusal = *decision.refusal;
    context_.metrics->QuotaRefused(principal->id, principal->tier, refusal.limit);
    context_.metrics->FrameReceived(frame.type, kQuotaExceeded);
    context_.metrics->ErrorSent(kQuotaExceeded);
    Send("error", FrameTranslator::RenderQuotaExceeded(refusal, frame.id));
    return;
  }
  auto hold = context_.admission->HoldFor(frame.type);
  if (hold) {
    // Past what the path serves: refused now rather than after a wait in a standing queue.
    if (auto retry_after = context_.admission->Overloaded(hold->key)) {
      context_.quotas->Release(*principal, decision.ticket);
      context_.metrics->FrameReceived(frame.type, kOverloaded);
      RefuseOverloaded(frame.id, *retry_after);
      return;
    }
  }
  context_.metrics->FrameReceived(frame.type, "ok");
  anima::v1::Envelope& envelope = frame.envelope;
  envelope.set_request_id(common::NewRequestId());
  envelope.set_session_id(session_id_);
  spdlog::debug("req={} session {} {} id={}", envelope.request_id(), session_id_, frame.type,
                frame.id);

  uint64_t seq = ++next_seq_;
  context_.in_flight.fetch_add(1);
  if (Resumable(frame.type)) context_.in_flight_resumable.fetch_add(1);
  InFlight& entry = in_flight_[frame.id];
  entry.seq = seq;
  entry.type = frame.type;
  entry.request_id = envelope.request_id();
  entry.start = start;
  entry.principal = std::move(principal);
  entry.ticket = decision.ticket;
  if (!hold) {
    Dispatch(frame.id, entry, std::move(envelope));
    return;
  }
  if (envelope.timeout_ms() > 0) {
    ArmHeldTimer(start + std::chrono::milliseconds(envelope.timeout_ms()));
  }
  entry.held = std::move(envelope);
  // Held by admission key, not by the client's type: keys are bounded by the routing table.
  entry.admission_key = std::move(hold->key);
  entry.admission_priority = std::move(hold->priority);
  held_[entry.admission_key].emplace_back(frame.id, seq);
  if (!waiting_for_slot_[entry.admission_key]) AcquireSlot(entry.admission_key);
}

void WsSession::Dispatch(const std::string& id, InFlight& entry, anima::v1::Envelope envelope) {
  // The callbacks run on gRPC threads: they only post to this session's strand, and only while
  // the session is alive.
  std::weak_ptr<WsSession> weak = weak_from_this();
  auto executor = ws_.get_executor();
  uint64_t seq = entry.seq;
  DispatchCallbacks callbacks;
  callbacks.on_event = [weak, executor, seq, id](anima::v1::Event event) {
    auto self = weak.lock();
    if (!self) return;
    net::post(executor, [self = std::move(self), seq, id, event = std::move(event)]() mutable {
      self->OnCallEvent(seq, id, std::move(event));
    });
  };
  callbacks.on_done = [weak, executor, seq, id](const grpc::Status& status) {
    auto self = weak.lock();
    if (!self) return;
    net::post(executor,
              [self = std::move(self), seq, id, status] { self->OnCallDone(seq, id, status); });
  };
  // Events are posted, so none can run before the call is stored below.
  entry.call = context_.router->Dispatch(std::move(envelope), IdentityFor(*entry.principal),
                                         std::move(callbacks));
}

void WsSession::AcquireSlot(const std::string& key) {
  Admission* admission = context_.admission;
  // Runs on the thread that freed the slot (the slot is already taken for this session) or that
  // refused the wait.
  auto waiter = [weak = weak_from_this(), executor = ws_.get_executor(), admission,
                 key](bool granted) {
    auto self = weak.lock();
    if (!self) {
      if (granted) admission->ReleaseUnused(key);
      return;
    }
    net::post(executor, [self = std::move(self), key, granted] {
      if (granted) {
        self->OnSlot(key);
      } else {
        self->OnWaitRefused(key);
      }
    });
  };
  if (admission->Acquire(key, std::move(waiter))) {
    OnSlot(key);
  } else {
    waiting_for_slot_[key] = true;
  }
}

void WsSession::OnSlot(const std::string& key) {
  waiting_for_slot_[key] = false;
  auto& queue = held_[key];
  auto it = in_flight_.end();
  while (!queue.empty() && it == in_flight_.end()) {
    auto [id, seq] = std::move(queue.front());
    queue.pop_front();
    auto found = in_flight_.find(id);
    if (found != in_flight_.end() && found->second.seq == seq && found->second.held) it = found;
  }
  if (it == in_flight_.end()) {  // what waited was cancelled, or the session is closing
    context_.admission->ReleaseUnused(key);
    return;
  }
  InFlight& entry = it->second;
  auto now = std::chrono::steady_clock::now();
  entry.admitted = true;
  entry.dispatched = now;
  anima::v1::Envelope envelope = std::move(*entry.held);
  entry.held.reset();
  context_.metrics->AdmissionWait(entry.admission_priority,
                                  std::chrono::duration<double>(now - entry.start).count());
  // The client's timeout_ms counts from its frame's arrival, the wait included.
  bool expired = false;
  if (envelope.timeout_ms() > 0) {
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - entry.start).count();
    if (waited >= envelope.timeout_ms()) {
      expired = true;
    } else {
      envelope.set_timeout_ms(envelope.timeout_ms() - waited);
    }
  }
  if (expired) {
    SendError(kDeadlineExceeded, "the request ran past its deadline waiting for admission",
              it->first);
    Finish(it, /*answered=*/false);
  } else {
    Dispatch(it->first, entry, std::move(envelope));
  }
  if (!queue.empty()) AcquireSlot(key);
}

void WsSession::OnWaitRefused(const std::string& key) {
  waiting_for_slot_[key] = false;
  // Everything of this key still held came after the refused one and would wait as long.
  auto& queue = held_[key];
  const std::chrono::milliseconds retry_after = context_.admission->RetryAfter(key);
  for (auto& [id, seq] : queue) {
    auto found = in_flight_.find(id);
    if (found == in_flight_.end() || found->second.seq != seq || !found->second.held) continue;
    RefuseOverloaded(id, retry_after);
    Finish(found, /*answered=*/false);
  }
  queue.clear();
}

void WsSession::RefuseOverloaded(const std::string& id, std::chrono::milliseconds retry_after) {
  context_.metrics->ErrorSent(kOverloaded);
  Send("error",
       FrameTranslator::RenderRetryLater(
           kOverloaded, "the gateway is past what it can serve now; retry after retry_after_ms", id,
           retry_after.count()));
}

void WsSession::ArmHeldTimer(std::chrono::steady_clock::time_point deadline) {
  if (held_timer_armed_ && deadline >= held_timer_at_) return;
  held_timer_armed_ = true;
  held_timer_at_ = deadline;
  held_timer_.expires_at(deadline);  // cancels the wait for a later deadline
  held_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec == net::error::operation_aborted) return;
    self->held_timer_armed_ = false;
    self->ExpireHeld();
  });
}

void WsSession::ExpireHeld() {
  auto now = std::chrono::steady_clock::now();
  std::vector<std::string> expired;
  std::optional<std::chrono::steady_clock::time_point> next;
  for (const auto& [id, entry] : in_flight_) {
    if (!entry.held || entry.held->timeout_ms() <= 0) continue;
    auto deadline = entry.start + std::chrono::milliseconds(entry.held->timeout_ms());
    if (deadline <= now) {
      expired.push_back(id);
    } else if (!next || deadline < *next) {
      next = deadline;
    }
  }
  for (const auto& id : expired) {
    SendError(kDeadlineExceeded, "the request ran past its deadline waiting for admission", id);
    Finish(in_flight_.find(id), /*answered=*/false);
  }
  if (next) ArmHeldTimer(*next);
}

void WsSession::HandleCancel(const ParsedFrame& frame) {
  auto it = in_flight_.find(frame.target_id);
  if (it == in_flight_.end()) {
    context_.metrics->FrameReceived(frame.type, kNotFound);
    SendError(kNotFound, absl::StrCat("no request with id \"", frame.target_id, "\" is in flight"),
              frame.id);
    return;
  }
  context_.metrics->FrameReceived(frame.type, "ok");
  if (it->second.call) it->second.call->Cancel();  // a held request never reached the router
  // The target ends here; whatever its call still delivers is dropped (it is no longer in
  // flight).
  SendError(kCancelled, "cancelled by the client", frame.target_id);
  Finish(it, /*answered=*/false);
}

void WsSession::OnCallEvent(uint64_t seq, const std::string& id, anima::v1::Event event) {
  auto it = in_flight_.find(id);
  if (it == in_flight_.end() || it->second.seq != seq) return;
  if (event.has_consciousness_state()) {
    // The router cannot count the gateway's connections, nor see its admission; the gateway can.
    event.mutable_consciousness_state()->mutable_load()->set_connections(
        context_.open_connections.load());
    if (context_.modules != nullptr) context_.modules->AddTo(*event.mutable_consciousness_state());
  }
  RenderedFrame frame = FrameTranslator::Render(event, id);
  if (frame.type == "module") it->second.saw_module_frame = true;
  if (frame.type == "error") {
    context_.metrics->ErrorSent(
        event.has_error() && !event.error().code().empty() ? event.error().code() : kInternal);
  }
  if (frame.terminal) {
    ChargeUsage(it->second, event);
    it->second.dispatched = FrameTranslator::WithoutProviderTime(
        it->second.dispatched, std::chrono::steady_clock::now(), event);
  }
  Send(frame.type, std::move(frame.text));
  if (frame.terminal) Finish(it, /*answered=*/true);
}

void WsSession::ChargeUsage(const InFlight& entry, const anima::v1::Event& event) {
  int64_t tokens = 0;
  double cost = 0;
  if (event.has_chat_response()) {
    const auto& r = event.chat_response();
    tokens = r.has_billed_usage() ? r.billed_usage().total_tokens() : r.usage().total_tokens();
    cost = r.cost_usd();
  } else if (event.has_self_coding_result() && entry.type == "self_coding_request") {
    // Only the submitting request's own result: a watch of the same job charges nothing again.
    tokens = event.self_coding_result().usage().total_tokens();
  }
  if (tokens <= 0 && cost <= 0) return;
  context_.quotas->Charge(*entry.principal, tokens, cost);
  context_.metrics->Spent(entry.principal->id, entry.principal->tier, tokens, cost);
}

const std::shared_ptr<const Principal>& WsSession::CurrentPrincipal(std::string_view id) {
  Authenticator* auth = context_.access.auth();
  if (auth && principal_ && auth->generation() != auth_generation_) {
    auth_generation_ = auth->generation();
    principal_ = auth->Refresh(*principal_, key_hash_);
    if (!principal_) {
      context_.metrics->AuthFailed("revoked");
      SendError(kUnauthenticated, "the key was revoked", id);
      CloseAfterFlush(websocket::close_code::policy_error);
    }
  }
  return principal_;
}

void WsSession::HandleUsageQuery(const ParsedFrame& frame) {
  std::shared_ptr<const Principal> caller = CurrentPrincipal(frame.id);
  if (!caller) return;
  std::shared_ptr<const Principal> subject = caller;
  if (!frame.principal.empty() && frame.principal != caller->id) {
    if (caller->role != Role::kAdmin) {
      context_.metrics->FrameReceived(frame.type, kInvalidMessage);
      SendError(kInvalidMessage, "principal: only an admin may ask for another principal's usage",
                frame.id);
      return;
    }
    Authenticator* auth = context_.access.auth();
    subject = auth ? auth->keys()->FindById(frame.principal) : nullptr;
    if (!subject) {
      context_.metrics->FrameReceived(frame.type, kNotFound);
      SendError(kNotFound, absl::StrCat("no principal \"", frame.principal, "\" is configured"),
                frame.id);
      return;
    }
  }
  context_.metrics->FrameReceived(frame.type, "ok");
  ++quota_pending_;
  awaiting_quota_.push_back(frame.id);
  context_.quotas->Usage(*subject, [self = shared_from_this(), executor = ws_.get_executor(),
                                    id = frame.id](UsageReport report) mutable {
    net::dispatch(executor,
                  [self = std::move(self), id = std::move(id), report = std::move(report)] {
                    if (self->TakeAwaitingQuota(id) && !self->torn_down_)
                      self->Send("usage", FrameTranslator::RenderUsage(report, id));
                    self->QuotaAnswered();
                  });
  });
}

void WsSession::OnCallDone(uint64_t seq, const std::string& id, const grpc::Status& status) {
  auto it = in_flight_.find(id);
  if (it == in_flight_.end() || it->second.seq != seq) return;  // already answered
  // The stream ended without a terminal event.
  if (status.ok() && it->second.saw_module_frame) {
    Finish(it, /*answered=*/true);  // an external module's stream: its frames were the answer
    return;
  }
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      SendError(kUnavailable, "router unavailable", id);
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      SendError(kDeadlineExceeded, "the request ran past its deadline", id);
      break;
    case grpc::StatusCode::CANCELLED:
      SendError(kCancelled, "the request was cancelled", id);
      break;
    default:
      spdlog::warn(
          "req={} session {} id={} type={}: router ended the call with {} ({}) and no "
          "answer",
          it->second.request_id, session_id_, id, it->second.type,
          common::StatusCodeName(status.error_code()), status.error_message());
      SendError(kInternal,
                status.ok() ? "the router ended the request without an answer"
                            : absl::StrCat("router: ", common::StatusCodeName(status.error_code()),
                                           ": ", status.error_message()),
                id);
  }
  Finish(it, /*answered=*/false);
}

void WsSession::Finish(InFlightMap::iterator it, bool answered) {
  const InFlight& entry = it->second;
  context_.metrics->RequestDone(entry.type, SecondsSince(entry.start));
  // A held request leaves a stale entry in held_, skipped when its slot comes.
  if (entry.admitted) context_.admission->Release(entry.admission_key, entry.dispatched, answered);
  context_.quotas->Release(*entry.principal, entry.ticket);
  if (Resumable(entry.type)) context_.in_flight_resumable.fetch_sub(1);
  in_flight_.erase(it);
  context_.in_flight.fetch_sub(1);
}

void WsSession::CancelAllCalls() {
  for (auto& [id, entry] : in_flight_) {
    if (entry.call) entry.call->Cancel();
    if (entry.admitted) context_.admission->Release(entry.admission_key, entry.dispatched, false);
    context_.quotas->Release(*entry.principal, entry.ticket);
  }
  held_.clear();  // waiters still queued find nothing held and give their slots back
  int64_t resumable = 0;
  for (const auto& [id, entry] : in_flight_) resumable += Resumable(entry.type) ? 1 : 0;
  context_.in_flight_resumable.fetch_sub(resumable);
  context_.in_flight.fetch_sub(static_cast<int64_t>(in_flight_.size()));
  in_flight_.clear();
}

void WsSession::SendError(std::string_view code, std::string_view message, std::string_view id) {
  context_.metrics->ErrorSent(code);
  Send("error", FrameTranslator::RenderError(code, message, id));
}

void WsSession::Send(const std::string& type, std::string text) {
  if (close_after_flush_ || write_failed_) return;
  context_.metrics->FrameSent(type);
  Enqueue(std::make_shared<const std::string>(std::move(text)), /*state=*/false);
}

void WsSession::Enqueue(std::shared_ptr<const std::string> text, bool state) {
  if (slow_closed_ || write_failed_) return;
  bool replaced = false;
  if (state) {
    // The frame being written (the front, while writing_) cannot be replaced.
    for (auto it = std::next(queue_.begin(), writing_ && !queue_.empty() ? 1 : 0);
         it != queue_.end(); ++it) {
      if (it->state) {
        queued_bytes_ = queued_bytes_ - it->text->size() + text->size();
        it->text = std::move(text);
        replaced = true;
        break;
      }
    }
  }
  if (!replaced) {
    queued_bytes_ += text->size();
    queue_.push_back(Outgoing{std::move(text), state});
  }
  size_t bound = context_.settings.max_send_queue_bytes;
  // A single frame over the bound is let through; a queue that keeps growing is not.
  if (queued_bytes_ > 2 * bound && queue_.size() > 1) {
    CloseSlowReader();
    return;
  }
  if (queued_bytes_ > bound && !slow_timer_armed_) {
    slow_timer_armed_ = true;
    slow_timer_.expires_after(context_.settings.slow_reader_timeout);
    slow_timer_.async_wait(
        beast::bind_front_handler(&WsSession::OnSlowReaderTimer, shared_from_this()));
  }
  if (!writing_) DoWrite();
}

void WsSession::OnSlowReaderTimer(beast::error_code ec) {
  slow_timer_armed_ = false;
  if (ec) return;  // cancelled: the queue went back under the bound
  if (queued_bytes_ > context_.settings.max_send_queue_bytes) CloseSlowReader();
}

void WsSession::CloseSlowReader() {
  if (slow_closed_) return;
  slow_closed_ = true;
  context_.metrics->LimitHit("send_queue");
  spdlog::info("session {}: closing a client too slow to read ({} bytes queued)", session_id_,
               queued_bytes_);
  // Later, not here: the caller may hold an iterator into in_flight_.
  net::post(ws_.get_executor(), [self = shared_from_this()] { self->CancelAllCalls(); });
  // What waits is dropped; the frame being written must finish before the close frame can go.
  while (queue_.size() > (writing_ ? 1u : 0u)) {
    queued_bytes_ -= queue_.back().text->size();
    queue_.pop_back();
  }
  CloseAfterFlush(websocket::close_code::policy_error);
  // A reader that never reads again would hold that write, and the connection, forever.
  slow_timer_.expires_after(context_.settings.slow_reader_timeout);
  slow_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec) return;
    beast::error_code ignored;
    self->ws_.next_layer().close(ignored);
  });
}

void WsSession::Teardown() {
  torn_down_ = true;
  CancelAllCalls();
  slow_timer_.cancel();
  auth_timer_.cancel();
  held_timer_.cancel();
}

void WsSession::DoWrite() {
  writing_ = true;
  ws_.text(true);
  ws_.async_write(net::buffer(*queue_.front().text),
                  beast::bind_front_handler(&WsSession::OnWrite, shared_from_this()));
}

void WsSession::OnWrite(beast::error_code ec, size_t) {
  writing_ = false;
  if (ec) {
    write_failed_ = true;
    queue_.clear();
    queued_bytes_ = 0;
    Teardown();
    return;
  }
  queued_bytes_ -= queue_.front().text->size();
  queue_.pop_front();
  if (slow_timer_armed_ && !slow_closed_ &&
      queued_bytes_ <= context_.settings.max_send_queue_bytes) {
    slow_timer_.cancel();
  }
  if (!queue_.empty()) {
    DoWrite();
  } else if (close_after_flush_) {
    ws_.async_close(websocket::close_reason(*close_after_flush_),
                    beast::bind_front_handler(&WsSession::OnClose, shared_from_this()));
  }
}

void WsSession::CloseAfterFlush(websocket::close_code code) {
  if (close_after_flush_ || write_failed_) return;
  close_after_flush_ = code;
  if (!writing_) {
    ws_.async_close(websocket::close_reason(code),
                    beast::bind_front_handler(&WsSession::OnClose, shared_from_this()));
  }
}

void WsSession::OnClose(beast::error_code ec) {
  if (ec) spdlog::debug("session {} close: {}", session_id_, ec.message());
  Teardown();
}

}  // namespace anima::gateway
