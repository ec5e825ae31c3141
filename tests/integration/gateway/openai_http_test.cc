// The real anima-gateway binary's OpenAI-compatible HTTP API against an in-process fake Router,
// over real sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <utility>  // before Boost 1.74's asio, which uses std::exchange unincluded

#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gateway/principals.h"
#include "gtest/gtest.h"
#include "tests/integration/gateway/fake_router.h"
#include "tests/integration/gateway/gateway_over_fake_router.h"
#include "tests/integration/harness/harness.h"

namespace anima::gateway {
namespace {

using namespace std::chrono_literals;
using anima::testing::Eventually;
using anima::testing::HttpRequest;
using anima::testing::HttpResponse;
using Json = nlohmann::json;

// The `data:` payloads of a server-sent event stream, in order.
std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    std::string event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

Json Chat(const std::string& message, Json extra = Json::object()) {
  Json body = {{"model", "auto"}, {"messages", {{{"role", "user"}, {"content", message}}}}};
  for (auto& [k, v] : extra.items()) body[k] = v;
  return body;
}

class OpenAiHttpTest : public testing::GatewayOverFakeRouterTest {
 protected:
  HttpResponse Post(const std::string& body, std::map<std::string, std::string> headers = {}) {
    return HttpRequest(gateway_->port("http"), "POST", "/v1/chat/completions", body, headers);
  }

  // Sends a completion request on a raw connection that the test closes when it likes (closing it
  // is the client going away); -1 when the request could not be sent.
  int SendAndKeepOpen(const std::string& body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(gateway_->port("http")));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string req =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
        "application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
      close(fd);
      return -1;
    }
    return fd;
  }

  // Expects an OpenAI error object with `status` and `code`.
  Json ExpectError(const HttpResponse& r, int status, const std::string& type,
                   const std::string& code) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.headers.count("content-type") ? r.headers.at("content-type") : "",
              "application/json");
    Json j = Json::parse(r.body, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("error")) << r.body;
    if (!j.is_object() || !j.contains("error")) return Json();
    const Json& e = j["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << r.body;
    EXPECT_EQ(e["type"], type) << r.body;
    EXPECT_EQ(e["code"], code) << r.body;
    EXPECT_TRUE(e.contains("param")) << r.body;
    return e;
  }
};

TEST_F(OpenAiHttpTest, NonStreamingCompletion) {
  StartGateway();
  Json body = {{"model", "fake/fake-1"},
               {"temperature", 0.5},
               {"max_tokens", 42},
               {"messages",
                {{{"role", "system"}, {"content", "be brief"}},
                 {{"role", "developer"}, {"content", "be kind"}},
                 {{"role", "user"}, {"content", "first"}},
                 {{"role", "assistant"}, {"content", "reply"}},
                 {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hello"}}}}}}}};
  auto r = Post(body.dump());
  ASSERT_EQ(r.status, 200) << r.body << gateway_->Log();
  EXPECT_EQ(r.headers["content-type"], "application/json");
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_GT(j["created"].get<int64_t>(), 0);
  EXPECT_EQ(j["model"], "fake-1");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "echo: hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"],
            Json({{"prompt_tokens", 3}, {"completion_tokens", 2}, {"total_tokens", 5}}));

  // What the router got: one chat envelope carrying the whole request.
  auto e = router_->last_envelope();
  EXPECT_EQ(e.type(), "chat");
  EXPECT_EQ(e.session_id().rfind("h-", 0), 0u) << e.session_id();
  EXPECT_TRUE(e.chat().stateless()) << "the router must not remember API conversations";
  EXPECT_FALSE(router_->last_request_id().empty());
  const auto& chat = e.chat();
  EXPECT_EQ(chat.provider(), "fake");
  EXPECT_EQ(chat.model(), "fake-1");
  EXPECT_EQ(chat.system(), "be brief\n\nbe kind");
  EXPECT_EQ(chat.message(), "hello");
  ASSERT_EQ(chat.history_size(), 2);
  EXPECT_EQ(chat.history(0).role(), "user");
  EXPECT_EQ(chat.history(0).content(), "first");
  EXPECT_EQ(chat.history(1).role(), "assistant");
  EXPECT_EQ(chat.history(1).content(), "reply");
  EXPECT_DOUBLE_EQ(chat.temperature(), 0.5);
  EXPECT_EQ(chat.max_tokens(), 42);
  EXPECT_FALSE(chat.stream());
}

TEST_F(OpenAiHttpTest, ModelAutoAndPlainName) {
  StartGateway();
  ASSERT_EQ(Post(Chat("a").dump()).status, 200);
  EXPECT_TRUE(router_->last_envelope().chat().provider().empty());
  EXPECT_TRUE(router_->last_envelope().chat().model().empty());
  ASSERT_EQ(Post(Chat("a", {{"model", "gpt-4o-mini"}, {"max_completion_tokens", 7}}).dump()).status,
            200);
  EXPECT_TRUE(router_->last_envelope().chat().provider().empty());
  EXPECT_EQ(router_->last_envelope().chat().model(), "gpt-4o-mini");
  EXPECT_EQ(router_->last_envelope().chat().max_tokens(), 7);
}

TEST_F(OpenAiHttpTest, StreamingWithoutUsage) {
  StartGateway();
  auto r = Post(Chat("hi", {{"stream", true}}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  EXPECT_EQ(r.headers["transfer-encoding"], "chunked");
  auto events = SseData(r.body);
  ASSERT_EQ(events.size(), 5u) << r.body;
  std::vector<Json> chunks;
  for (size_t i = 0; i + 1 < events.size(); ++i) chunks.push_back(Json::parse(events[i]));
  for (const auto& c : chunks) {
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["id"], chunks[0]["id"]);
    EXPECT_FALSE(c.contains("usage"));
  }
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chunks[1]["choices"][0]["delta"]["content"], "Hel");
  EXPECT_TRUE(chunks[1]["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(chunks[2]["choices"][0]["delta"]["content"], "lo!");
  EXPECT_EQ(chunks[3]["choices"][0]["delta"], Json::object());
  EXPECT_EQ(chunks[3]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[4], "[DONE]");
  EXPECT_TRUE(router_->last_envelope().chat().stream());
}

TEST_F(OpenAiHttpTest, StreamingWithUsage) {
  StartGateway();
  auto r =
      Post(Chat("hi", {{"stream", true}, {"stream_options", {{"include_usage", true}}}}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  auto events = SseData(r.body);
  ASSERT_EQ(events.size(), 6u) << r.body;
  Json finish = Json::parse(events[3]);
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "stop");
  Json usage = Json::parse(events[4]);
  EXPECT_EQ(usage["choices"], Json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 5);
  EXPECT_EQ(events[5], "[DONE]");
}

TEST_F(OpenAiHttpTest, KeepAliveCarriesSeveralCompletions) {
  StartGateway();
  // Beast's own client on one connection: stream, then non-stream, then an error.
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.expires_after(30s);
  stream.connect({boost::asio::ip::make_address("127.0.0.1"),
                  static_cast<unsigned short>(gateway_->port("http"))});
  beast::flat_buffer buffer;
  auto exchange = [&](const std::string& body) {
    http::request<http::string_body> req{http::verb::post, "/v1/chat/completions", 11};
    req.set(http::field::host, "x");
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    return res;
  };
  auto first = exchange(Chat("one", {{"stream", true}}).dump());
  EXPECT_EQ(first.result_int(), 200);
  EXPECT_EQ(SseData(first.body()).back(), "[DONE]");
  // One connection is one session for the router's round robin.
  std::string session = router_->last_envelope().session_id();
  EXPECT_EQ(session.rfind("h-", 0), 0u) << session;
  auto second = exchange(Chat("two").dump());
  EXPECT_EQ(router_->last_envelope().session_id(), session);
  EXPECT_EQ(second.result_int(), 200);
  EXPECT_EQ(Json::parse(second.body())["choices"][0]["message"]["content"], "echo: two");
  auto third = exchange("{");
  EXPECT_EQ(third.result_int(), 400);
  EXPECT_EQ(router_->dispatched(), 2);
}

TEST_F(OpenAiHttpTest, MalformedRequestsAre400) {
  StartGateway();
  ExpectError(Post("{not json"), 400, "invalid_request_error", "invalid_json");
  ExpectError(Post("[1,2]"), 400, "invalid_request_error", "invalid_json");
  ExpectError(Post(""), 400, "invalid_request_error", "invalid_json");
  auto e =
      ExpectError(Post(R"({"model":"auto"})"), 400, "invalid_request_error", "invalid_message");
  EXPECT_EQ(e["param"], "messages");
  ExpectError(Post(R"({"messages":[]})"), 400, "invalid_request_error", "invalid_message");
  ExpectError(Post(R"({"messages":"hi"})"), 400, "invalid_request_error", "invalid_message");
  e = ExpectError(
      Post(R"({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]})"),
      400, "invalid_request_error", "invalid_message");
  EXPECT_EQ(e["param"], "messages[1].role");
  ExpectError(Post(R"({"messages":[{"role":"system","content":"a"}]})"), 400,
              "invalid_request_error", "invalid_message");
  ExpectError(Post(R"({"messages":[{"role":"tool","content":"a"},{"role":"user","content":"b"}]})"),
              400, "invalid_request_error", "invalid_message");
  ExpectError(Post(R"({"messages":[{"role":"user","content":42}]})"), 400, "invalid_request_error",
              "invalid_message");
  ExpectError(Post(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})"), 400,
              "invalid_request_error", "invalid_message");
  ExpectError(Post(R"({"messages":[1]})"), 400, "invalid_request_error", "invalid_message");
  ExpectError(Post(Chat("a", {{"temperature", "hot"}}).dump()), 400, "invalid_request_error",
              "invalid_message");
  ExpectError(Post(Chat("a", {{"temperature", 3}}).dump()), 400, "invalid_request_error",
              "invalid_message");
  ExpectError(Post(Chat("a", {{"max_tokens", -1}}).dump()), 400, "invalid_request_error",
              "invalid_message");
  ExpectError(Post(Chat("a", {{"stream", "yes"}}).dump()), 400, "invalid_request_error",
              "invalid_message");
  ExpectError(Post(Chat("a", {{"model", 5}}).dump()), 400, "invalid_request_error",
              "invalid_message");
  ExpectError(Post(Chat("a", {{"model", "/x"}}).dump()), 400, "invalid_request_error",
              "invalid_message");
  ExpectError(Post(Chat("a", {{"n", 2}}).dump()), 400, "invalid_request_error", "invalid_message");
  // Invalid UTF-8 inside a JSON string is not JSON.
  ExpectError(Post("{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"), 400,
              "invalid_request_error", "invalid_json");
  EXPECT_EQ(router_->dispatched(), 0);
  // Wrong method, unknown path.
  auto get = HttpRequest(gateway_->port("http"), "GET", "/v1/chat/completions");
  ExpectError(get, 405, "invalid_request_error", "method_not_allowed");
  ExpectError(HttpRequest(gateway_->port("http"), "POST", "/v1/embeddings", "{}"), 404,
              "invalid_request_error", "not_found");
  // The gateway still answers.
  EXPECT_EQ(Post(Chat("ok").dump()).status, 200);
}

TEST_F(OpenAiHttpTest, OversizedBodyIs413) {
  StartGateway({"--max-message-bytes=4096"});
  auto r = Post(Chat(std::string(100 * 1024, 'x')).dump());
  ExpectError(r, 413, "invalid_request_error", "too_large");
  EXPECT_EQ(router_->dispatched(), 0);
  EXPECT_EQ(Post(Chat("small").dump()).status, 200);
}

TEST_F(OpenAiHttpTest, RouterErrorsMapToHttpStatuses) {
  StartGateway();
  auto r = Post(Chat("error:overloaded").dump());
  ExpectError(r, 429, "rate_limit_error", "overloaded");
  EXPECT_EQ(r.headers["retry-after"], "2");
  r = Post(Chat("error:rate_limited").dump());
  ExpectError(r, 429, "rate_limit_error", "rate_limited");
  EXPECT_EQ(r.headers["retry-after"], "2");
  auto e =
      ExpectError(Post(Chat("error:provider_error").dump()), 502, "server_error", "provider_error");
  EXPECT_NE(e["message"].get<std::string>().find("upstream broke"), std::string::npos);
  ExpectError(Post(Chat("error:unavailable").dump()), 503, "server_error", "unavailable");
  ExpectError(Post(Chat("error:deadline_exceeded").dump()), 504, "server_error",
              "deadline_exceeded");
  ExpectError(Post(Chat("error:invalid_message").dump()), 400, "invalid_request_error",
              "invalid_message");
  ExpectError(Post(Chat("fail:UNAVAILABLE").dump()), 503, "server_error", "unavailable");
  ExpectError(Post(Chat("fail:DEADLINE_EXCEEDED").dump()), 504, "server_error",
              "deadline_exceeded");
  ExpectError(Post(Chat("fail:INTERNAL").dump()), 500, "server_error", "internal");
}

TEST_F(OpenAiHttpTest, ErrorAfterStreamStartedEndsTheStream) {
  StartGateway();
  auto r = Post(Chat("error:provider_error", {{"stream", true}}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  auto events = SseData(r.body);
  ASSERT_EQ(events.size(), 3u) << r.body;
  EXPECT_EQ(Json::parse(events[1])["choices"][0]["delta"]["content"], "Hel");
  EXPECT_EQ(Json::parse(events[2])["error"]["code"], "provider_error");
  // An error before anything streamed still gets its status.
  ExpectError(Post(Chat("fail:UNAVAILABLE", {{"stream", true}}).dump()), 503, "server_error",
              "unavailable");
}

TEST_F(OpenAiHttpTest, RouterDownIs503) {
  StartGateway();
  router_->Stop();
  ExpectError(Post(Chat("hi").dump()), 503, "server_error", "unavailable");
}

TEST_F(OpenAiHttpTest, ClientDisconnectCancelsTheRouterCall) {
  StartGateway();
  for (bool stream : {false, true}) {
    int before = router_->cancelled();
    int dispatched = router_->dispatched();
    int fd = SendAndKeepOpen(Chat("hang", {{"stream", stream}}).dump());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(Eventually([&] { return router_->dispatched() > dispatched; }));
    close(fd);
    EXPECT_TRUE(Eventually([&] { return router_->cancelled() > before; }))
        << "stream=" << stream << "\n"
        << gateway_->Log();
  }
}

// The same admission as a WebSocket chat: past what the path serves a completion is refused 429
// `overloaded` with Retry-After, at once when the queue stands (its oldest has waited past the
// target) and after --admission-max-queue-wait-ms when it waited that long; neither reaches the
// router.
TEST_F(OpenAiHttpTest, OverloadIs429WithRetryAfter) {
  StartGateway({"--admission-max-in-flight=1", "--admission-queue-target-ms=1",
                "--admission-max-queue-wait-ms=2000"});
  ASSERT_TRUE(Eventually([&] { return router_->routes_listed() > 0; }));
  // One completion takes chat's only slot and keeps it.
  int fd = SendAndKeepOpen(Chat("hang").dump());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 1; }));

  HttpResponse waited;
  std::thread held([&] { waited = Post(Chat("second").dump()); });
  ASSERT_TRUE(Eventually([&] {
    auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
    return m["anima_gateway_admission_waiting_sessions{type=\"chat\"}"] == 1;
  }));
  std::this_thread::sleep_for(20ms);  // the held one has now waited past 1 ms
  auto refused = Post(Chat("third").dump());
  ExpectError(refused, 429, "rate_limit_error", "overloaded");
  EXPECT_EQ(refused.headers["retry-after"], "1");
  EXPECT_GE(std::stoi(refused.headers["retry-after-ms"]), 100);
  held.join();
  ExpectError(waited, 429, "rate_limit_error", "overloaded");
  EXPECT_EQ(router_->dispatched(), 1) << "neither reached the router";
  close(fd);
  EXPECT_TRUE(Eventually([&] { return router_->cancelled() == 1; }));
  EXPECT_EQ(Post(Chat("after").dump()).status, 200) << "the slot came back";
}

TEST_F(OpenAiHttpTest, AuthAppliesToTheApi) {
  char dir[] = "/tmp/anima-gateway-oai.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string tokens = std::string(dir) + "/keys.json";
  std::ofstream(tokens)
      << R"({"principals": {"app": {}}, "keys": [{"principal": "app", "sha256": ")"
      << KeyRing::Sha256Hex("sk-test") << R"("}]})";
  StartGateway({"--auth-keys-file=" + tokens});
  auto r = Post(Chat("hi").dump());
  ExpectError(r, 401, "authentication_error", "unauthenticated");
  EXPECT_EQ(r.headers["www-authenticate"], "Bearer");
  ExpectError(Post(Chat("hi").dump(), {{"Authorization", "Bearer wrong"}}), 401,
              "authentication_error", "unauthenticated");
  EXPECT_EQ(router_->dispatched(), 0);
  EXPECT_EQ(Post(Chat("hi").dump(), {{"Authorization", "Bearer sk-test"}}).status, 200);
  std::remove(tokens.c_str());
  rmdir(dir);
}

TEST_F(OpenAiHttpTest, SigtermLetsACompletionInFlightFinish) {
  StartGateway({"--drain-timeout-ms=10000"});
  HttpResponse late;
  std::thread client([&] { late = Post(Chat("slow:1500").dump()); });
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 1; }));
  gateway_->Signal(SIGTERM);
  client.join();
  EXPECT_EQ(late.status, 200) << late.body << gateway_->Log();
  EXPECT_EQ(Json::parse(late.body, nullptr, false)["choices"][0]["message"]["content"],
            "echo: slow:1500");
  EXPECT_EQ(gateway_->Wait(), 0) << gateway_->Log();
}

TEST_F(OpenAiHttpTest, ModelsList) {
  StartGateway();
  auto r = HttpRequest(gateway_->port("http"), "GET", "/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "application/json");
  Json expected = {
      {"object", "list"},
      {"data",
       {{{"id", "fake/fake-1"}, {"object", "model"}, {"created", 0}, {"owned_by", "fake"}},
        {{"id", "sim/sim-large"}, {"object", "model"}, {"created", 0}, {"owned_by", "sim"}}}}};
  EXPECT_EQ(Json::parse(r.body), expected);
  ExpectError(HttpRequest(gateway_->port("http"), "POST", "/v1/models", "{}"), 405,
              "invalid_request_error", "method_not_allowed");
  router_->FailListModels();
  ExpectError(HttpRequest(gateway_->port("http"), "GET", "/v1/models"), 503, "server_error",
              "unavailable");
  router_->Stop();
  ExpectError(HttpRequest(gateway_->port("http"), "GET", "/v1/models"), 503, "server_error",
              "unavailable");
}

}  // namespace
}  // namespace anima::gateway
