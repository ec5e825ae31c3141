#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <utility>  // before Boost 1.74's asio, which uses std::exchange unincluded

#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/websocket.hpp"
#include "gateway/gateway_context.h"

namespace anima::gateway {

// One WebSocket connection (PROTOCOL.md §1-3).
//
// Threading: every member runs on the connection's strand (the executor of its socket); router
// events arrive on gRPC threads and are posted there. Lifetime: the session lives while a Beast
// operation or a posted handler holds it (bind_front_handler with shared_from_this); router
// calls hold it only weakly, and the destructor cancels the calls still in flight.
//
// Send path: one queue of serialised frames, exactly one async_write in flight; the next write
// starts from the completion of the previous one. A close is queued behind the frames before it.
//
// Quotas: a routed request and a usage_query ask the QuotaStore, which may answer over the
// network; the session continues in the answer, on its strand, and holds itself alive until
// then. Meanwhile it reads no further frame, so frames are still handled one after the other in
// the order they arrived (a cancel cannot overtake the request it cancels).
class WsSession : public std::enable_shared_from_this<WsSession> {
 public:
  // `access`: who the connection acts for, as the front door decided (AccessPolicy); when its
  // token expires the client is told `unauthenticated` and closed with 1008. `slot` counts the
  // connection against max_connections while the session lives.
  WsSession(boost::asio::ip::tcp::socket&& socket, GatewayContext& context, ConnectionSlot slot,
            AccessDecision access);
  ~WsSession();

  // Completes the upgrade of `request`, whose connection this session now owns.
  void Run(boost::beast::http::request<boost::beast::http::string_body> request);

  // Thread-safe: the end of a drain. Every request still in flight is answered with an
  // `unavailable` error frame (its router call cancelled), then the session closes with `code`
  // once the frames queued so far are written: a client never waits on a request that was
  // dropped.
  void Close(boost::beast::websocket::close_code code);

  // Thread-safe: queues a consciousness_state broadcast if the session is subscribed. A
  // broadcast still waiting in the queue is replaced by the newer one rather than followed by it.
  void Broadcast(std::shared_ptr<const std::string> frame);

 private:
  struct InFlight {
    uint64_t seq = 0;  // tells this call's late events from those of a reused id
    std::shared_ptr<DispatchCall> call;
    std::string type;
    std::string request_id;  // for log lines
    std::chrono::steady_clock::time_point start;
    bool saw_module_frame = false;
    // Admission (gateway/admission.h): a request over its type's limit waits in `held` until
    // its limiter `admission_key` has a slot for it, then goes to the router at `dispatched`.
    bool admitted = false;
    std::string admission_key;  // Admission::HoldFor(type); empty: not held
    std::string admission_priority;
    std::optional<anima::v1::Envelope> held;
    std::chrono::steady_clock::time_point dispatched;
    // The principal whose quotas count this request, and its admission (released when it ends).
    std::shared_ptr<const Principal> principal;
    QuotaTicket ticket;
  };
  using InFlightMap = std::unordered_map<std::string, InFlight>;

  void OnAccept(boost::beast::error_code ec);
  void DoRead();
  void OnRead(boost::beast::error_code ec, size_t bytes);
  void HandleText(std::string_view text);
  // Checks the request's limits, then asks the principal's quotas.
  void StartRequest(ParsedFrame frame, std::chrono::steady_clock::time_point start);
  // The quotas answered: the request is refused, or goes to admission and the router.
  // Removes `id` from awaiting_quota_; false when a shutdown answered it meanwhile.
  bool TakeAwaitingQuota(const std::string& id);
  void OnQuotaDecision(ParsedFrame frame, std::chrono::steady_clock::time_point start,
                       std::shared_ptr<const Principal> principal, QuotaDecision decision);
  // A quota answer arrived; reading resumes once none is awaited.
  void QuotaAnswered();
  void Dispatch(const std::string& id, InFlight& entry, anima::v1::Envelope envelope);
  // Asks admission for a slot of `key` for this session's oldest held request under that key.
  void AcquireSlot(const std::string& key);
  // A slot of `key` is this session's: its oldest held request under the key goes to the router.
  void OnSlot(const std::string& key);
  // The session's waiter for `key` waited past the bound: what it held is refused.
  void OnWaitRefused(const std::string& key);
  void RefuseOverloaded(const std::string& id, std::chrono::milliseconds retry_after);
  // Held requests whose timeout_ms runs out before their slot comes are answered
  // deadline_exceeded at that moment, by one timer set to the earliest such deadline.
  void ArmHeldTimer(std::chrono::steady_clock::time_point deadline);
  void ExpireHeld();
  void HandleCancel(const ParsedFrame& frame);
  void HandleUsageQuery(const ParsedFrame& frame);
  // The principal this connection acts for now: re-resolved after a keys reload; null (and the
  // connection closing with 1008, `id` told why) when its key was revoked.
  const std::shared_ptr<const Principal>& CurrentPrincipal(std::string_view id);
  // Charges the principal of `entry` for what a terminal event reports it cost.
  void ChargeUsage(const InFlight& entry, const anima::v1::Event& event);
  void OnCallEvent(uint64_t seq, const std::string& id, anima::v1::Event event);
  void OnCallDone(uint64_t seq, const std::string& id, const grpc::Status& status);
  // The request ends (its answer, or the error that ends it, is sent). `answered`: the router
  // answered it, so its round trip is an admission sample.
  void Finish(InFlightMap::iterator it, bool answered);
  void CancelAllCalls();

  void Send(const std::string& type, std::string text);
  void Enqueue(std::shared_ptr<const std::string> text, bool state);
  void OnSlowReaderTimer(boost::beast::error_code ec);
  void CloseSlowReader();
  void Teardown();
  void SendError(std::string_view code, std::string_view message, std::string_view id);
  void DoWrite();
  void OnWrite(boost::beast::error_code ec, size_t bytes);
  void CloseAfterFlush(boost::beast::websocket::close_code code);
  void OnClose(boost::beast::error_code ec);

  GatewayContext& context_;
  ConnectionSlot slot_;
  std::shared_ptr<const Principal> principal_;
  std::string key_hash_;  // of the key it authenticated with; empty for a JWT or no auth
  uint64_t auth_generation_ = 0;
  bool selects_subprotocol_ = false;  // the client offered anima.v1
  // Over the bare socket: the WebSocket's own timeouts cover handshake and idle, so
  // beast::tcp_stream's timers would only cost memory on every idle connection.
  boost::beast::websocket::stream<boost::asio::ip::tcp::socket> ws_;
  boost::beast::flat_buffer buffer_;
  const std::string session_id_;
  bool opened_ = false;  // the upgrade completed
  bool write_failed_ = false;
  bool writing_ = false;
  struct Outgoing {
    std::shared_ptr<const std::string> text;
    bool state = false;  // a consciousness_state broadcast, replaceable while it waits
  };
  // A list, not a deque: an empty std::deque holds ~576 bytes, and most connections are idle.
  std::list<Outgoing> queue_;
  size_t queued_bytes_ = 0;               // of queue_, the frame being written included
  boost::asio::steady_timer slow_timer_;  // armed while queued_bytes_ is over the bound
  bool slow_timer_armed_ = false;
  bool slow_closed_ = false;
  boost::asio::steady_timer auth_timer_;
  std::optional<std::chrono::system_clock::time_point> token_expires_;
  TokenBucket rate_;  // messages_per_second
  std::optional<boost::beast::websocket::close_code> close_after_flush_;
  bool subscribed_ = true;  // to consciousness_state broadcasts
  InFlightMap in_flight_;
  uint64_t next_seq_ = 0;
  // Held requests by admission key (Admission::HoldFor), oldest first, as (id, seq); entries that
  // ended meanwhile are skipped.
  std::unordered_map<std::string, std::deque<std::pair<std::string, uint64_t>>> held_;
  // Keys for which admission holds a waiter of this session (at most one each).
  std::unordered_map<std::string, bool> waiting_for_slot_;
  boost::asio::steady_timer held_timer_;
  bool held_timer_armed_ = false;
  std::chrono::steady_clock::time_point held_timer_at_;
  int quota_pending_ = 0;  // quota answers awaited (reading waits for them)
  // Ids of the frames behind quota_pending_: a shutdown answers them `unavailable` rather than
  // leave a frame it read without an answer (their late quota answers are then dropped).
  std::vector<std::string> awaiting_quota_;
  bool read_paused_ = false;  // a frame was handled but the next read waits for quota answers
  bool torn_down_ = false;    // the connection is finished: late answers are dropped
};

}  // namespace anima::gateway
