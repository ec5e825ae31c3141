// services/store/postgres_client.h against a real PostgreSQL: values as parameters, transactions,
// error codes, a server that stops or stops answering, LISTEN across reconnects, health and
// metrics.
#include "services/store/postgres_client.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <thread>

#include "tests/unit/self_coding/postgres_fixture.h"

namespace anima::store {
namespace {

using namespace std::chrono_literals;
using ::anima::testing::PostgresServer;
using selfcoding::testing::FreshDatabase;
using selfcoding::testing::TestOptions;

bool Eventually(const std::function<bool()>& condition) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

// The value of the sample of `name` whose labels include every one of `labels`; -1 if none.
double Sample(prometheus::Registry& registry, const std::string& name,
              const std::map<std::string, std::string>& labels) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      size_t matched = 0;
      for (const auto& l : metric.label) {
        auto it = labels.find(l.name);
        if (it != labels.end() && it->second == l.value) matched++;
      }
      if (matched != labels.size()) continue;
      if (family.type == prometheus::MetricType::Counter) return metric.counter.value;
      if (family.type == prometheus::MetricType::Gauge) return metric.gauge.value;
      if (family.type == prometheus::MetricType::Histogram) {
        return static_cast<double>(metric.histogram.sample_count);
      }
    }
  }
  return -1;
}

// Collects what a LISTEN subscriber is told.
class Listener {
 public:
  void operator()(const PgNotification& n) {
    std::lock_guard lock(mu_);
    if (n.resync) {
      resyncs_++;
    } else {
      payloads_.push_back(n.payload);
    }
    cv_.notify_all();
  }
  bool WaitResyncs(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 30s, [&] { return resyncs_ >= n; });
  }
  bool WaitPayload(const std::string& payload) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 30s, [&] {
      return std::find(payloads_.begin(), payloads_.end(), payload) != payloads_.end();
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int resyncs_ = 0;
  std::vector<std::string> payloads_;
};

std::unique_ptr<PostgresClient> Connect(const std::string& url,
                                        prometheus::Registry* registry = nullptr,
                                        PostgresOptions options = {}) {
  if (options.url.empty()) options = TestOptions(url);
  auto client = PostgresClient::Create(options, registry);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

TEST(PostgresClient, ValuesTravelAsParametersByteForByte) {
  std::string url = FreshDatabase();
  ASSERT_FALSE(url.empty());
  auto pg = Connect(url);
  ASSERT_TRUE(
      pg->Query("test", "CREATE TABLE t (s text, b bytea, n bigint, i integer, f boolean)").ok());
  // What would break string-built SQL is just a value here.
  const std::string hostile = "x'); DROP TABLE t; -- \"\\";
  const std::string binary("\0\1\2'\xff\xfe\"", 7);
  auto inserted = pg->Query(
      "test", "INSERT INTO t VALUES ($1::text, $2::bytea, $3::bigint, $4::integer, $5::boolean)",
      {PgParam::Text(hostile), PgParam::Bytes(binary), PgParam::Int(-9'000'000'000'123),
       PgParam::Int(-7), PgParam::Bool(true)});
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->affected(), 1);
  ASSERT_TRUE(pg->Query("test", "INSERT INTO t VALUES (NULL, NULL, NULL, NULL, NULL)").ok());
  auto rows = pg->Query("test", "SELECT s, b, n, i, f FROM t ORDER BY n NULLS LAST");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2);
  EXPECT_EQ(rows->Bytes(0, 0), hostile);
  EXPECT_EQ(rows->Bytes(0, 1), binary);
  EXPECT_EQ(rows->Int(0, 2), -9'000'000'000'123);
  EXPECT_EQ(rows->Int(0, 3), -7);
  EXPECT_TRUE(rows->Bool(0, 4));
  for (int c = 0; c < 5; ++c) EXPECT_TRUE(rows->IsNull(1, c));
  EXPECT_FALSE(rows->IsNull(0, 0));
  // One statement per call: a second one is refused, not run.
  auto two = pg->Query("test", "SELECT 1; DROP TABLE t");
  EXPECT_FALSE(two.ok());
  EXPECT_TRUE(pg->Query("test", "SELECT count(*) FROM t").ok());
}

TEST(PostgresClient, TransactionsCommitOrRollBackWhole) {
  std::string url = FreshDatabase();
  ASSERT_FALSE(url.empty());
  auto pg = Connect(url);
  ASSERT_TRUE(pg->Query("test", "CREATE TABLE t (k text PRIMARY KEY)").ok());
  auto insert = [](PgSession& tx, const std::string& k) {
    return tx.Query("INSERT INTO t VALUES ($1::text)", {PgParam::Text(k)}).status();
  };
  // The body's error rolls back what it did.
  auto s = pg->Transaction("test", [&](PgSession& tx) -> absl::Status {
    if (auto st = insert(tx, "a"); !st.ok()) return st;
    return absl::FailedPreconditionError("changed my mind");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  // A statement that failed fails the transaction, whatever the body returns.
  s = pg->Transaction("test", [&](PgSession& tx) -> absl::Status {
    insert(tx, "b").IgnoreError();
    insert(tx, "b").IgnoreError();  // duplicate key
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  ASSERT_TRUE(pg->Transaction("test", [&](PgSession& tx) { return insert(tx, "c"); }).ok());
  auto rows = pg->Query("test", "SELECT k FROM t ORDER BY k");
  ASSERT_EQ(rows->size(), 1);
  EXPECT_EQ(rows->Bytes(0, 0), "c");
  // The connection is clean for the next caller.
  EXPECT_TRUE(pg->Query("test", "SELECT 1").ok());
}

TEST(PostgresClient, ErrorsMapToCodes) {
  std::string url = FreshDatabase();
  ASSERT_FALSE(url.empty());
  PostgresOptions options = TestOptions(url);
  options.statement_timeout = 200ms;
  auto pg = Connect(url, nullptr, options);
  auto syntax = pg->Query("test", "SELEC 1");
  EXPECT_EQ(syntax.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(syntax.status().message().find("42601"), std::string::npos) << syntax.status();
  auto slow = pg->Query("test", "SELECT pg_sleep(5)");
  EXPECT_EQ(slow.status().code(), absl::StatusCode::kDeadlineExceeded) << slow.status();
  EXPECT_TRUE(pg->Query("test", "SELECT 1").ok());
}

TEST(PostgresClient, BadUrlsAndChannelsAreRefused) {
  EXPECT_EQ(PostgresClient::Create({}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  PostgresOptions options;
  options.url = "not_an_option=1";
  auto bad = PostgresClient::Create(options, nullptr);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("not_an_option"), std::string::npos) << bad.status();
  options.url = "postgresql://user:secret@127.0.0.1:1/db";
  auto client = PostgresClient::Create(options, nullptr);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->endpoint(), "127.0.0.1:1/db");
  EXPECT_EQ((*client)->Listen("Bad-Channel", [](const PgNotification&) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing listens on port 1: down, and the password is in no message.
  auto down = (*client)->Query("test", "SELECT 1");
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(down.status().message().find("secret"), std::string::npos);
  EXPECT_EQ((*client)->status().health, PostgresStatus::Health::kDown);
  EXPECT_EQ((*client)->status().detail.find("secret"), std::string::npos);
}

// Outages get a server of their own, so that the shared one stays up for the other tests.
class PostgresOutageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = PostgresServer::Start();
    ASSERT_NE(server_, nullptr);
    url_ = server_->CreateDatabase("outage");
    ASSERT_FALSE(url_.empty());
  }
  std::unique_ptr<PostgresServer> server_;
  std::string url_;
  prometheus::Registry registry_;
};

TEST_F(PostgresOutageTest, AStoppedServerIsUnavailableAtOnceAndTheClientRecovers) {
  auto pg = Connect(url_, &registry_);
  ASSERT_TRUE(pg->Query("test", "SELECT 1").ok());
  EXPECT_EQ(pg->status().health, PostgresStatus::Health::kHealthy);
  EXPECT_EQ(Sample(registry_, "anima_store_up", {{"backend", "postgres"}}), 1);

  ASSERT_TRUE(server_->Stop());
  auto down = pg->Query("test", "SELECT 1");
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  // While it stays down, calls fail at once (the next attempt waits for the backoff) and the
  // status says so.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(pg->Query("test", "SELECT 1").status().code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(pg->status().health, PostgresStatus::Health::kDown);
  EXPECT_NE(pg->status().detail.find("127.0.0.1"), std::string::npos) << pg->status().detail;
  EXPECT_EQ(Sample(registry_, "anima_store_up", {{"backend", "postgres"}}), 0);
  EXPECT_GE(Sample(registry_, "anima_store_calls_total",
                   {{"backend", "postgres"}, {"op", "test"}, {"result", "error"}}),
            6);

  ASSERT_TRUE(server_->Restart());
  EXPECT_TRUE(Eventually([&] { return pg->Query("test", "SELECT 1").ok(); }));
  EXPECT_EQ(pg->status().health, PostgresStatus::Health::kHealthy);
  EXPECT_EQ(Sample(registry_, "anima_store_up", {{"backend", "postgres"}}), 1);
  EXPECT_GE(Sample(registry_, "anima_store_calls_total",
                   {{"backend", "postgres"}, {"op", "test"}, {"result", "ok"}}),
            2);
}

TEST_F(PostgresOutageTest, AServerThatStopsAnsweringTimesOut) {
  auto pg = Connect(url_, &registry_);
  ASSERT_TRUE(pg->Query("test", "SELECT 1").ok());
  server_->Pause();
  auto hung = pg->Query("test", "SELECT 1");
  server_->Resume();
  EXPECT_EQ(hung.status().code(), absl::StatusCode::kDeadlineExceeded) << hung.status();
  EXPECT_GE(Sample(registry_, "anima_store_calls_total",
                   {{"backend", "postgres"}, {"op", "test"}, {"result", "timeout"}}),
            1);
  EXPECT_TRUE(Eventually([&] { return pg->Query("test", "SELECT 1").ok(); }));
}

TEST_F(PostgresOutageTest, SlowAnswersMakeItDegraded) {
  PostgresOptions options = TestOptions(url_);
  options.slow_call = 50ms;
  auto pg = Connect(url_, nullptr, options);
  ASSERT_TRUE(pg->Query("test", "SELECT 1").ok());
  EXPECT_EQ(pg->status().health, PostgresStatus::Health::kHealthy);
  ASSERT_TRUE(pg->Query("test", "SELECT pg_sleep(0.1)").ok());
  ASSERT_TRUE(pg->Query("test", "SELECT pg_sleep(0.1)").ok());
  EXPECT_EQ(pg->status().health, PostgresStatus::Health::kDegraded);
  EXPECT_NE(pg->status().detail.find("slower"), std::string::npos) << pg->status().detail;
}

TEST_F(PostgresOutageTest, ListenDeliversNotificationsAndResyncsAfterAReconnect) {
  auto pg = Connect(url_);
  Listener heard;
  auto id = pg->Listen("jobs_test", std::ref(heard));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(heard.WaitResyncs(1));  // the LISTEN is in effect
  ASSERT_TRUE(
      pg->Query("test", "SELECT pg_notify('jobs_test', $1::text)", {PgParam::Text("job-1")}).ok());
  EXPECT_TRUE(heard.WaitPayload("job-1"));

  // A restart drops the LISTEN connection: it is made again, LISTENs again, and says that
  // notifications may have been missed.
  ASSERT_TRUE(server_->Restart());
  EXPECT_TRUE(heard.WaitResyncs(2));
  EXPECT_TRUE(Eventually([&] {
    return pg->Query("test", "SELECT pg_notify('jobs_test', $1::text)", {PgParam::Text("job-2")})
        .ok();
  }));
  EXPECT_TRUE(heard.WaitPayload("job-2"));
  pg->Unlisten(*id);
}

TEST(PostgresClient, MetricFamiliesAreSharedWithinAProcess) {
  std::string url = FreshDatabase();
  ASSERT_FALSE(url.empty());
  prometheus::Registry registry;
  auto a = Connect(url, &registry);
  auto b = Connect(url, &registry);  // registers the same families again: no throw, one family
  ASSERT_TRUE(a->Query("one", "SELECT 1").ok());
  ASSERT_TRUE(b->Query("one", "SELECT 1").ok());
  int families = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name == "anima_store_calls_total") families++;
  }
  EXPECT_EQ(families, 1);
  EXPECT_EQ(Sample(registry, "anima_store_calls_total",
                   {{"backend", "postgres"}, {"op", "one"}, {"result", "ok"}}),
            2);
  EXPECT_EQ(Sample(registry, "anima_store_call_seconds", {{"backend", "postgres"}, {"op", "one"}}),
            2);
}

}  // namespace
}  // namespace anima::store
