#include "services/common/tls_front.h"

#include <openssl/ssl.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace anima::common {

namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace {

absl::StatusOr<std::shared_ptr<ssl::context>> MakeContext(const std::string& cert,
                                                          const std::string& key) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("certificate ", cert, ": ", ec.message()));
  ctx->use_private_key_file(key, ssl::context::pem, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("key ", key, ": ", ec.message()));
  return ctx;
}

// One client connection: TLS on one side, the plain backend on the other.
class Tunnel : public std::enable_shared_from_this<Tunnel> {
 public:
  Tunnel(tcp::socket socket, ssl::context& ctx, int backend_port)
      : tls_(std::move(socket), ctx),
        backend_(tls_.get_executor()),
        handshake_timer_(tls_.get_executor()),
        port_(backend_port) {}

  void Start(std::chrono::milliseconds handshake_timeout) {
    handshake_timer_.expires_after(handshake_timeout);
    handshake_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->Close();  // a client too slow to finish the handshake
    });
    tls_.async_handshake(
        ssl::stream_base::server, [self = shared_from_this()](boost::system::error_code ec) {
          self->handshake_timer_.cancel();
          if (ec) return self->Close();
          self->backend_.async_connect(
              {net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(self->port_)},
              [self](boost::system::error_code ec) {
                if (ec) return self->Close();
                self->PumpUp();
                self->PumpDown();
              });
        });
  }

 private:
  void PumpUp() {  // client -> backend
    tls_.async_read_some(net::buffer(up_),
                         [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                           if (ec) return self->Close();
                           net::async_write(self->backend_, net::buffer(self->up_.data(), n),
                                            [self](boost::system::error_code ec, size_t) {
                                              if (ec) return self->Close();
                                              self->PumpUp();
                                            });
                         });
  }
  void PumpDown() {  // backend -> client
    backend_.async_read_some(net::buffer(down_),
                             [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                               if (ec) return self->Close();
                               net::async_write(self->tls_, net::buffer(self->down_.data(), n),
                                                [self](boost::system::error_code ec, size_t) {
                                                  if (ec) return self->Close();
                                                  self->PumpDown();
                                                });
                             });
  }
  // Either side ending ends both: a backend that closes mid-body (truncated) closes the client's
  // connection without a TLS close_notify, as a dropped connection would.
  void Close() {
    boost::system::error_code ignored;
    backend_.close(ignored);
    tls_.lowest_layer().close(ignored);
  }

  ssl::stream<tcp::socket> tls_;
  tcp::socket backend_;
  net::steady_timer handshake_timer_;
  int port_;
  std::array<char, 16384> up_;
  std::array<char, 16384> down_;
};

}  // namespace

struct TlsFront::Impl {
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  net::steady_timer retry{ioc};  // after a failed accept
  std::shared_ptr<ssl::context> default_ctx;
  std::map<std::string, std::shared_ptr<ssl::context>> sni;
  int backend_port = 0;
  std::chrono::milliseconds handshake_timeout{10000};
  std::vector<std::thread> threads;
  bool stopped = false;

  void Accept() {
    acceptor.async_accept(net::make_strand(ioc),
                          [this](boost::system::error_code ec, tcp::socket socket) {
                            if (ec == net::error::operation_aborted) return;
                            if (ec) {
                              // Out of descriptors (EMFILE) and the like: accepting again at once
                              // would spin a core until one frees; wait a little, as the gateway's
                              // own listener does.
                              retry.expires_after(std::chrono::milliseconds(100));
                              retry.async_wait([this](boost::system::error_code wait_ec) {
                                if (!wait_ec) Accept();
                              });
                              return;
                            }
                            std::make_shared<Tunnel>(std::move(socket), *default_ctx, backend_port)
                                ->Start(handshake_timeout);
                            Accept();
                          });
  }

  // OpenSSL's servername callback: switch the connection to the certificate for its SNI.
  static int OnServerName(SSL* ssl, int*, void* arg) {
    auto* self = static_cast<Impl*>(arg);
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == nullptr) return SSL_TLSEXT_ERR_OK;
    auto it = self->sni.find(absl::AsciiStrToLower(name));
    if (it != self->sni.end()) SSL_set_SSL_CTX(ssl, it->second->native_handle());
    return SSL_TLSEXT_ERR_OK;
  }
};

absl::StatusOr<std::map<std::string, std::pair<std::string, std::string>>> LoadSniCertDir(
    const std::string& dir) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".pem") continue;
    std::filesystem::path key = entry.path();
    key.replace_extension(".key");
    if (!std::filesystem::exists(key)) continue;
    out[absl::AsciiStrToLower(entry.path().stem().string())] = {entry.path().string(),
                                                                key.string()};
  }
  if (ec) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", ec.message()));
  return out;
}

absl::StatusOr<std::unique_ptr<TlsFront>> TlsFront::Start(const TlsFrontOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->backend_port = options.backend_port;
  impl->handshake_timeout = options.handshake_timeout;
  auto ctx = MakeContext(options.cert_file, options.key_file);
  if (!ctx.ok()) return ctx.status();
  impl->default_ctx = *ctx;
  for (const auto& [name, files] : options.sni_certs) {
    auto sni_ctx = MakeContext(files.first, files.second);
    if (!sni_ctx.ok()) return sni_ctx.status();
    impl->sni[absl::AsciiStrToLower(name)] = *sni_ctx;
  }
  SSL_CTX_set_tlsext_servername_callback(impl->default_ctx->native_handle(), &Impl::OnServerName);
  SSL_CTX_set_tlsext_servername_arg(impl->default_ctx->native_handle(), impl.get());
  boost::system::error_code ec;
  tcp::endpoint endpoint(net::ip::make_address(options.bind, ec),
                         static_cast<uint16_t>(options.port));
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("bind ", options.bind, ": ", ec.message()));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("TLS listener on ", options.bind, ":", options.port, ": ", ec.message()));
  }
  impl->Accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    impl->threads.emplace_back([ioc = &impl->ioc] { ioc->run(); });
  }
  return std::unique_ptr<TlsFront>(new TlsFront(std::move(impl)));
}

TlsFront::TlsFront(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TlsFront::~TlsFront() { Stop(); }

int TlsFront::port() const { return impl_->acceptor.local_endpoint().port(); }

void TlsFront::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
}

}  // namespace anima::common
