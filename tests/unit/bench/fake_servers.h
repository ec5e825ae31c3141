#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <nlohmann/json.hpp>

namespace anima::bench::testing {

inline constexpr char kFakeJobId[] = "job-fake";
// The fake job's progress events (seq 1 to 6, a retry between two attempts, one message with
// terminal escapes in it), without type, id and job_id.
std::vector<nlohmann::json> FakeJobEvents();
// Its result: succeeded with files (two of which name paths outside any output directory), or
// failed with an output tail.
nlohmann::json FakeJobResult(const std::string& id, bool fail);

// A stand-in for the gateway on 127.0.0.1:<any port>, one thread per connection (synchronous
// Beast). On connect it sends a welcome and a consciousness_state broadcast; it answers `chat`
// with chat_delta frames (when stream is true) then chat_response, or with error rate_limited
// when the message is "please fail", overloaded with retry_after_ms 50 when it is "please back
// off"; `ping` with pong; `consciousness_query` with a state; `self_coding_request` with
// accepted (job kFakeJobId), the events of FakeJobEvents() and FakeJobResult() (failed when the
// task is "fail me"); `self_coding_watch` of that job with the events after after_seq and the
// result; invalid JSON with error invalid_json (no id).
class FakeGateway {
 public:
  FakeGateway();
  ~FakeGateway();
  int port() const { return port_; }
  std::string url() const { return "ws://127.0.0.1:" + std::to_string(port_) + "/"; }
  int chats() const { return chats_.load(); }
  // When each chat arrived, in order.
  std::vector<std::chrono::steady_clock::time_point> chat_times() const {
    std::lock_guard<std::mutex> lock(mu_);
    return chat_times_;
  }

 private:
  void Serve(std::shared_ptr<boost::asio::ip::tcp::socket> socket);

  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  int port_ = 0;
  std::atomic<int> chats_{0};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::vector<std::chrono::steady_clock::time_point> chat_times_;
  std::vector<std::shared_ptr<boost::asio::ip::tcp::socket>> sockets_;
  std::vector<std::thread> sessions_;
  std::thread accept_thread_;
};

// A stand-in for the simulator: POST -> an OpenAI chat completion (JSON, or SSE ending in
// data: [DONE] when the body asks for stream), keep-alive; 401 without "Bearer sim-key".
class FakeSim {
 public:
  FakeSim();
  ~FakeSim();
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/v1/chat/completions";
  }
  int requests() const { return requests_.load(); }

 private:
  void Serve(std::shared_ptr<boost::asio::ip::tcp::socket> socket);

  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  int port_ = 0;
  std::atomic<int> requests_{0};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::vector<std::chrono::steady_clock::time_point> chat_times_;
  std::vector<std::shared_ptr<boost::asio::ip::tcp::socket>> sockets_;
  std::vector<std::thread> sessions_;
  std::thread accept_thread_;
};

}  // namespace anima::bench::testing
