#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>

#include "absl/status/statusor.h"
#include "tools/cli/url.h"

namespace anima::cli {

struct WsClientOptions {
  std::string bearer_token;  // sent as "Authorization: Bearer ..." when not empty
  bool verify_tls = true;    // wss:// only: verify the certificate chain and the host name
  std::string ca_file;       // wss:// only: extra trusted CA bundle (PEM); "" = system store
  std::chrono::milliseconds connect_timeout{10000};
  std::string user_agent = "anima-cli";
};

// One WebSocket client connection, ws:// or wss:// (chosen by the URL). Not thread-safe: create
// it, call every method and receive every callback on the thread running `io`. The object keeps
// itself alive while an operation is pending, so the caller may drop its pointer after Close() or
// Abort(); `on_closed` still runs once.
class WsClient {
 public:
  // `text` is the whole frame; `binary` is true for binary frames.
  using FrameHandler = std::function<void(std::string text, bool binary)>;
  // Called once when the connection ends for any reason after Connect succeeded: the peer
  // closed (code/reason in `detail`), a read or write failed, or Close()/Abort() was called.
  using ClosedHandler = std::function<void(boost::system::error_code ec, std::string detail)>;
  using ConnectHandler = std::function<void(boost::system::error_code ec, std::string detail)>;

  // Fails only when a wss:// client cannot be set up (e.g. an unreadable --ca-file).
  static absl::StatusOr<std::shared_ptr<WsClient>> Create(boost::asio::io_context& io, Url url,
                                                          WsClientOptions options);
  virtual ~WsClient() = default;

  // Resolves, connects, (TLS handshake), upgrades. On success starts reading: every frame goes to
  // `on_frame` until the connection ends, then `on_closed` runs once.
  virtual void Connect(FrameHandler on_frame, ClosedHandler on_closed, ConnectHandler done) = 0;
  // Queues a frame; frames are written in order, one write in flight.
  virtual void Send(std::string frame, bool binary = false) = 0;
  // Sends a close frame (1000) after the queued frames and waits for the peer's close.
  virtual void Close() = 0;
  // Closes the socket at once; pending operations complete with an error.
  virtual void Abort() = 0;
  // Frames queued and not yet fully written.
  virtual size_t queued_frames() const = 0;
};

}  // namespace anima::cli
