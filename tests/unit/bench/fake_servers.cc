#include "tests/unit/bench/fake_servers.h"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

namespace anima::bench::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

struct Listener {
  tcp::acceptor& acceptor;
  asio::io_context& io;
  std::atomic<bool>& stopping;
  std::mutex& mu;
  std::vector<std::shared_ptr<tcp::socket>>& sockets;
  std::vector<std::thread>& sessions;
};

void Listen(tcp::acceptor& acceptor, int& port) {
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  acceptor.open(endpoint.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen();
  port = acceptor.local_endpoint().port();
}

// Accepts until `stopping`; each connection gets its own thread running `serve`.
std::thread AcceptLoop(Listener l, std::function<void(std::shared_ptr<tcp::socket>)> serve) {
  return std::thread([l, serve] {
    for (;;) {
      auto socket = std::make_shared<tcp::socket>(l.io);
      beast::error_code ec;
      l.acceptor.accept(*socket, ec);
      if (ec || l.stopping) return;
      std::lock_guard<std::mutex> lock(l.mu);
      l.sockets.push_back(socket);
      l.sessions.emplace_back(serve, socket);
    }
  });
}

// Wakes the blocking accept() with a connection of our own, then ends every session by shutting
// its socket down (the sessions then fail their blocking read and return).
void Stop(Listener l, int port, std::thread& accept_thread) {
  l.stopping = true;
  {
    asio::io_context io;
    tcp::socket poke(io);
    beast::error_code ec;
    poke.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)}, ec);
    accept_thread.join();
  }
  beast::error_code ec;
  l.acceptor.close(ec);
  std::lock_guard<std::mutex> lock(l.mu);
  for (auto& s : l.sockets) s->shutdown(tcp::socket::shutdown_both, ec);
  for (auto& t : l.sessions) t.join();
}

}  // namespace

FakeGateway::FakeGateway() : acceptor_(io_) {
  Listen(acceptor_, port_);
  accept_thread_ = AcceptLoop({acceptor_, io_, stopping_, mu_, sockets_, sessions_},
                              [this](std::shared_ptr<tcp::socket> s) { Serve(std::move(s)); });
}

FakeGateway::~FakeGateway() {
  Stop({acceptor_, io_, stopping_, mu_, sockets_, sessions_}, port_, accept_thread_);
}

std::vector<nlohmann::json> FakeJobEvents() {
  using nlohmann::json;
  return {
      json{{"seq", 1}, {"stage", "queued"}, {"attempt", 0}, {"percent", 0}, {"message", "queued"}},
      json{{"seq", 2},
           {"stage", "generating"},
           {"attempt", 1},
           {"percent", 10},
           {"message", "asking"}},
      json{{"seq", 3},
           {"stage", "testing"},
           {"attempt", 1},
           {"percent", 40},
           {"message", "2 tests"}},
      // A hostile message: a terminal title escape and a cursor move, which must not reach it.
      json{{"seq", 4},
           {"stage", "retrying"},
           {"attempt", 1},
           {"percent", 50},
           {"message", "1 failed \x1b]0;pwned\x07\x1b[2J"}},
      json{{"seq", 5},
           {"stage", "testing"},
           {"attempt", 2},
           {"percent", 80},
           {"message", "2 tests"}},
      json{{"seq", 6},
           {"stage", "succeeded"},
           {"attempt", 2},
           {"percent", 100},
           {"message", "done"}},
  };
}

nlohmann::json FakeJobResult(const std::string& id, bool fail) {
  nlohmann::json result = {{"type", "self_coding_result"},
                           {"id", id},
                           {"job_id", kFakeJobId},
                           {"status", fail ? "failed" : "succeeded"},
                           {"attempts", 2},
                           {"tests", {{"passed", fail ? 1 : 2}, {"failed", fail ? 1 : 0}}}};
  if (fail) {
    result["reason"] = "tests failed after 2 attempts";
    result["tests"]["output_tail"] = "E   assert 1 == 2";
    return result;
  }
  result["files"] = {{"solution.py", "def f():\n    return 1\n"},
                     {"pkg/util.py", "X = 1"},
                     {"../escape.py", "outside"},
                     {"/etc/abs.py", "absolute"}};
  return result;
}

void FakeGateway::Serve(std::shared_ptr<tcp::socket> socket) {
  try {
    websocket::stream<tcp::socket&> ws(*socket);
    ws.accept();
    ws.text(true);
    ws.write(asio::buffer(std::string(
        R"({"type":"welcome","session_id":"s-1","protocol":1,"limits":{"max_message_bytes":65536,"max_in_flight":32,"messages_per_second":100000}})")));
    ws.write(asio::buffer(std::string(R"({"type":"consciousness_state","harmony":1.0})")));
    beast::flat_buffer buffer;
    for (;;) {
      ws.read(buffer);
      const std::string text = beast::buffers_to_string(buffer.data());
      buffer.consume(buffer.size());
      auto frame = nlohmann::json::parse(text, nullptr, false);
      auto send = [&](const nlohmann::json& j) { ws.write(asio::buffer(j.dump())); };
      if (!ws.got_text()) {
        send({{"type", "error"}, {"code", "invalid_message"}, {"message", "binary"}});
        continue;
      }
      if (!frame.is_object()) {
        send({{"type", "error"}, {"code", "invalid_json"}, {"message", "not JSON"}});
        continue;
      }
      const std::string type = frame.value("type", "");
      const std::string id = frame.value("id", "g-1");
      if (type == "chat") {
        ++chats_;
        {
          std::lock_guard<std::mutex> lock(mu_);
          chat_times_.push_back(std::chrono::steady_clock::now());
        }
        const std::string message = frame.value("message", "");
        if (message == "please fail") {
          send({{"type", "error"}, {"id", id}, {"code", "rate_limited"}, {"message", "slow"}});
          continue;
        }
        if (message == "please back off") {
          send({{"type", "error"},
                {"id", id},
                {"code", "overloaded"},
                {"message", "busy"},
                {"retry_after_ms", 50}});
          continue;
        }
        if (frame.value("stream", false)) {
          send({{"type", "chat_delta"}, {"id", id}, {"delta", "echo: "}, {"index", 0}});
          send({{"type", "chat_delta"}, {"id", id}, {"delta", message}, {"index", 1}});
        }
        send({{"type", "chat_response"},
              {"id", id},
              {"conversation_id", "conv-1"},
              {"message", "echo: " + message},
              {"provider", "openai"},
              {"model", "gpt-4o-mini"},
              {"finish_reason", "stop"},
              {"usage", {{"prompt_tokens", 1}, {"completion_tokens", 2}, {"total_tokens", 3}}},
              {"latency_ms", 1}});
      } else if (type == "self_coding_request" || type == "self_coding_watch") {
        if (type == "self_coding_watch" && frame.value("job_id", "") != kFakeJobId) {
          send({{"type", "error"}, {"id", id}, {"code", "not_found"}, {"message", "no such job"}});
          continue;
        }
        const bool fail = frame.value("task", "") == "fail me";
        if (type == "self_coding_request") {
          send({{"type", "self_coding_accepted"}, {"id", id}, {"job_id", kFakeJobId}});
        }
        const int64_t after = frame.value("after_seq", int64_t{0});
        for (nlohmann::json event : FakeJobEvents()) {
          if (event["seq"].get<int64_t>() <= after) continue;
          event["type"] = "self_coding_progress";
          event["id"] = id;
          event["job_id"] = kFakeJobId;
          send(event);
        }
        send(FakeJobResult(id, fail));
      } else if (type == "self_coding_list") {
        // The scripted job, unless asked for another status; with `all`, another principal's too.
        nlohmann::json jobs = nlohmann::json::array();
        if (frame.value("status", "succeeded") == "succeeded") {
          jobs.push_back({{"job_id", kFakeJobId},
                          {"status", "succeeded"},
                          {"task", "write f\x1b]0;pwned\x07 quickly"},
                          {"language", "python"},
                          {"attempts", 2},
                          {"last_seq", 6},
                          {"created_at", "2026-12-01T10:00:00.000Z"},
                          {"updated_at", "2026-12-01T10:01:00.000Z"},
                          {"principal", "local"}});
        }
        if (frame.value("all", false)) {
          jobs.push_back({{"job_id", "job-other"},
                          {"status", "failed"},
                          {"reason", "tests failed after 3 attempts"},
                          {"task", std::string(100, 'x')},
                          {"language", "cpp"},
                          {"attempts", 3},
                          {"updated_at", "2026-12-01T09:00:00.000Z"},
                          {"principal", "alice"}});
        }
        send({{"type", "self_coding_jobs"}, {"id", id}, {"jobs", jobs}});
      } else if (type == "ping") {
        send({{"type", "pong"}, {"id", id}});
      } else if (type == "consciousness_query") {
        send({{"type", "consciousness_state"}, {"id", id}, {"harmony", 1.0}});
      } else {
        send({{"type", "error"}, {"id", id}, {"code", "unknown_type"}, {"message", type}});
      }
    }
  } catch (const std::exception&) {
    // The client went away.
  }
}

FakeSim::FakeSim() : acceptor_(io_) {
  Listen(acceptor_, port_);
  accept_thread_ = AcceptLoop({acceptor_, io_, stopping_, mu_, sockets_, sessions_},
                              [this](std::shared_ptr<tcp::socket> s) { Serve(std::move(s)); });
}

FakeSim::~FakeSim() {
  Stop({acceptor_, io_, stopping_, mu_, sockets_, sessions_}, port_, accept_thread_);
}

void FakeSim::Serve(std::shared_ptr<tcp::socket> socket_ptr) {
  tcp::socket& socket = *socket_ptr;
  try {
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      http::read(socket, buffer, req);
      ++requests_;
      http::response<http::string_body> res{http::status::ok, req.version()};
      res.keep_alive(req.keep_alive());
      auto body = nlohmann::json::parse(req.body(), nullptr, false);
      if (req[http::field::authorization] != "Bearer sim-key") {
        res.result(http::status::unauthorized);
        res.body() = R"({"error":{"message":"bad key","type":"invalid_request_error"}})";
      } else if (body.is_object() && body.value("stream", false)) {
        res.set(http::field::content_type, "text/event-stream");
        res.chunked(true);
        res.body() =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n"
            "data: [DONE]\n\n";
      } else {
        res.set(http::field::content_type, "application/json");
        res.body() = R"({"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]})";
      }
      res.prepare_payload();
      http::write(socket, res);
      if (!res.keep_alive()) return;
    }
  } catch (const std::exception&) {
  }
}

}  // namespace anima::bench::testing
