#include "tools/bench/http_lane.h"

#include <algorithm>
#include <charconv>

#include <boost/asio/connect.hpp>
#include <nlohmann/json.hpp>

namespace anima::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr std::string_view kDone = "data: [DONE]";
constexpr auto kConnectTimeout = std::chrono::seconds(10);
}  // namespace

HttpLane::HttpLane(asio::io_context& io, int index, const LoadPlan& plan, LaneStats& stats,
                   cli::Url url, std::string api_key, const ChatLoad& load, int connections)
    : Lane(io, index, plan, stats), io_(io), url_(std::move(url)), stream_(load.stream) {
  nlohmann::json body = {
      {"model", load.model.empty() ? "gpt-4o-mini" : load.model},
      {"messages", nlohmann::json::array({{{"role", "user"}, {"content", load.message}}})},
      {"stream", load.stream}};
  request_ = {http::verb::post, url_.target, 11};
  request_.set(http::field::host, url_.HostHeader());
  request_.set(http::field::user_agent, "anima-bench/" ANIMA_VERSION);
  request_.set(http::field::content_type, "application/json");
  request_.set(http::field::authorization, "Bearer " + api_key);
  request_.keep_alive(true);
  request_.body() = body.dump();
  request_.prepare_payload();
  for (int i = 0; i < connections; ++i) conns_.push_back(std::make_unique<Conn>(io));
}

void HttpLane::Connect(std::function<void(std::string error)> done) {
  tcp::resolver resolver(io_);
  beast::error_code ec;
  endpoints_ = resolver.resolve(url_.host, url_.port, ec);
  if (ec) return done("resolve " + url_.HostHeader() + ": " + ec.message());
  auto remaining = std::make_shared<size_t>(conns_.size());
  auto first_error = std::make_shared<std::string>();
  auto shared_done = std::make_shared<std::function<void(std::string)>>(std::move(done));
  for (auto& conn : conns_) {
    Conn& c = *conn;
    c.stream.expires_after(kConnectTimeout);
    c.stream.async_connect(endpoints_, [this, &c, remaining, first_error, shared_done](
                                           beast::error_code ec, const tcp::endpoint&) {
      c.stream.expires_never();
      if (ec && first_error->empty()) {
        *first_error = "connect " + url_.HostHeader() + ": " + ec.message();
      }
      if (!ec) {
        c.alive = true;
        c.stream.socket().set_option(tcp::no_delay(true), ec);
      }
      if (--*remaining == 0) (*shared_done)(*first_error);
    });
  }
}

void HttpLane::Abort() {
  shut_ = true;
  for (auto& c : conns_) c->stream.close();
}

void HttpLane::Transmit(uint64_t seq) {
  for (auto& c : conns_) {
    if (c->alive && !c->busy) return StartRequest(*c, seq);
  }
  waiting_.push_back(seq);
}

void HttpLane::StartRequest(Conn& c, uint64_t seq) {
  c.busy = true;
  c.seq = seq;
  http::async_write(c.stream, request_,
                    [this, &c](beast::error_code ec, size_t) { OnWritten(c, ec); });
}

void HttpLane::OnWritten(Conn& c, beast::error_code ec) {
  if (ec) return OnConnectionError(c, "http_transport");
  c.parser.emplace();
  c.parser->body_limit(64 * 1024 * 1024);
  c.scanned = 0;
  c.done_at.reset();
  ReadSome(c);
}

void HttpLane::ReadSome(Conn& c) {
  http::async_read_some(c.stream, c.buffer, *c.parser,
                        [this, &c](beast::error_code ec, size_t) { OnRead(c, ec); });
}

void HttpLane::OnRead(Conn& c, beast::error_code ec) {
  const Clock::time_point now = Clock::now();
  if (ec) return OnConnectionError(c, "http_transport");
  if (stream_ && !c.done_at) {
    const std::string& body = c.parser->get().body();
    const size_t from = c.scanned > kDone.size() ? c.scanned - kDone.size() : 0;
    if (body.find(kDone, from) != std::string::npos) c.done_at = now;
    c.scanned = body.size();
  }
  if (!c.parser->is_done()) return ReadSome(c);
  const unsigned status = c.parser->get().result_int();
  const bool keep_alive = c.parser->keep_alive();
  const uint64_t seq = c.seq;
  c.busy = false;
  if (!keep_alive) {
    c.alive = false;
    c.busy = true;  // until re-opened
  }
  if (status == 200) {
    Complete(seq, "", c.done_at.value_or(now));
  } else {
    // A closed loop waits what the server asked for, as an SDK would: retry-after-ms (OpenAI's
    // SDKs read it), else Retry-After in seconds.
    int64_t retry_ms = 0;
    const auto& head = c.parser->get();
    if (auto ms = head.find("retry-after-ms"); ms != head.end()) {
      std::from_chars(ms->value().data(), ms->value().data() + ms->value().size(), retry_ms);
    } else if (auto after = head.find(boost::beast::http::field::retry_after);
               after != head.end()) {
      std::from_chars(after->value().data(), after->value().data() + after->value().size(),
                      retry_ms);
      retry_ms *= 1000;
    }
    Complete(seq, "http_" + std::to_string(status), now,
             std::chrono::milliseconds(std::clamp<int64_t>(retry_ms, 0, 5000)));
  }
  if (!keep_alive && !shut_) return Reconnect(c);
  ServeQueue(c);
}

void HttpLane::ServeQueue(Conn& c) {
  if (shut_ || !c.alive || c.busy || waiting_.empty()) return;
  const uint64_t seq = waiting_.front();
  waiting_.pop_front();
  StartRequest(c, seq);
}

void HttpLane::OnConnectionError(Conn& c, std::string_view error) {
  const uint64_t seq = c.seq;
  c.alive = false;
  c.busy = true;  // until re-opened
  beast::error_code ignored;
  c.stream.socket().close(ignored);
  Complete(seq, error, Clock::now());
  if (!shut_ && !finished()) Reconnect(c);
}

void HttpLane::Reconnect(Conn& c) {
  c.stream.close();
  c.buffer.clear();
  c.stream.expires_after(kConnectTimeout);
  c.stream.async_connect(endpoints_, [this, &c](beast::error_code ec, const tcp::endpoint&) {
    c.stream.expires_never();
    if (shut_) return;
    if (ec) {
      // The endpoint is gone: give up on this connection; when none is left, on the lane.
      for (auto& other : conns_) {
        if (other->alive || (other.get() != &c && other->busy)) return;
      }
      return FailAll("http_connect");
    }
    c.alive = true;
    c.busy = false;
    c.stream.socket().set_option(tcp::no_delay(true), ec);
    ServeQueue(c);
  });
}

void HttpLane::Shutdown() {
  shut_ = true;
  waiting_.clear();
  for (auto& c : conns_) {
    beast::error_code ignored;
    c->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    c->stream.close();
  }
}

}  // namespace anima::bench
