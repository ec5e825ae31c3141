#include "services/llm_broker/http_client.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio.hpp>
#include <thread>

#include "gtest/gtest.h"
#include "tests/unit/llm_broker/test_http_server.h"

namespace anima::broker {
namespace {

using namespace std::chrono_literals;
using testing::Chunk;
using testing::ChunkedHead;
using testing::JsonResponse;
using testing::kLastChunk;
using testing::TestConnection;
using testing::TestHttpServer;
using testing::TestRequest;

// Collects one exchange and lets the test wait for its end.
struct Fetch {
  std::mutex mu;
  std::condition_variable cv;
  HttpResponseHead head;
  std::vector<std::string> pieces;
  std::optional<absl::Status> status;
  std::function<void(const std::string&)> on_piece;

  HttpHandler Handler() {
    HttpHandler h;
    h.on_head = [this](const HttpResponseHead& hd) {
      std::lock_guard lock(mu);
      head = hd;
    };
    h.on_body = [this](std::string_view bytes) {
      std::string piece(bytes);
      {
        std::lock_guard lock(mu);
        pieces.push_back(piece);
      }
      if (on_piece) on_piece(piece);
    };
    h.on_complete = [this](absl::Status s) {
      std::lock_guard lock(mu);
      status = std::move(s);
      cv.notify_all();
    };
    return h;
  }
  bool Wait(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return status.has_value(); });
  }
  std::string Body() {
    std::lock_guard lock(mu);
    std::string all;
    for (const auto& p : pieces) all += p;
    return all;
  }
};

HttpRequest Get(const std::string& url) {
  HttpRequest r;
  r.method = "GET";
  r.url = url;
  return r;
}

std::shared_ptr<HttpClient> NewClient(HttpClientOptions options = {}) {
  auto client = HttpClient::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return *client;
}

TEST(ParseUrlTest, SplitsUrls) {
  auto u = ParseUrl("https://api.openai.com/v1");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "api.openai.com");
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->target, "/v1");
  EXPECT_EQ(u->origin, "https://api.openai.com:443");
  auto p = ParseUrl("http://127.0.0.1:18080/v1/chat");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->port, "18080");
  EXPECT_FALSE(ParseUrl("ftp://x").ok());
  EXPECT_FALSE(ParseUrl("http://:80/").ok());
  EXPECT_FALSE(ParseUrl("http://h:99999/").ok());
}

TEST(HttpClientTest, KeepAliveReusesOneConnection) {
  TestHttpServer server([](const TestRequest& r, TestConnection& c) {
    c.Write(JsonResponse(200, "{\"n\":\"" + r.target + "\"}"));
    return true;
  });
  auto client = NewClient();
  for (int i = 0; i < 3; ++i) {
    Fetch f;
    client->Send(Get(server.url("/r" + std::to_string(i))), f.Handler());
    ASSERT_TRUE(f.Wait());
    ASSERT_TRUE(f.status->ok()) << *f.status;
    EXPECT_EQ(f.head.status, 200);
    EXPECT_EQ(f.Body(), "{\"n\":\"/r" + std::to_string(i) + "\"}");
  }
  EXPECT_EQ(server.connections(), 1);
  EXPECT_EQ(client->connections_opened(), 1);
  EXPECT_EQ(server.requests()[0].headers["accept-encoding"], "identity");
}

TEST(HttpClientTest, StalePooledConnectionIsRetriedOnAFreshOne) {
  // The server answers, then closes the idle connection without saying so.
  TestHttpServer server([](const TestRequest&, TestConnection& c) {
    c.Write(JsonResponse(200, "{}"));
    return false;
  });
  auto client = NewClient();
  Fetch first;
  client->Send(Get(server.url("/a")), first.Handler());
  ASSERT_TRUE(first.Wait());
  ASSERT_TRUE(first.status->ok());
  ASSERT_TRUE(server.WaitConnectionsClosed(1, 5s));
  Fetch second;
  client->Send(Get(server.url("/b")), second.Handler());
  ASSERT_TRUE(second.Wait());
  EXPECT_TRUE(second.status->ok()) << *second.status;
  EXPECT_EQ(second.head.status, 200);
  EXPECT_EQ(server.connections(), 2);
  EXPECT_EQ(client->stale_retries(), 1);
}

TEST(HttpClientTest, ChunkedBodyIsDeliveredAsItArrives) {
  std::promise<void> got_first;
  auto got_first_future = got_first.get_future().share();
  TestHttpServer server([&](const TestRequest&, TestConnection& c) {
    c.Write(ChunkedHead());
    c.Write(Chunk("data: first\n\n"));
    // The second piece is only sent once the client has seen the first one.
    if (got_first_future.wait_for(10s) != std::future_status::ready) return false;
    c.Write(Chunk("data: second\n\n"));
    c.Write(kLastChunk);
    return true;
  });
  auto client = NewClient();
  Fetch f;
  std::once_flag once;
  f.on_piece = [&](const std::string&) { std::call_once(once, [&] { got_first.set_value(); }); };
  client->Send(Get(server.url("/stream")), f.Handler());
  ASSERT_TRUE(f.Wait());
  ASSERT_TRUE(f.status->ok()) << *f.status;
  EXPECT_GE(f.pieces.size(), 2u);
  EXPECT_EQ(f.pieces.front(), "data: first\n\n");
  EXPECT_EQ(f.Body(), "data: first\n\ndata: second\n\n");
  // The body was read to its end, so the connection went back to the pool.
  Fetch again;
  client->Send(Get(server.url("/stream")), again.Handler());
  ASSERT_TRUE(again.Wait());
  EXPECT_EQ(server.connections(), 1);
}

TEST(HttpClientTest, ReadUntilCloseBody) {
  TestHttpServer server([](const TestRequest&, TestConnection& c) {
    c.Write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nall of it");
    return false;
  });
  auto client = NewClient();
  Fetch f;
  client->Send(Get(server.url("/")), f.Handler());
  ASSERT_TRUE(f.Wait());
  ASSERT_TRUE(f.status->ok()) << *f.status;
  EXPECT_EQ(f.Body(), "all of it");
}

TEST(HttpClientTest, TruncatedChunkedBodyIsAnError) {
  TestHttpServer server([](const TestRequest&, TestConnection& c) {
    c.Write(ChunkedHead());
    c.Write(Chunk("data: {\"a\":1}\n\n"));
    c.Write("20\r\ndata: {\"tru");  // then close mid-chunk
    return false;
  });
  auto client = NewClient();
  Fetch f;
  client->Send(Get(server.url("/")), f.Handler());
  ASSERT_TRUE(f.Wait());
  EXPECT_EQ(f.status->code(), absl::StatusCode::kUnavailable) << *f.status;
  EXPECT_EQ(f.head.status, 200);
}

TEST(HttpClientTest, FirstByteTimeout) {
  TestHttpServer server([](const TestRequest&, TestConnection& c) {
    c.WaitPeerClosed(10s);  // never answers
    return false;
  });
  auto client = NewClient();
  Fetch f;
  HttpRequest r = Get(server.url("/slow"));
  r.first_byte_timeout = 200ms;
  client->Send(r, f.Handler());
  ASSERT_TRUE(f.Wait());
  EXPECT_EQ(f.status->code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(f.status->message().find("first byte"), std::string::npos) << *f.status;
}

TEST(HttpClientTest, SilentStreamHitsTheIdleTimeout) {
  TestHttpServer server([](const TestRequest&, TestConnection& c) {
    c.Write(ChunkedHead());
    c.Write(Chunk("data: one\n\n"));
    c.WaitPeerClosed(10s);  // then silence
    return false;
  });
  auto client = NewClient();
  Fetch f;
  HttpRequest r = Get(server.url("/stream"));
  r.idle_timeout = 200ms;
  client->Send(r, f.Handler());
  ASSERT_TRUE(f.Wait());
  EXPECT_EQ(f.Body(), "data: one\n\n");
  EXPECT_EQ(f.status->code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(f.status->message().find("idle timeout"), std::string::npos) << *f.status;
}

TEST(HttpClientTest, CancelClosesTheConnection) {
  std::promise<bool> peer_closed;
  TestHttpServer server([&](const TestRequest&, TestConnection& c) {
    c.Write(ChunkedHead());
    c.Write(Chunk("data: one\n\n"));
    peer_closed.set_value(c.WaitPeerClosed(10s));
    return false;
  });
  auto client = NewClient();
  Fetch f;
  std::shared_ptr<HttpExchange> exchange;
  std::promise<void> ready;
  auto ready_future = ready.get_future().share();
  f.on_piece = [&](const std::string&) {
    ready_future.wait();
    exchange->Cancel();
  };
  exchange = client->Send(Get(server.url("/")), f.Handler());
  ready.set_value();
  ASSERT_TRUE(f.Wait());
  EXPECT_EQ(f.status->code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(peer_closed.get_future().get());
}

TEST(HttpClientTest, ConnectionRefusedIsUnavailable) {
  int port;
  {
    TestHttpServer server([](const TestRequest&, TestConnection&) { return false; });
    port = server.port();
  }
  auto client = NewClient();
  Fetch f;
  client->Send(Get("http://127.0.0.1:" + std::to_string(port) + "/"), f.Handler());
  ASSERT_TRUE(f.Wait());
  EXPECT_EQ(f.status->code(), absl::StatusCode::kUnavailable);
}

// A test CA, a certificate for localhost/127.0.0.1 and one for another name, made with the
// openssl command line in a temporary directory.
class HttpClientTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("anima-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    std::string d = dir_.string();
    std::string script =
        "set -e; cd '" + d +
        "'; "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout ca.key -out ca.pem -days 3650 -subj '/CN=Anima Test CA' "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
        ">/dev/null 2>&1; "
        "for leaf in good:DNS:localhost,IP:127.0.0.1 wrong:DNS:other.example.test; do "
        "name=${leaf%%:*}; san=${leaf#*:}; "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout $name.key -out $name.csr -subj /CN=$name >/dev/null 2>&1; "
        "printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' "
        "$san > $name.ext; "
        "openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out $name.pem -days 3650 -extfile $name.ext >/dev/null 2>&1; done";
    ok_ = std::system(script.c_str()) == 0;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  void SetUp() override {
    if (!ok_) GTEST_SKIP() << "openssl could not make the test certificates";
  }

  static std::string File(const std::string& name) { return (dir_ / name).string(); }
  static testing::TestHandler Hello() {
    return [](const TestRequest&, TestConnection& c) {
      c.Write(JsonResponse(200, "{\"tls\":true}"));
      return true;
    };
  }

  static inline std::filesystem::path dir_;
  static inline bool ok_ = false;
};

TEST_F(HttpClientTlsTest, VerifiesAgainstTheConfiguredCaAndSendsSni) {
  testing::TestTls tls{File("good.pem"), File("good.key")};
  TestHttpServer server(Hello(), &tls);
  HttpClientOptions options;
  options.ca_file = File("ca.pem");
  auto client = NewClient(options);
  Fetch f;
  client->Send(Get("https://localhost:" + std::to_string(server.port()) + "/"), f.Handler());
  ASSERT_TRUE(f.Wait());
  ASSERT_TRUE(f.status->ok()) << *f.status;
  EXPECT_EQ(f.Body(), "{\"tls\":true}");
  ASSERT_EQ(server.sni_names().size(), 1u);
  EXPECT_EQ(server.sni_names()[0], "localhost");  // the bare host, no port
  // An IP address is verified against the certificate's IP entry (and sends no SNI).
  Fetch by_ip;
  HttpClientOptions fresh_options;
  fresh_options.ca_file = File("ca.pem");
  auto fresh = NewClient(fresh_options);
  fresh->Send(Get(server.url("/")), by_ip.Handler());
  ASSERT_TRUE(by_ip.Wait());
  EXPECT_TRUE(by_ip.status->ok()) << *by_ip.status;
}

TEST_F(HttpClientTlsTest, FailsVerificationWithoutTheCa) {
  testing::TestTls tls{File("good.pem"), File("good.key")};
  TestHttpServer server(Hello(), &tls);
  auto client = NewClient();  // the system CA bundle does not know the test CA
  Fetch f;
  client->Send(Get("https://localhost:" + std::to_string(server.port()) + "/"), f.Handler());
  ASSERT_TRUE(f.Wait());
  EXPECT_EQ(f.status->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(f.status->message().find("certificate verify failed"), std::string::npos) << *f.status;
}

TEST_F(HttpClientTlsTest, FailsWhenTheCertificateNamesAnotherHost) {
  testing::TestTls tls{File("wrong.pem"), File("wrong.key")};
  TestHttpServer server(Hello(), &tls);
  HttpClientOptions options;
  options.ca_file = File("ca.pem");
  auto client = NewClient(options);
  Fetch f;
  client->Send(Get("https://localhost:" + std::to_string(server.port()) + "/"), f.Handler());
  ASSERT_TRUE(f.Wait());
  EXPECT_EQ(f.status->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(f.status->message().find("TLS"), std::string::npos) << *f.status;
}

// An in-process HTTP CONNECT proxy on 127.0.0.1:0 (blocking sockets, one thread per tunnel):
// records each CONNECT line and, unless told to refuse, pipes bytes both ways. With
// `authorization`, a CONNECT without exactly that Proxy-Authorization value gets 407.
class ConnectProxy {
 public:
  explicit ConnectProxy(bool refuse = false, std::string authorization = "")
      : refuse_(refuse),
        authorization_(std::move(authorization)),
        acceptor_(ioc_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~ConnectProxy() {
    stopping_ = true;
    {
      // Unblock accept() with one last connection.
      boost::asio::ip::tcp::socket poke(ioc_);
      boost::system::error_code ec;
      poke.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port_)}, ec);
    }
    thread_.join();
    {
      std::lock_guard lock(mu_);
      for (auto& s : sockets_) {
        boost::system::error_code ec;
        s->shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
        s->close(ec);
      }
    }
    for (auto& t : workers_) t.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<std::string> connects() const {
    std::lock_guard lock(mu_);
    return connects_;
  }

 private:
  using Socket = boost::asio::ip::tcp::socket;
  void AcceptLoop() {
    while (!stopping_) {
      auto client = std::make_shared<Socket>(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(*client, ec);
      if (ec || stopping_) return;
      std::lock_guard lock(mu_);
      sockets_.push_back(client);
      workers_.emplace_back([this, client] { Serve(client); });
    }
  }
  void Serve(std::shared_ptr<Socket> client) {
    boost::asio::streambuf head;
    boost::system::error_code ec;
    size_t n = boost::asio::read_until(*client, head, "\r\n\r\n", ec);
    if (ec) return;
    std::string text(boost::asio::buffers_begin(head.data()),
                     boost::asio::buffers_begin(head.data()) + n);
    std::string line = text.substr(0, text.find("\r\n"));
    {
      std::lock_guard lock(mu_);
      connects_.push_back(line);
    }
    if (!authorization_.empty() &&
        text.find("\r\nProxy-Authorization: " + authorization_ + "\r\n") == std::string::npos) {
      boost::asio::write(
          *client,
          boost::asio::buffer(
              std::string("HTTP/1.1 407 Proxy Authentication Required\r\n"
                          "Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")),
          ec);
      return;
    }
    if (refuse_ || line.rfind("CONNECT ", 0) != 0) {
      boost::asio::write(
          *client,
          boost::asio::buffer(std::string("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")),
          ec);
      return;
    }
    std::string authority = line.substr(8, line.find(' ', 8) - 8);
    std::string port = authority.substr(authority.rfind(':') + 1);
    auto upstream = std::make_shared<Socket>(ioc_);
    upstream->connect(
        {boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(std::stoi(port))}, ec);
    if (ec) return;
    {
      std::lock_guard lock(mu_);
      sockets_.push_back(upstream);
    }
    boost::asio::write(
        *client, boost::asio::buffer(std::string("HTTP/1.1 200 Connection established\r\n\r\n")),
        ec);
    auto pipe = [](std::shared_ptr<Socket> from, std::shared_ptr<Socket> to) {
      std::array<char, 4096> buf;
      boost::system::error_code e;
      for (;;) {
        size_t got = from->read_some(boost::asio::buffer(buf), e);
        if (e) break;
        boost::asio::write(*to, boost::asio::buffer(buf.data(), got), e);
        if (e) break;
      }
      to->shutdown(Socket::shutdown_send, e);
    };
    std::thread back(pipe, upstream, client);
    pipe(client, upstream);
    back.join();
  }

  bool refuse_;
  std::string authorization_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Socket>> sockets_;
  std::vector<std::thread> workers_;
  std::vector<std::string> connects_;
};

TEST_F(HttpClientTlsTest, HttpsGoesThroughTheConnectProxyWithEndToEndTls) {
  testing::TestTls tls{File("good.pem"), File("good.key")};
  TestHttpServer server(Hello(), &tls);
  ConnectProxy proxy;
  HttpClientOptions options;
  options.ca_file = File("ca.pem");
  options.https_proxy = proxy.url();
  options.no_proxy = "example.com, .internal";
  auto client = NewClient(options);
  std::string port = std::to_string(server.port());
  Fetch f;
  client->Send(Get("https://localhost:" + port + "/"), f.Handler());
  ASSERT_TRUE(f.Wait());
  ASSERT_TRUE(f.status->ok()) << *f.status;
  EXPECT_EQ(f.Body(), "{\"tls\":true}");
  ASSERT_EQ(proxy.connects().size(), 1u);
  EXPECT_EQ(proxy.connects()[0], "CONNECT localhost:" + port + " HTTP/1.1");
  ASSERT_EQ(server.sni_names().size(), 1u);
  EXPECT_EQ(server.sni_names()[0], "localhost");  // SNI and verification are with the origin
}

TEST_F(HttpClientTlsTest, NoProxyHostsGoDirectAndARefusedConnectIsUnavailable) {
  testing::TestTls tls{File("good.pem"), File("good.key")};
  TestHttpServer server(Hello(), &tls);
  std::string url = "https://localhost:" + std::to_string(server.port()) + "/";
  {
    ConnectProxy proxy;
    HttpClientOptions options;
    options.ca_file = File("ca.pem");
    options.https_proxy = proxy.url();
    options.no_proxy = "LOCALHOST:443";
    auto client = NewClient(options);
    Fetch f;
    client->Send(Get(url), f.Handler());
    ASSERT_TRUE(f.Wait());
    EXPECT_TRUE(f.status->ok()) << *f.status;
    EXPECT_TRUE(proxy.connects().empty());
  }
  ConnectProxy refusing(/*refuse=*/true);
  HttpClientOptions options;
  options.ca_file = File("ca.pem");
  options.https_proxy = refusing.url();
  auto client = NewClient(options);
  Fetch f;
  client->Send(Get(url), f.Handler());
  ASSERT_TRUE(f.Wait());
  EXPECT_EQ(f.status->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(f.status->message().find("403"), std::string::npos) << *f.status;
}

TEST_F(HttpClientTlsTest, ProxyCredentialsFromTheUrlAreSentAsBasicAuthentication) {
  testing::TestTls tls{File("good.pem"), File("good.key")};
  TestHttpServer server(Hello(), &tls);
  std::string url = "https://localhost:" + std::to_string(server.port()) + "/";
  // "anima:p@ss w" in Base64; the URL carries it percent-encoded, as curl takes it.
  ConnectProxy proxy(/*refuse=*/false, "Basic YW5pbWE6cEBzcyB3");
  std::string at = proxy.url().substr(std::string("http://").size());
  {
    HttpClientOptions options;
    options.ca_file = File("ca.pem");
    options.https_proxy = "http://anima:p%40ss%20w@" + at;
    auto client = NewClient(options);
    Fetch f;
    client->Send(Get(url), f.Handler());
    ASSERT_TRUE(f.Wait());
    EXPECT_TRUE(f.status->ok()) << *f.status;
    EXPECT_EQ(f.Body(), "{\"tls\":true}");
  }
  for (std::string credentials : {"", "anima:wrong@"}) {
    HttpClientOptions options;
    options.ca_file = File("ca.pem");
    options.https_proxy = "http://" + credentials + at;
    auto client = NewClient(options);
    Fetch f;
    client->Send(Get(url), f.Handler());
    ASSERT_TRUE(f.Wait());
    EXPECT_EQ(f.status->code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(f.status->message().find("407"), std::string::npos) << *f.status;
    EXPECT_EQ(f.status->message().find("wrong"), std::string::npos) << "no password in errors";
  }
  EXPECT_EQ(proxy.connects().size(), 3u);
}

TEST(ProxyCredentialsTest, SplitDecodeAndRedact) {
  auto plain = SplitProxyCredentials("http://proxy:3128");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->url, "http://proxy:3128");
  EXPECT_FALSE(plain->user_password.has_value());
  auto full = SplitProxyCredentials("http://us%3Aer:pa:ss%25@proxy:3128/");
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->url, "http://proxy:3128/");
  EXPECT_EQ(full->user_password, "us:er:pa:ss%");
  auto user_only = SplitProxyCredentials("http://me@proxy:3128");
  ASSERT_TRUE(user_only.ok());
  EXPECT_EQ(user_only->user_password, "me:");
  EXPECT_FALSE(SplitProxyCredentials("http://me:%zz@proxy:3128").ok());
  EXPECT_FALSE(SplitProxyCredentials("http://me:%4@proxy:3128").ok());
  EXPECT_EQ(RedactUserInfo("http://me:secret@proxy:3128"), "http://***@proxy:3128");
  EXPECT_EQ(RedactUserInfo("http://proxy:3128/a@b"), "http://proxy:3128/a@b");
  auto bad = HttpClient::Create({.https_proxy = "https://me:secret@proxy:3128"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("secret"), std::string::npos) << bad.status();
}

TEST(NoProxyTest, HostsSuffixesAndWildcard) {
  EXPECT_TRUE(NoProxyMatches("api.openai.com", "openai.com"));
  EXPECT_TRUE(NoProxyMatches("api.openai.com", " .openai.com ,x"));
  EXPECT_TRUE(NoProxyMatches("openai.com", ".openai.com"));
  EXPECT_FALSE(NoProxyMatches("notopenai.com", "openai.com"));
  EXPECT_TRUE(NoProxyMatches("anything", "*"));
  EXPECT_TRUE(NoProxyMatches("Localhost", "localhost:8080"));
  EXPECT_FALSE(NoProxyMatches("api.venice.ai", ""));
  EXPECT_FALSE(HttpClient::Create({.https_proxy = "https://proxy:3128"}).ok());
  EXPECT_FALSE(HttpClient::Create({.https_proxy = "not a url"}).ok());
}

}  // namespace
}  // namespace anima::broker
