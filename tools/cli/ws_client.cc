#include "tools/cli/ws_client.h"

#include <deque>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "absl/strings/str_cat.h"

namespace anima::cli {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr size_t kMaxFrameBytes = 64 * 1024 * 1024;

template <bool kTls>
class WsClientImpl final : public WsClient,
                           public std::enable_shared_from_this<WsClientImpl<kTls>> {
  using Next = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

 public:
  WsClientImpl(asio::io_context& io, Url url, WsClientOptions options,
               std::shared_ptr<ssl::context> tls)
      : url_(std::move(url)), options_(std::move(options)), tls_(std::move(tls)), resolver_(io) {
    if constexpr (kTls) {
      ws_.emplace(io, *tls_);
    } else {
      ws_.emplace(io);
    }
  }

  void Connect(FrameHandler on_frame, ClosedHandler on_closed, ConnectHandler done) override {
    on_frame_ = std::move(on_frame);
    on_closed_ = std::move(on_closed);
    on_connect_ = std::move(done);
    resolver_.async_resolve(url_.host, url_.port,
                            beast::bind_front_handler(&WsClientImpl::OnResolve, Self()));
  }

  void Send(std::string frame, bool binary) override {
    if (finished_ || closing_) return;
    queue_.emplace_back(std::move(frame), binary);
    if (!writing_ && connected_) DoWrite();
  }

  void Close() override {
    if (finished_ || closing_) return;
    closing_ = true;
    if (!connected_) {
      Abort();
    } else if (!writing_) {
      DoClose();
    }
  }

  void Abort() override {
    error_code ignored;
    resolver_.cancel();
    beast::get_lowest_layer(*ws_).socket().close(ignored);
    if (!connected_) {
      ConnectFailed(asio::error::operation_aborted, "aborted");
    } else {
      Finish(asio::error::operation_aborted, "aborted");
    }
  }

  size_t queued_frames() const override { return queue_.size(); }

 private:
  std::shared_ptr<WsClientImpl> Self() { return this->shared_from_this(); }

  void ConnectFailed(error_code ec, std::string what) {
    finished_ = true;
    if (auto done = std::exchange(on_connect_, nullptr)) {
      done(ec, absl::StrCat(what, " ", url_.HostHeader(), ": ", ec.message()));
    }
  }

  void OnResolve(error_code ec, tcp::resolver::results_type results) {
    if (ec) return ConnectFailed(ec, "resolve");
    if (finished_) return;
    beast::get_lowest_layer(*ws_).expires_after(options_.connect_timeout);
    beast::get_lowest_layer(*ws_).async_connect(
        results, beast::bind_front_handler(&WsClientImpl::OnTcpConnect, Self()));
  }

  void OnTcpConnect(error_code ec, const tcp::endpoint&) {
    if (ec) return ConnectFailed(ec, "connect");
    beast::get_lowest_layer(*ws_).socket().set_option(tcp::no_delay(true), ec);
    if constexpr (kTls) {
      auto& tls = ws_->next_layer();
      if (!SSL_set_tlsext_host_name(tls.native_handle(), url_.host.c_str())) {
        return ConnectFailed(
            error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category()),
            "TLS server name");
      }
      if (options_.verify_tls) {
        tls.set_verify_mode(ssl::verify_peer);
        tls.set_verify_callback(ssl::host_name_verification(url_.host));
      } else {
        tls.set_verify_mode(ssl::verify_none);
      }
      tls.async_handshake(ssl::stream_base::client,
                          beast::bind_front_handler(&WsClientImpl::OnTlsHandshake, Self()));
    } else {
      Upgrade();
    }
  }

  void OnTlsHandshake(error_code ec) {
    if (ec) return ConnectFailed(ec, "TLS handshake with");
    Upgrade();
  }

  void Upgrade() {
    beast::get_lowest_layer(*ws_).expires_never();
    auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::client);
    timeouts.handshake_timeout = options_.connect_timeout;
    ws_->set_option(timeouts);
    ws_->set_option(websocket::stream_base::decorator(
        [agent = options_.user_agent, token = options_.bearer_token](websocket::request_type& r) {
          r.set(http::field::user_agent, agent);
          if (!token.empty()) r.set(http::field::authorization, "Bearer " + token);
        }));
    ws_->read_message_max(kMaxFrameBytes);
    ws_->async_handshake(upgrade_response_, url_.HostHeader(), url_.target,
                         beast::bind_front_handler(&WsClientImpl::OnUpgrade, Self()));
  }

  void OnUpgrade(error_code ec) {
    if (ec) {
      if (ec == websocket::error::upgrade_declined) {
        return ConnectFailed(
            ec, absl::StrCat("upgrade refused with HTTP ", upgrade_response_.result_int(), " by"));
      }
      return ConnectFailed(ec, "websocket upgrade with");
    }
    if (finished_) return;
    connected_ = true;
    if (auto done = std::exchange(on_connect_, nullptr)) done(ec, "");
    if (finished_) return;
    DoRead();
    if (!queue_.empty() && !writing_) DoWrite();
  }

  void DoRead() {
    ws_->async_read(buffer_, beast::bind_front_handler(&WsClientImpl::OnRead, Self()));
  }

  void OnRead(error_code ec, size_t) {
    if (ec) {
      if (ec == websocket::error::closed) {
        const auto& reason = ws_->reason();
        return Finish(ec, absl::StrCat("closed by the server with code ", reason.code,
                                       reason.reason.empty() ? "" : " ", reason.reason.c_str()));
      }
      return Finish(ec, absl::StrCat("read: ", ec.message()));
    }
    std::string text = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    const bool binary = !ws_->got_text();
    if (on_frame_) on_frame_(std::move(text), binary);
    if (!finished_) DoRead();
  }

  void DoWrite() {
    writing_ = true;
    ws_->text(!queue_.front().second);
    ws_->async_write(asio::buffer(queue_.front().first),
                     beast::bind_front_handler(&WsClientImpl::OnWrite, Self()));
  }

  void OnWrite(error_code ec, size_t) {
    writing_ = false;
    if (ec) return Finish(ec, absl::StrCat("write: ", ec.message()));
    queue_.pop_front();
    if (!queue_.empty()) {
      DoWrite();
    } else if (closing_) {
      DoClose();
    }
  }

  void DoClose() {
    ws_->async_close(websocket::close_code::normal,
                     beast::bind_front_handler(&WsClientImpl::OnClose, Self()));
  }

  void OnClose(error_code ec) { Finish(ec, "closed by the client"); }

  void Finish(error_code ec, std::string detail) {
    if (finished_) return;
    finished_ = true;
    queue_.clear();
    if (auto closed = std::exchange(on_closed_, nullptr)) closed(ec, std::move(detail));
  }

  Url url_;
  WsClientOptions options_;
  std::shared_ptr<ssl::context> tls_;  // outlives ws_, which refers to it
  tcp::resolver resolver_;
  std::optional<websocket::stream<Next>> ws_;
  websocket::response_type upgrade_response_;
  beast::flat_buffer buffer_;
  std::deque<std::pair<std::string, bool>> queue_;
  FrameHandler on_frame_;
  ClosedHandler on_closed_;
  ConnectHandler on_connect_;
  bool connected_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool finished_ = false;
};

absl::StatusOr<std::shared_ptr<ssl::context>> MakeTlsContext(const WsClientOptions& options) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  error_code ec;
  ctx->set_default_verify_paths(ec);
  if (!options.ca_file.empty()) {
    ctx->load_verify_file(options.ca_file, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load CA file ", options.ca_file, ": ", ec.message()));
    }
  }
  return ctx;
}

}  // namespace

absl::StatusOr<std::shared_ptr<WsClient>> WsClient::Create(asio::io_context& io, Url url,
                                                           WsClientOptions options) {
  if (url.scheme != "ws" && url.scheme != "wss") {
    return absl::InvalidArgumentError(
        absl::StrCat("not a WebSocket URL (", url.scheme, "://); use ws:// or wss://"));
  }
  if (url.tls) {
    auto tls = MakeTlsContext(options);
    if (!tls.ok()) return tls.status();
    return std::shared_ptr<WsClient>(std::make_shared<WsClientImpl<true>>(
        io, std::move(url), std::move(options), *std::move(tls)));
  }
  return std::shared_ptr<WsClient>(
      std::make_shared<WsClientImpl<false>>(io, std::move(url), std::move(options), nullptr));
}

}  // namespace anima::cli
