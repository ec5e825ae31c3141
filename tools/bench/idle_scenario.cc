#include "tools/bench/idle_scenario.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/error.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/bench/metrics_text.h"
#include "tools/cli/frame_rules.h"
#include "tools/cli/ws_client.h"

namespace anima::bench {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr int kSpareFds = 64;  // stdio, the metrics scrapes, the resolver
constexpr auto kRetryWait = std::chrono::milliseconds(250);
constexpr int kMaxRetries = 20;  // per connection, then it counts as failed
constexpr auto kWelcomeTimeout = std::chrono::seconds(10);
constexpr auto kCloseGuard = std::chrono::seconds(10);
constexpr auto kScrapeTimeout = std::chrono::seconds(5);

// The gateway answers 429 over its new-connections-per-second limit and 503 over
// max_connections: both say "later". WsClient names the status only in its text
// ("upgrade refused with HTTP 429 by ...").
bool IsBusyRefusal(error_code ec, const std::string& detail) {
  return ec == beast::websocket::error::upgrade_declined &&
         (absl::StrContains(detail, "HTTP 429 ") || absl::StrContains(detail, "HTTP 503 "));
}

// GET `url`, with one deadline over connect, write and read.
absl::StatusOr<std::string> HttpGet(const cli::Url& url) {
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  http::request<http::empty_body> request(http::verb::get, url.target, 11);
  request.set(http::field::host, url.HostHeader());
  request.set(http::field::user_agent, "anima-bench/" ANIMA_VERSION);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  error_code failure;
  const char* step = "";
  auto fail = [&](error_code ec, const char* what) {
    failure = ec;
    step = what;
  };
  stream.expires_after(kScrapeTimeout);
  resolver.async_resolve(url.host, url.port, [&](error_code ec, tcp::resolver::results_type to) {
    if (ec) return fail(ec, "resolve");
    stream.async_connect(to, [&](error_code ec, const tcp::endpoint&) {
      if (ec) return fail(ec, "connect to");
      http::async_write(stream, request, [&](error_code ec, size_t) {
        if (ec) return fail(ec, "write to");
        http::async_read(stream, buffer, parser, [&](error_code ec, size_t) {
          if (ec) fail(ec, "read from");
        });
      });
    });
  });
  io.run();
  if (failure) {
    return absl::UnavailableError(
        absl::StrCat("metrics: ", step, " ", url.HostHeader(), ": ", failure.message()));
  }
  if (parser.get().result() != http::status::ok) {
    return absl::UnavailableError(absl::StrCat("metrics: HTTP ", parser.get().result_int(),
                                               " from ", url.HostHeader(), url.target));
  }
  return parser.release().body();
}

// The idle connections. Everything runs on the thread of `io`.
class Fleet {
 public:
  Fleet(asio::io_context& io, const IdleConfig& config)
      : io_(io),
        config_(config),
        interval_(std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(1.0 / config.connect_rate))),
        pump_timer_(io),
        close_guard_(io) {
    options_.bearer_token = config.token;
    options_.user_agent = "anima-bench/" ANIMA_VERSION;
    conns_.reserve(config.connections);
    for (int i = 0; i < config.connections; ++i) conns_.emplace_back(io);
  }

  // Opens every connection, one attempt every 1/connect_rate seconds (retries included);
  // `done` runs once each connection is open or has failed.
  void Open(std::function<void()> done) {
    on_settled_ = std::move(done);
    pending_ = conns_.size();
    for (size_t i = 0; i < conns_.size(); ++i) ready_.push_back(i);
    started_ = next_slot_ = Clock::now();
    Pump();
  }

  // Closes every open connection; `done` runs once all are closed. Those whose close handshake
  // has not finished after kCloseGuard are aborted.
  void CloseAll(std::function<void()> done) {
    on_closed_ = std::move(done);
    closing_ = true;
    for (Conn& c : conns_) {
      if (c.state == State::kOpen) ++closing_left_;
    }
    if (closing_left_ == 0) return FinishClosing();
    close_guard_.expires_after(kCloseGuard);
    close_guard_.async_wait([this](error_code ec) {
      if (ec) return;
      for (Conn& c : conns_) {
        if (c.state == State::kOpen) c.ws->Abort();
      }
    });
    for (Conn& c : conns_) {
      if (c.state == State::kOpen) c.ws->Close();
    }
  }

  int opened() const { return opened_; }
  int failed() const { return failed_; }
  int dropped() const { return dropped_; }
  int64_t retries() const { return retries_; }
  const std::string& first_error() const { return first_error_; }
  double open_seconds() const { return std::chrono::duration<double>(settled_ - started_).count(); }

 private:
  enum class State { kOpening, kOpen, kFailed, kClosed };
  struct Conn {
    explicit Conn(asio::io_context& io) : timer(io) {}
    std::shared_ptr<cli::WsClient> ws;
    asio::steady_timer timer;  // the wait before a retry, then the welcome's deadline
    int retries = 0;
    State state = State::kOpening;
  };

  // Starts the attempts that are due. Slots that pass while nothing waits are not saved up,
  // so retries never come as a burst.
  void Pump() {
    const Clock::time_point now = Clock::now();
    while (!ready_.empty() && next_slot_ <= now) {
      const size_t i = ready_.front();
      ready_.pop_front();
      next_slot_ += interval_;
      Attempt(i);
    }
    if (ready_.empty()) {
      next_slot_ = std::max(next_slot_, now);
      return;
    }
    if (pump_armed_) return;
    pump_armed_ = true;
    pump_timer_.expires_at(next_slot_);
    pump_timer_.async_wait([this](error_code) {
      pump_armed_ = false;
      Pump();
    });
  }

  void Attempt(size_t i) {
    auto ws = cli::WsClient::Create(io_, config_.ws_url, options_);
    if (!ws.ok()) return Fail(i, std::string(ws.status().message()));
    conns_[i].ws = *std::move(ws);
    conns_[i].ws->Connect(
        [this, i](std::string text, bool) { OnFrame(i, text); },
        [this, i](error_code, std::string detail) { OnClosed(i, std::move(detail)); },
        [this, i](error_code ec, std::string detail) { OnUpgrade(i, ec, std::move(detail)); });
  }

  void OnUpgrade(size_t i, error_code ec, std::string detail) {
    Conn& c = conns_[i];
    if (!ec) {
      // The welcome follows the upgrade at once; a gateway that never sends it must not hold
      // the run open.
      c.timer.expires_after(kWelcomeTimeout);
      c.timer.async_wait([this, i](error_code ec) {
        if (ec || conns_[i].state != State::kOpening) return;
        Fail(i, "no welcome frame within 10 s of the upgrade");
        conns_[i].ws->Abort();
      });
      return;
    }
    if (IsBusyRefusal(ec, detail) && c.retries < kMaxRetries) {
      ++c.retries;
      ++retries_;
      c.timer.expires_after(kRetryWait);
      c.timer.async_wait([this, i](error_code ec) {
        if (ec) return;
        ready_.push_back(i);
        Pump();
      });
      return;
    }
    Fail(i, std::move(detail));
  }

  void OnFrame(size_t i, const std::string& text) {
    Conn& c = conns_[i];
    if (c.state != State::kOpening) return;  // later frames (state broadcasts) do not matter
    auto frame = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (cli::StringField(frame, "type") != "welcome") return;
    c.state = State::kOpen;
    c.timer.cancel();
    ++opened_;
    Settle();
  }

  void OnClosed(size_t i, std::string detail) {
    Conn& c = conns_[i];
    if (c.state == State::kOpening) return Fail(i, "closed before the welcome: " + detail);
    if (c.state != State::kOpen) return;
    c.state = State::kClosed;
    if (closing_) {
      if (--closing_left_ == 0) FinishClosing();
      return;
    }
    if (dropped_++ == 0 && first_error_.empty()) first_error_ = "dropped: " + detail;
  }

  void Fail(size_t i, std::string error) {
    conns_[i].state = State::kFailed;
    conns_[i].timer.cancel();  // a pending welcome deadline would hold the io_context
    if (failed_++ == 0) first_error_ = std::move(error);
    Settle();
  }

  void Settle() {
    if (--pending_ > 0) return;
    settled_ = Clock::now();
    std::exchange(on_settled_, nullptr)();
  }

  void FinishClosing() {
    close_guard_.cancel();
    std::exchange(on_closed_, nullptr)();
  }

  asio::io_context& io_;
  const IdleConfig& config_;
  cli::WsClientOptions options_;
  const Clock::duration interval_;
  std::vector<Conn> conns_;
  std::deque<size_t> ready_;  // connections due for an attempt, in order
  asio::steady_timer pump_timer_;
  bool pump_armed_ = false;
  Clock::time_point next_slot_;
  Clock::time_point started_, settled_;
  size_t pending_ = 0;  // neither open nor failed yet
  std::function<void()> on_settled_;
  bool closing_ = false;
  int closing_left_ = 0;
  asio::steady_timer close_guard_;
  std::function<void()> on_closed_;
  int opened_ = 0, failed_ = 0, dropped_ = 0;
  int64_t retries_ = 0;
  std::string first_error_;
};

double MiB(double bytes) { return bytes / (1024.0 * 1024.0); }

}  // namespace

double IdleResult::PerConnectionBytes() const {
  const int open = opened - dropped;
  return open > 0 ? (held_sample.rss_bytes - baseline.rss_bytes) / open : 0;
}

double IdleResult::GoalConnectionsBytes() const {
  if (opened - dropped >= kIdleGoalConnections) return held_sample.rss_bytes;
  return baseline.rss_bytes + kIdleGoalConnections * PerConnectionBytes();
}

absl::Status EnsureFileLimit(int connections) {
  const rlim_t needed = static_cast<rlim_t>(connections) + kSpareFds;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit: ", std::strerror(errno)));
  }
  if (limit.rlim_cur >= needed) return absl::OkStatus();
  if (limit.rlim_max >= needed) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) == 0) return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      connections, " connections need ", needed, " file descriptors, over the hard limit of ",
      limit.rlim_max, " (RLIMIT_NOFILE): raise it (ulimit -Hn) or use fewer --connections"));
}

absl::StatusOr<GatewaySample> ScrapeGateway(const cli::Url& metrics_url) {
  auto text = HttpGet(metrics_url);
  if (!text.ok()) return text.status();
  auto rss = SampleValue(*text, "process_resident_memory_bytes");
  auto connections = SampleValue(*text, "anima_gateway_connections");
  if (!rss || !connections) {
    return absl::NotFoundError(
        absl::StrCat("metrics: no process_resident_memory_bytes and anima_gateway_connections at ",
                     metrics_url.HostHeader(), metrics_url.target, " (is it the gateway's?)"));
  }
  return GatewaySample{*rss, *connections};
}

absl::StatusOr<IdleResult> RunIdle(const IdleConfig& config) {
  IdleResult r;
  r.config = config;
  auto baseline = ScrapeGateway(config.metrics_url);
  if (!baseline.ok()) return baseline.status();
  r.baseline = *baseline;

  // The fleet is declared after `io`, whose sockets and timers its connections use, so it is
  // destroyed first.
  asio::io_context io(1);
  Fleet fleet(io, config);
  auto work = asio::make_work_guard(io);
  std::thread thread([&io] { io.run(); });
  // Runs one of the fleet's steps on its thread and waits until the step says it is done.
  auto run_step = [&](void (Fleet::*step)(std::function<void()>)) {
    std::promise<void> done;
    asio::post(io, [&] { (fleet.*step)([&done] { done.set_value(); }); });
    done.get_future().wait();
  };
  run_step(&Fleet::Open);
  absl::StatusOr<GatewaySample> opened = ScrapeGateway(config.metrics_url);
  absl::StatusOr<GatewaySample> held = opened;
  if (opened.ok()) {
    std::this_thread::sleep_for(std::chrono::duration<double>(config.hold_s));
    held = ScrapeGateway(config.metrics_url);
  }
  run_step(&Fleet::CloseAll);
  work.reset();
  thread.join();
  if (!held.ok()) return held.status();

  r.opened = fleet.opened();
  r.failed = fleet.failed();
  r.dropped = fleet.dropped();
  r.retries = fleet.retries();
  r.first_error = fleet.first_error();
  r.open_s = fleet.open_seconds();
  r.opened_sample = *opened;
  r.held_sample = *held;
  return r;
}

std::string FormatIdleText(const IdleResult& r) {
  const IdleConfig& c = r.config;
  const bool measured = r.opened - r.dropped >= kIdleGoalConnections;
  const double at_goal = r.GoalConnectionsBytes();
  std::string out = absl::StrFormat(
      "scenario idle  %s  (metrics %s)\n"
      "  %d connection(s) opened at %.0f/s, held idle %.1f s\n"
      "  connections open %d, failed %d, retries %d, dropped %d; opened in %.3f s\n"
      "  gateway connections gauge: %.0f before, %.0f all open, %.0f end of hold\n"
      "  gateway RSS MiB: baseline %.1f, all open %.1f, end of hold %.1f; "
      "per connection %.2f KiB\n"
      "  at %d connections: %.1f MiB (%s); goal under 100 MB (95.4 MiB): %s\n",
      c.ws_url_text, c.metrics_url_text, c.connections, c.connect_rate, c.hold_s, r.opened,
      r.failed, r.retries, r.dropped, r.open_s, r.baseline.connections, r.opened_sample.connections,
      r.held_sample.connections, MiB(r.baseline.rss_bytes), MiB(r.opened_sample.rss_bytes),
      MiB(r.held_sample.rss_bytes), r.PerConnectionBytes() / 1024.0, kIdleGoalConnections,
      MiB(at_goal), measured ? "measured" : "baseline + per connection x 10000",
      at_goal < kIdleGoalBytes ? "met" : "not met");
  if (!r.first_error.empty()) absl::StrAppend(&out, "  note: first error: ", r.first_error, "\n");
  return out;
}

nlohmann::json IdleToJson(const IdleResult& r) {
  const IdleConfig& c = r.config;
  auto sample = [](const GatewaySample& s) {
    return nlohmann::json{{"rss_bytes", s.rss_bytes}, {"connections", s.connections}};
  };
  return {
      {"scenario", "idle"},
      {"url", c.ws_url_text},
      {"metrics_url", c.metrics_url_text},
      {"connections", c.connections},
      {"connect_rate", c.connect_rate},
      {"hold_s", c.hold_s},
      {"opened", r.opened},
      {"failed", r.failed},
      {"retries", r.retries},
      {"dropped", r.dropped},
      {"first_error", r.first_error},
      {"open_s", std::round(r.open_s * 1000.0) / 1000.0},
      {"gateway",
       {{"baseline", sample(r.baseline)},
        {"all_open", sample(r.opened_sample)},
        {"end_of_hold", sample(r.held_sample)}}},
      {"per_connection_bytes", std::round(r.PerConnectionBytes())},
      {"bytes_at_10000", std::round(r.GoalConnectionsBytes())},
      {"goal_met", r.GoalConnectionsBytes() < kIdleGoalBytes},
  };
}

}  // namespace anima::bench
