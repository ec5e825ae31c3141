#pragma once

// An in-process HTTP/1.1 (optionally TLS) server on 127.0.0.1:0 for tests of the HTTP client, the
// providers and the broker. Each connection gets a thread; the handler writes raw bytes, so tests
// control framing exactly (chunk boundaries, truncation, closes).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace anima::broker::testing {

struct TestRequest {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  int connection = 0;  // 1-based index of the connection it came on
};

// What a handler can do with the connection.
class TestConnection {
 public:
  virtual ~TestConnection() = default;
  // Writes raw bytes; false when the peer is gone.
  virtual bool Write(std::string_view bytes) = 0;
  // Waits until the client closes its side (true) or the timeout passes (false). Only for
  // plain-text connections.
  virtual bool WaitPeerClosed(std::chrono::milliseconds timeout) = 0;
};

// Returns true to keep the connection open for the next request.
using TestHandler = std::function<bool(const TestRequest&, TestConnection&)>;

struct TestTls {
  std::string cert_file;  // PEM chain
  std::string key_file;
};

class TestHttpServer {
 public:
  explicit TestHttpServer(TestHandler handler, const TestTls* tls = nullptr);
  ~TestHttpServer();

  int port() const { return port_; }
  std::string url(const std::string& path = "") const;
  int connections() const { return connections_.load(); }
  std::vector<std::string> sni_names() const;
  std::vector<TestRequest> requests() const;
  // Waits until `n` connections ended (closed by either side).
  bool WaitConnectionsClosed(int n, std::chrono::milliseconds timeout);

  struct Impl;

 private:
  void AcceptLoop();
  std::unique_ptr<Impl> impl_;
  TestHandler handler_;
  int port_ = 0;
  bool tls_ = false;
  std::atomic<int> connections_{0};
};

// Response helpers (raw HTTP/1.1).
std::string JsonResponse(int status, const std::string& body,
                         const std::string& extra_headers = "");
std::string ChunkedHead(int status = 200, const std::string& content_type = "text/event-stream");
std::string Chunk(std::string_view data);
inline constexpr char kLastChunk[] = "0\r\n\r\n";

}  // namespace anima::broker::testing
