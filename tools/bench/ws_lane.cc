#include "tools/bench/ws_lane.h"

#include <algorithm>
#include <charconv>

#include <nlohmann/json.hpp>

#include "tools/cli/frame_rules.h"

namespace anima::bench {

WsLane::WsLane(boost::asio::io_context& io, int index, const LoadPlan& plan, LaneStats& stats,
               cli::Url url, cli::WsClientOptions options, const ChatLoad& load)
    : Lane(io, index, plan, stats),
      io_(io),
      url_(std::move(url)),
      options_(std::move(options)),
      lanes_(plan.lanes),
      conversations_(load.frame.empty() ? load.conversations : 0) {
  if (!load.frame.empty()) {
    // {"type":"x",...} -> {"id":"b-<n>","type":"x",...}; the runner checked it is an object.
    frame_prefix_ = R"({"id":"b-)";
    const std::string body = load.frame.substr(load.frame.find('{') + 1);
    frame_suffix_ = "\"," + body.substr(0, body.rfind('}'));
    return;
  }
  frame_prefix_ = R"({"type":"chat","id":"b-)";
  frame_suffix_ = "\",\"message\":" + nlohmann::json(load.message).dump();
  if (load.stream) frame_suffix_ += ",\"stream\":true";
  if (!load.model.empty()) frame_suffix_ += ",\"model\":" + nlohmann::json(load.model).dump();
}

void WsLane::Connect(std::function<void(std::string error)> done) {
  auto ws = cli::WsClient::Create(io_, url_, options_);
  if (!ws.ok()) return done(std::string(ws.status().message()));
  ws_ = *std::move(ws);
  ws_->Connect([this](std::string text, bool binary) { OnFrame(text); },
               [this](boost::system::error_code, std::string detail) {
                 if (close_guard_) close_guard_->cancel();
                 if (!finished()) FailAll("connection_closed");
               },
               [done = std::move(done)](boost::system::error_code ec, std::string detail) {
                 done(ec ? detail : "");
               });
}

void WsLane::Abort() {
  if (ws_) ws_->Abort();
}

void WsLane::Transmit(uint64_t seq) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, seq);
  std::string frame;
  frame.reserve(frame_prefix_.size() + 24 + frame_suffix_.size() + 48);
  frame.append(frame_prefix_).append(digits, end).append(frame_suffix_);
  if (conversations_ > 0) {
    // Sequence numbers count per lane (from 1): interleaving the lanes makes consecutive messages
    // of the whole run, whatever the number of connections, go to consecutive conversations.
    const uint64_t k =
        ((seq - 1) * static_cast<uint64_t>(lanes_) + static_cast<uint64_t>(index())) %
        static_cast<uint64_t>(conversations_);
    auto [k_end, k_ec] = std::to_chars(digits, digits + sizeof digits, k);
    frame.append(R"(,"conversation_id":"bench-)").append(digits, k_end).append("\"");
  }
  frame.push_back('}');
  ws_->Send(std::move(frame));
}

void WsLane::Shutdown() {
  ws_->Close();
  // A gateway that never answers the close frame must not hold the run open.
  close_guard_ = std::make_unique<boost::asio::steady_timer>(io_, std::chrono::seconds(2));
  close_guard_->async_wait([ws = ws_](boost::system::error_code ec) {
    if (!ec) ws->Abort();
  });
}

void WsLane::OnFrame(const std::string& text) {
  const Clock::time_point now = Clock::now();
  const bool maybe_answer = text.find("\"b-") != std::string::npos &&
                            text.find("chat_delta") == std::string::npos &&
                            text.find("self_coding_progress") == std::string::npos;
  const bool maybe_welcome = !maybe_answer && text.find("welcome") != std::string::npos;
  if (!maybe_answer && !maybe_welcome) return;  // deltas and broadcasts: not worth parsing
  nlohmann::json frame = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!frame.is_object()) return;
  const std::string type = cli::StringField(frame, "type");
  if (type == "welcome") {
    if (auto l = frame.find("limits"); l != frame.end() && l->is_object()) {
      auto integer = [&](const char* key) -> int64_t {
        auto v = l->find(key);
        return v != l->end() && v->is_number_integer() ? v->get<int64_t>() : 0;
      };
      stats().limit_messages_per_second = integer("messages_per_second");
      stats().limit_max_in_flight = integer("max_in_flight");
    }
    return;
  }
  if (type == "self_coding_accepted" || (type == "consciousness_state" && !frame.contains("id"))) {
    return;
  }
  auto id = frame.find("id");
  if (id == frame.end() || !id->is_string()) {
    if (type == "error") ++stats().errors["unmatched_error"];
    return;
  }
  const std::string& s = id->get_ref<const std::string&>();
  uint64_t seq = 0;
  if (s.size() < 3 || s.compare(0, 2, "b-") != 0 ||
      std::from_chars(s.data() + 2, s.data() + s.size(), seq).ec != std::errc()) {
    return;
  }
  if (type != "error") {
    Complete(seq, "", now);
  } else {
    std::string code = cli::StringField(frame, "code");
    auto retry = frame.find("retry_after_ms");
    const int64_t retry_ms = retry != frame.end() && retry->is_number_integer()
                                 ? std::clamp<int64_t>(retry->get<int64_t>(), 0, 5000)
                                 : 0;
    Complete(seq, code.empty() ? "error" : code, now, std::chrono::milliseconds(retry_ms));
  }
}

}  // namespace anima::bench
