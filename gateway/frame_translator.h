#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "anima/v1/envelope.pb.h"
#include "gateway/quota.h"

namespace anima::gateway {

// The protocol error codes of PROTOCOL.md §3.
inline constexpr char kInvalidJson[] = "invalid_json";
inline constexpr char kInvalidMessage[] = "invalid_message";
inline constexpr char kUnknownType[] = "unknown_type";
inline constexpr char kTooLarge[] = "too_large";
inline constexpr char kTooManyInFlight[] = "too_many_in_flight";
inline constexpr char kRateLimited[] = "rate_limited";
inline constexpr char kUnauthenticated[] = "unauthenticated";
inline constexpr char kUnavailable[] = "unavailable";
inline constexpr char kDeadlineExceeded[] = "deadline_exceeded";
inline constexpr char kCancelled[] = "cancelled";
inline constexpr char kNotFound[] = "not_found";
inline constexpr char kInternal[] = "internal";
inline constexpr char kQuotaExceeded[] = "quota_exceeded";
inline constexpr char kOverloaded[] = "overloaded";

// An answer the gateway sends instead of dispatching a frame. `id` is the frame's id, or the
// gateway-assigned one when the frame had none (or none that could be used).
struct ProtocolError {
  std::string code;
  std::string message;
  std::string id;
  std::string type;  // the frame's type when it was readable (for metrics), else empty
};

// One valid client frame.
struct ParsedFrame {
  enum class Kind {
    kRouted,       // sent to Router.Dispatch as `envelope`
    kPing,         // answered with pong
    kSubscribe,    // `topics`
    kUnsubscribe,  // `topics`
    kCancel,       // `target_id`
    kUsageQuery,   // `principal` (admins only; empty: the caller)
  };
  Kind kind = Kind::kRouted;
  std::string type;
  std::string id;            // the client's id, or the assigned "g-<n>"
  bool id_assigned = false;  // true when the gateway made `id` up
  // kRouted: type, client_id, timeout_ms and the body are set; request_id and session_id are
  // left for the caller (they belong to the connection, not the frame).
  anima::v1::Envelope envelope;
  std::vector<std::string> topics;
  std::string target_id;
  std::string principal;
};

using ParseResult = std::variant<ParsedFrame, ProtocolError>;

// A server frame ready to send.
struct RenderedFrame {
  std::string text;
  std::string type;       // the frame's `type` ("module" for frames of external modules)
  bool terminal = false;  // ends its request (chat_response, error, ...)
};

// Translates between client text frames (PROTOCOL.md §2) and the router's Envelope/Event
// messages (§3). No I/O; Parse and the Render functions are safe to call from any thread.
class FrameTranslator {
 public:
  FrameTranslator() = default;

  // Validates one text frame. Unknown fields are ignored; optional fields may be null. A
  // well-formed type that is not built in is routed with the whole frame as Envelope.raw_json
  // (the router answers unknown_type when no module handles it).
  ParseResult Parse(std::string_view text) const;

  // The frame of one router event for the request `id` (an empty id is left out, as in
  // broadcasts). An external module's raw_json that is not a JSON object becomes an `internal`
  // error frame.
  static RenderedFrame Render(const anima::v1::Event& event, std::string_view id);
  // A request's answered round trip without the time it spent on LLM providers (calls and retry
  // waits, as the broker reports it with the answer or the error), which is what the admission
  // judges the path by: `dispatched` moved later by that time, never past `now`.
  static std::chrono::steady_clock::time_point WithoutProviderTime(
      std::chrono::steady_clock::time_point dispatched, std::chrono::steady_clock::time_point now,
      const anima::v1::Event& event);
  static std::string RenderError(const ProtocolError& error);
  static std::string RenderError(std::string_view code, std::string_view message,
                                 std::string_view id);
  // An error the client should retry after a wait: rate_limited, overloaded.
  static std::string RenderRetryLater(std::string_view code, std::string_view message,
                                      std::string_view id, int64_t retry_after_ms);
  // quota_exceeded with the quota's name and the wait until it frees enough.
  static std::string RenderQuotaExceeded(const QuotaRefusal& refusal, std::string_view id);
  // The `usage` frame (and, without type and id, the body of GET /v1/usage).
  static std::string RenderUsage(const UsageReport& report, std::string_view id);
  static std::string RenderPong(std::string_view id);
  // `type` is "subscribed" or "unsubscribed".
  static std::string RenderTopics(std::string_view type, std::string_view id,
                                  const std::vector<std::string>& topics);
  struct WelcomeLimits {
    int64_t max_message_bytes = 65536;
    int64_t max_in_flight = 32;
    int64_t messages_per_second = 50;
  };
  // `principal`: who the connection acts for (PROTOCOL.md §1); `admin`: its role, "admin" or
  // "user" in the frame, so that a console shows admin-only choices to admins only.
  static std::string RenderWelcome(std::string_view session_id, std::string_view principal,
                                   bool admin, const WelcomeLimits& limits);

  // A fresh gateway-assigned id, "g-<n>", for replies to frames that carry no usable id.
  std::string AssignId() const;

  static bool IsBuiltinType(std::string_view type);
  // 1 to 64 characters of [a-z0-9_.-]: the names a module's type may have.
  static bool IsWellFormedType(std::string_view type);
  static constexpr size_t kMaxTypeLength = 64;
  // The built-in client message types, in the order of PROTOCOL.md §2.
  static const std::vector<std::string>& BuiltinTypes();

 private:
  mutable std::atomic<uint64_t> next_id_{0};
};

}  // namespace anima::gateway
