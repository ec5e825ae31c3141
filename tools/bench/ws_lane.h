#pragma once

#include <memory>
#include <string>

#include "tools/bench/load_lane.h"
#include "tools/cli/url.h"
#include "tools/cli/ws_client.h"

namespace anima::bench {

struct ChatLoad {
  std::string message;
  bool stream = false;
  std::string model;  // "" : the gateway's / simulator's default
  // ws only: send this frame (a JSON object, e.g. {"type":"word_count","text":"..."}) instead of
  // a chat message; the lane adds the id. Empty: chat.
  std::string frame;
  // ws chat only: each message carries "conversation_id":"bench-<k>", k cycling over this many
  // conversations across all connections (so each gets a turn per `conversations` messages);
  // 0: no conversation id (each chat starts a new, unremembered-by-the-bench conversation).
  int conversations = 0;
};

// A lane over one WebSocket connection to the gateway. Sends
// {"type":"chat","id":"b-<n>","message":...} (or the load's own frame with that id) and
// completes request n on the first frame carrying id "b-<n>" that ends a request (anything but
// chat_delta, self_coding_accepted and self_coding_progress; an error counts as its code); every
// other frame (welcome, broadcasts) is ignored, except that the welcome's limits are noted.
class WsLane : public Lane {
 public:
  WsLane(boost::asio::io_context& io, int index, const LoadPlan& plan, LaneStats& stats,
         cli::Url url, cli::WsClientOptions options, const ChatLoad& load);

  void Connect(std::function<void(std::string error)> done) override;
  void Abort() override;

 private:
  void Transmit(uint64_t seq) override;
  void Shutdown() override;
  void OnFrame(const std::string& text);

  boost::asio::io_context& io_;
  cli::Url url_;
  cli::WsClientOptions options_;
  std::string frame_prefix_;  // {"type":"chat","id":"b-
  std::string frame_suffix_;  // ","message":"...",...  (without the closing brace)
  int lanes_;                 // the plan's, for spreading conversation ids over lanes
  int conversations_;         // ChatLoad::conversations
  std::shared_ptr<cli::WsClient> ws_;
  std::unique_ptr<boost::asio::steady_timer> close_guard_;
};

}  // namespace anima::bench
