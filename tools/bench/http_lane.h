#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "tools/bench/load_lane.h"
#include "tools/bench/ws_lane.h"
#include "tools/cli/url.h"

namespace anima::bench {

// A lane straight at an OpenAI-compatible endpoint (the simulator): `in_flight` keep-alive
// HTTP/1.1 connections (no pipelining, so one request per connection at a time). A request
// that finds every connection busy waits in the lane's queue; in open loop that wait is part of
// its latency, as it should be. Streamed answers count as complete at `data: [DONE]`.
class HttpLane : public Lane {
 public:
  HttpLane(boost::asio::io_context& io, int index, const LoadPlan& plan, LaneStats& stats,
           cli::Url url, std::string api_key, const ChatLoad& load, int connections);

  void Connect(std::function<void(std::string error)> done) override;
  void Abort() override;

 private:
  struct Conn {
    explicit Conn(boost::asio::io_context& io) : stream(io) {}
    boost::beast::tcp_stream stream;
    boost::beast::flat_buffer buffer;
    std::optional<boost::beast::http::response_parser<boost::beast::http::string_body>> parser;
    uint64_t seq = 0;
    bool busy = false;   // a request is on the wire, or the connection is being re-opened
    bool alive = false;  // connected
    size_t scanned = 0;  // body bytes already searched for [DONE]
    std::optional<Clock::time_point> done_at;
  };

  void Transmit(uint64_t seq) override;
  void Shutdown() override;
  void StartRequest(Conn& c, uint64_t seq);
  void OnWritten(Conn& c, boost::beast::error_code ec);
  void ReadSome(Conn& c);
  void OnRead(Conn& c, boost::beast::error_code ec);
  void OnConnectionError(Conn& c, std::string_view error);
  void Reconnect(Conn& c);
  void ServeQueue(Conn& c);

  boost::asio::io_context& io_;
  cli::Url url_;
  const bool stream_;
  boost::beast::http::request<boost::beast::http::string_body> request_;
  boost::asio::ip::tcp::resolver::results_type endpoints_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::deque<uint64_t> waiting_;
  bool shut_ = false;
};

}  // namespace anima::bench
