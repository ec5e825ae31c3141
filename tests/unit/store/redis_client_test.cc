// The Redis client against a real redis-server started by the test (tests/support): commands,
// pipelines, scripts, binary values, and what callers see when the server dies, hangs or cannot
// keep up.
#include "services/store/redis_client.h"

#include <atomic>
#include <future>
#include <map>
#include <thread>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/support/redis_server.h"

namespace anima::store {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;
using Type = RedisReply::Type;

bool Eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 20s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

// Waits for a callback with a generous bound, so that a callback that never runs fails the test
// instead of hanging it.
template <typename T>
T Await(std::future<T>& f) {
  if (f.wait_for(30s) != std::future_status::ready) {
    ADD_FAILURE() << "the callback never ran";
    std::abort();  // the callback still refers to the promise on this stack
  }
  return f.get();
}

absl::StatusOr<RedisReply> Call(RedisClient& client, std::vector<std::string> argv) {
  std::promise<absl::StatusOr<RedisReply>> p;
  auto f = p.get_future();
  client.Command("test", std::move(argv),
                 [&p](absl::StatusOr<RedisReply> r) { p.set_value(std::move(r)); });
  return Await(f);
}

absl::StatusOr<RedisReply> Eval(RedisClient& client, const RedisScript& script,
                                std::vector<std::string> keys, std::vector<std::string> args) {
  std::promise<absl::StatusOr<RedisReply>> p;
  auto f = p.get_future();
  client.Eval("script", script, std::move(keys), std::move(args),
              [&p](absl::StatusOr<RedisReply> r) { p.set_value(std::move(r)); });
  return Await(f);
}

double Counter(prometheus::Registry& registry, const std::string& name,
               const std::map<std::string, std::string>& labels) {
  double total = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      size_t matched = 0;
      for (const auto& label : metric.label) {
        auto it = labels.find(label.name);
        if (it != labels.end() && it->second == label.value) ++matched;
      }
      if (matched != labels.size()) continue;
      total += family.type == prometheus::MetricType::Gauge ? metric.gauge.value
               : family.type == prometheus::MetricType::Histogram
                   ? static_cast<double>(metric.histogram.sample_count)
                   : metric.counter.value;
    }
  }
  return total;
}

class RedisClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = RedisServer::Start();
    ASSERT_NE(server_, nullptr);
  }

  std::unique_ptr<RedisClient> Connect(RedisOptions options = {}) {
    if (options.url.empty()) options.url = server_->url();
    auto client = RedisClient::Create(options, &registry_);
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return nullptr;
    EXPECT_TRUE(Eventually([&] { return (*client)->status().health == BackendHealth::kHealthy; }))
        << (*client)->status().detail;
    return std::move(*client);
  }

  prometheus::Registry registry_;
  std::unique_ptr<RedisServer> server_;
};

TEST(RedisUrlTest, ParsesWhatTheFlagAccepts) {
  auto plain = ParseRedisUrl("redis://10.0.0.3:6380");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->host, "10.0.0.3");
  EXPECT_EQ(plain->port, 6380);
  EXPECT_EQ(plain->password, "");
  EXPECT_EQ(plain->db, 0);

  auto full = ParseRedisUrl("redis://:s%40cret:x@redis.internal/3");
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->host, "redis.internal");
  EXPECT_EQ(full->port, 6379);
  EXPECT_EQ(full->user, "");
  EXPECT_EQ(full->password, "s@cret:x");
  EXPECT_EQ(full->db, 3);

  auto acl = ParseRedisUrl("redis://anima:pw@[::1]:7000/0");
  ASSERT_TRUE(acl.ok()) << acl.status();
  EXPECT_EQ(acl->host, "::1");
  EXPECT_EQ(acl->port, 7000);
  EXPECT_EQ(acl->user, "anima");
  EXPECT_EQ(acl->password, "pw");
  EXPECT_EQ(ParseRedisUrl("redis://default:pw@h:1")->user, "");
}

TEST(RedisUrlTest, RefusesBadUrlsSayingWhatIsWrong) {
  const std::map<std::string, std::string> bad = {
      {"", "must start with redis://"},
      {"http://127.0.0.1:6379", "must start with redis://"},
      {"127.0.0.1:6379", "must start with redis://"},
      {"redis://", "host is missing"},
      {"redis://:6379", "host is missing"},
      {"redis://h:0", "bad port"},
      {"redis://h:65536", "bad port"},
      {"redis://h:port", "bad port"},
      {"redis://h:", "bad port"},
      {"redis://h:6379/x", "bad database"},
      {"redis://h:6379/-1", "bad database"},
      {"redis://h:6379?timeout=1", "query strings"},
      {"redis://:pw%zz@h", "%-escape"},
      {"redis://:pw%4@h", "%-escape"},
      {"redis://user:@h", "user without a password"},
      {"redis://[::1:6379", "unterminated ["},
  };
  for (const auto& [url, why] : bad) {
    auto parsed = ParseRedisUrl(url);
    ASSERT_FALSE(parsed.ok()) << url;
    EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << url;
    EXPECT_NE(parsed.status().message().find(why), std::string::npos)
        << url << ": " << parsed.status();
  }
  // No TLS with Debian's hiredis: refused, saying so and what to do instead.
  auto tls = RedisClient::Create({.url = "rediss://h:6380"}, nullptr);
  ASSERT_FALSE(tls.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(tls.status()));
  EXPECT_NE(tls.status().message().find("TLS"), std::string::npos) << tls.status();
  EXPECT_NE(tls.status().message().find("stunnel"), std::string::npos) << tls.status();
}

TEST(RedisScriptTest, NamesTheScriptByItsSha1AsRedisDoes) {
  // SHA-1 of "return 1", as SCRIPT LOAD answers it.
  EXPECT_EQ(RedisScript("return 1").sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
}

TEST_F(RedisClientTest, CommandsAnswerWithDecodedReplies) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto set = Call(*client, {"SET", "k", "v"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, Type::kStatus);
  EXPECT_EQ(set->str, "OK");
  auto get = Call(*client, {"GET", "k"});
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->type, Type::kString);
  EXPECT_EQ(get->str, "v");
  auto missing = Call(*client, {"GET", "nothing-here"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->type, Type::kNil);
  auto incr = Call(*client, {"INCRBY", "n", "41"});
  ASSERT_TRUE(incr.ok());
  EXPECT_EQ(incr->type, Type::kInteger);
  EXPECT_EQ(incr->integer, 41);
  ASSERT_TRUE(Call(*client, {"RPUSH", "l", "a", "b", "c"}).ok());
  auto range = Call(*client, {"LRANGE", "l", "0", "-1"});
  ASSERT_TRUE(range.ok());
  ASSERT_EQ(range->type, Type::kArray);
  ASSERT_EQ(range->elements.size(), 3u);
  EXPECT_EQ(range->elements[2].str, "c");

  auto wrong = Call(*client, {"INCR", "l"});  // a list is not a number
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::IsInternal(wrong.status()));
  EXPECT_NE(wrong.status().message().find("WRONGTYPE"), std::string::npos) << wrong.status();

  EXPECT_EQ(Counter(registry_, "anima_store_calls_total",
                    {{"backend", "redis"}, {"op", "test"}, {"result", "ok"}}),
            6);
  EXPECT_EQ(Counter(registry_, "anima_store_calls_total",
                    {{"backend", "redis"}, {"op", "test"}, {"result", "error"}}),
            1);
  EXPECT_EQ(Counter(registry_, "anima_store_call_seconds", {{"backend", "redis"}, {"op", "test"}}),
            7);
  EXPECT_EQ(Counter(registry_, "anima_store_up", {{"backend", "redis"}}), 1);
}

TEST_F(RedisClientTest, ValuesAndKeysAreBinarySafe) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::string key("k\0\r\n{*}:", 8);
  std::string value;
  for (int i = 0; i < 256; ++i) value += static_cast<char>(i);
  value += std::string(100000, '\0');  // larger than one socket read
  ASSERT_TRUE(Call(*client, {"SET", key, value}).ok());
  auto got = Call(*client, {"GET", key});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->str, value);
  auto other = Call(*client, {"GET", std::string("k")});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->type, Type::kNil);  // the NUL did not end the key
}

TEST_F(RedisClientTest, PipelineAnswersInOrderAndKeepsErrorRepliesApart) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::promise<absl::StatusOr<std::vector<RedisReply>>> p;
  auto f = p.get_future();
  client->Pipeline("test", {{"SET", "a", "1"}, {"INCR", "a"}, {"HGET", "a", "f"}, {"GET", "a"}},
                   [&p](auto r) { p.set_value(std::move(r)); });
  auto replies = Await(f);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 4u);
  EXPECT_EQ((*replies)[0].str, "OK");
  EXPECT_EQ((*replies)[1].integer, 2);
  EXPECT_EQ((*replies)[2].type, Type::kError);  // WRONGTYPE: this command only
  EXPECT_EQ((*replies)[3].str, "2");
}

TEST_F(RedisClientTest, ManyConcurrentCallersAreEachAnsweredOnce) {
  auto client = Connect({.connections = 2});
  ASSERT_NE(client, nullptr);
  constexpr int kThreads = 4, kCalls = 500;
  std::atomic<int> ok{0}, answered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        client->Command("test", {"INCR", "counter"}, [&](absl::StatusOr<RedisReply> r) {
          if (r.ok()) ok++;
          answered++;
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(Eventually([&] { return answered.load() == kThreads * kCalls; }));
  EXPECT_EQ(ok.load(), kThreads * kCalls);
  auto total = Call(*client, {"GET", "counter"});
  ASSERT_TRUE(total.ok());
  EXPECT_EQ(total->str, std::to_string(kThreads * kCalls));
}

TEST_F(RedisClientTest, ScriptsRunAndSurviveAFlushedScriptCache) {
  auto client = Connect({.connections = 1});
  ASSERT_NE(client, nullptr);
  RedisScript add("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  auto first = Eval(*client, add, {"s"}, {"5"});
  ASSERT_TRUE(first.ok()) << first.status();  // unknown to the server: loaded transparently
  EXPECT_EQ(first->integer, 5);
  auto loaded = Call(*client, {"SCRIPT", "EXISTS", add.sha1()});
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->elements.at(0).integer, 1);

  ASSERT_TRUE(Call(*client, {"SCRIPT", "FLUSH"}).ok());
  auto again = Eval(*client, add, {"s"}, {"2"});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->integer, 7);  // run once, not twice

  RedisScript broken("return redis.call('NOSUCHCOMMAND')");
  auto error = Eval(*client, broken, {}, {});
  ASSERT_FALSE(error.ok());
  EXPECT_TRUE(absl::IsInternal(error.status())) << error.status();
}

TEST_F(RedisClientTest, CallbacksNeverRunInlineInTheCaller) {
  // Nothing listens there: every call fails at once, still on the client's thread.
  server_->Kill();
  auto client = RedisClient::Create({.url = server_->url()}, &registry_);
  ASSERT_TRUE(client.ok());
  std::promise<std::pair<std::thread::id, absl::Status>> p;
  auto f = p.get_future();
  (*client)->Command("test", {"PING"}, [&p](absl::StatusOr<RedisReply> r) {
    p.set_value({std::this_thread::get_id(), r.status()});
  });
  auto [thread, status] = Await(f);
  EXPECT_NE(thread, std::this_thread::get_id());
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_EQ((*client)->status().health, BackendHealth::kDown);
  EXPECT_EQ(Counter(registry_, "anima_store_up", {{"backend", "redis"}}), 0);
}

TEST_F(RedisClientTest, AServerKilledAndRestartedFailsCallsThenServesThemAgain) {
  auto client = Connect({.backoff_min = 20ms, .backoff_max = 200ms});
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(Call(*client, {"SET", "kept", "yes"}).ok());
  server_->Stop();  // saves, so the data comes back with the restart

  // Every call is answered, and with Unavailable, while the server is away.
  for (int i = 0; i < 20; ++i) {
    auto r = Call(*client, {"GET", "kept"});
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  }
  EXPECT_TRUE(Eventually([&] { return client->status().health == BackendHealth::kDown; }));
  EXPECT_EQ(Counter(registry_, "anima_store_up", {{"backend", "redis"}}), 0);

  ASSERT_TRUE(server_->Restart());
  EXPECT_TRUE(Eventually([&] { return Call(*client, {"GET", "kept"}).ok(); }));
  EXPECT_TRUE(Eventually([&] { return client->status().health == BackendHealth::kHealthy; }));
  EXPECT_EQ(Call(*client, {"GET", "kept"})->str, "yes");

  // A crash (no save) in the middle of traffic: the same, and no call is left unanswered.
  std::atomic<int> answered{0};
  for (int i = 0; i < 200; ++i) {
    client->Command("test", {"INCR", "x"}, [&](auto) { answered++; });
    if (i == 100) server_->Kill();
  }
  EXPECT_TRUE(Eventually([&] { return answered.load() == 200; }));
  ASSERT_TRUE(server_->Restart());
  EXPECT_TRUE(Eventually([&] { return Call(*client, {"PING"}).ok(); }));
}

TEST_F(RedisClientTest, AServerThatStopsAnsweringEndsCallsWithDeadlineExceeded) {
  auto client = Connect({.connections = 1, .call_timeout = 300ms, .backoff_min = 20ms});
  ASSERT_NE(client, nullptr);
  server_->Pause();
  auto r = Call(*client, {"PING"});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(r.status())) << r.status();
  EXPECT_GE(Counter(registry_, "anima_store_calls_total",
                    {{"backend", "redis"}, {"op", "test"}, {"result", "timeout"}}),
            1);
  // Then the client knows: no connection answers, calls fail at once.
  EXPECT_TRUE(Eventually([&] { return client->status().health == BackendHealth::kDown; }));
  auto during = Call(*client, {"PING"});
  EXPECT_FALSE(during.ok());

  server_->Resume();
  EXPECT_TRUE(Eventually([&] { return Call(*client, {"PING"}).ok(); }));
  // Recent timeouts still show as degraded service before it is healthy again.
  EXPECT_NE(client->status().health, BackendHealth::kDown);
}

TEST_F(RedisClientTest, CallsBeyondTheQueueBoundFailAtOnce) {
  auto client = Connect({.connections = 1, .call_timeout = 10s, .max_queued = 5});
  ASSERT_NE(client, nullptr);
  server_->Pause();
  std::atomic<int> ok{0}, answered{0};
  auto count = [&](absl::StatusOr<RedisReply> r) {
    if (r.ok()) ok++;
    answered++;
  };
  client->Command("test", {"PING"}, count);
  // Sent, and waiting for the paused server: the queue is empty again.
  ASSERT_TRUE(Eventually([&] { return client->queued() == 0; }));
  for (int i = 0; i < 5; ++i) client->Command("test", {"PING"}, count);
  EXPECT_EQ(client->queued(), 5u);
  auto refused = Call(*client, {"PING"});
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find("queue full"), std::string::npos);

  server_->Resume();
  EXPECT_TRUE(Eventually([&] { return answered.load() == 6; }));
  EXPECT_EQ(ok.load(), 6);
}

TEST_F(RedisClientTest, DestroyingTheClientAnswersEveryCall) {
  auto client = Connect({.connections = 1, .call_timeout = 500ms});
  ASSERT_NE(client, nullptr);
  server_->Pause();
  std::atomic<int> answered{0}, unexpected{0};
  for (int i = 0; i < 50; ++i) {
    client->Command("test", {"PING"}, [&](absl::StatusOr<RedisReply> r) {
      // Cancelled if still queued; the call in flight to the paused server times out.
      if (!absl::IsCancelled(r.status()) && !absl::IsDeadlineExceeded(r.status())) unexpected++;
      answered++;
    });
  }
  client.reset();
  EXPECT_EQ(answered.load(), 50);
  EXPECT_EQ(unexpected.load(), 0);
  server_->Resume();
}

}  // namespace
}  // namespace anima::store
