#include "tests/unit/llm_broker/test_http_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace anima::broker::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct TestHttpServer::Impl {
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::unique_ptr<asio::ssl::context> ssl_ctx;
  std::thread accept_thread;
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> threads;
  std::vector<int> fds;
  std::vector<std::string> sni;
  std::vector<TestRequest> requests;
  int closed = 0;
  std::atomic<bool> stopping{false};
};

namespace {

template <class Stream>
class ConnectionImpl : public TestConnection {
 public:
  ConnectionImpl(Stream& stream, int fd) : stream_(stream), fd_(fd) {}
  bool Write(std::string_view bytes) override {
    beast::error_code ec;
    asio::write(stream_, asio::buffer(bytes.data(), bytes.size()), ec);
    return !ec;
  }
  bool WaitPeerClosed(std::chrono::milliseconds timeout) override {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN | POLLRDHUP, 0};
      if (::poll(&p, 1, 50) > 0) {
        char c;
        ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
        if (n > 0) {
          (void)::recv(fd_, &c, 1, 0);  // drain unexpected bytes
        }
      }
    }
    return false;
  }

 private:
  Stream& stream_;
  int fd_;
};

template <class Stream>
void Serve(Stream& stream, int fd, int index, const TestHandler& handler,
           TestHttpServer::Impl& impl) {
  beast::flat_buffer buffer;
  ConnectionImpl<Stream> conn(stream, fd);
  for (;;) {
    http::request<http::string_body> req;
    beast::error_code ec;
    http::read(stream, buffer, req, ec);
    if (ec) return;
    TestRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& f : req) {
      r.headers[absl::AsciiStrToLower(std::string(f.name_string()))] = std::string(f.value());
    }
    r.body = req.body();
    r.connection = index;
    {
      std::lock_guard lock(impl.mu);
      impl.requests.push_back(r);
    }
    if (!handler(r, conn)) return;
  }
}

}  // namespace

TestHttpServer::TestHttpServer(TestHandler handler, const TestTls* tls)
    : impl_(std::make_unique<Impl>()), handler_(std::move(handler)), tls_(tls != nullptr) {
  if (tls != nullptr) {
    impl_->ssl_ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    impl_->ssl_ctx->use_certificate_chain_file(tls->cert_file);
    impl_->ssl_ctx->use_private_key_file(tls->key_file, asio::ssl::context::pem);
  }
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  port_ = impl_->acceptor.local_endpoint().port();
  impl_->accept_thread = std::thread([this] { AcceptLoop(); });
}

TestHttpServer::~TestHttpServer() {
  impl_->stopping = true;
  beast::error_code ec;
  // Unblocks accept() (EINVAL on Linux); the acceptor is closed once its thread is gone.
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  impl_->accept_thread.join();
  impl_->acceptor.close(ec);
  {
    std::lock_guard lock(impl_->mu);
    for (int fd : impl_->fds) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : impl_->threads) t.join();
}

void TestHttpServer::AcceptLoop() {
  for (;;) {
    beast::error_code ec;
    tcp::socket socket(impl_->ioc);
    impl_->acceptor.accept(socket, ec);
    if (ec || impl_->stopping) return;
    int index = ++connections_;
    int fd = socket.native_handle();
    std::lock_guard lock(impl_->mu);
    impl_->fds.push_back(fd);
    impl_->threads.emplace_back([this, index, fd, s = std::move(socket)]() mutable {
      if (tls_) {
        asio::ssl::stream<tcp::socket> stream(std::move(s), *impl_->ssl_ctx);
        beast::error_code hec;
        stream.handshake(asio::ssl::stream_base::server, hec);
        if (!hec) {
          const char* name = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
          {
            std::lock_guard lock(impl_->mu);
            impl_->sni.push_back(name != nullptr ? name : "");
          }
          Serve(stream, fd, index, handler_, *impl_);
        }
        beast::error_code ignored;
        stream.lowest_layer().close(ignored);
      } else {
        Serve(s, fd, index, handler_, *impl_);
        beast::error_code ignored;
        s.close(ignored);
      }
      std::lock_guard lock(impl_->mu);
      for (auto& f : impl_->fds) {
        if (f == fd) f = -1;
      }
      ++impl_->closed;
      impl_->cv.notify_all();
    });
  }
}

std::string TestHttpServer::url(const std::string& path) const {
  return absl::StrCat(tls_ ? "https" : "http", "://127.0.0.1:", port_, path);
}

std::vector<std::string> TestHttpServer::sni_names() const {
  std::lock_guard lock(impl_->mu);
  return impl_->sni;
}

std::vector<TestRequest> TestHttpServer::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->requests;
}

bool TestHttpServer::WaitConnectionsClosed(int n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] { return impl_->closed >= n; });
}

std::string JsonResponse(int status, const std::string& body, const std::string& extra_headers) {
  return absl::StrCat("HTTP/1.1 ", status, " X\r\nContent-Type: application/json\r\n",
                      "Content-Length: ", body.size(), "\r\n", extra_headers, "\r\n", body);
}

std::string ChunkedHead(int status, const std::string& content_type) {
  return absl::StrCat("HTTP/1.1 ", status, " X\r\nContent-Type: ", content_type,
                      "\r\nTransfer-Encoding: chunked\r\n\r\n");
}

std::string Chunk(std::string_view data) {
  return absl::StrCat(absl::Hex(data.size()), "\r\n", absl::string_view(data.data(), data.size()),
                      "\r\n");
}

}  // namespace anima::broker::testing
