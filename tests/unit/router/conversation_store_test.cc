// One contract, two conversation stores: the in-process ConversationMemory and the
// RedisConversationStore against a real redis-server (tests/support). Every test of the suite
// runs against both; what differs is only how time passes (the in-process store's injected
// clock, Redis's own clock) and how "stored nothing" is counted.
#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "services/router/conversation_memory.h"
#include "services/router/redis_conversation_store.h"
#include "services/store/redis_client.h"
#include "tests/support/redis_server.h"

namespace anima::router {
namespace {

using namespace std::chrono_literals;

// A store under test, with what the contract tests need to drive it.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual ConversationStore& store() = 0;
  // Lets `d` pass for the store's idle age.
  virtual void Advance(std::chrono::milliseconds d) = 0;
  // Conversations (or keys) held, to check that something stored nothing.
  virtual size_t Stored() = 0;
};

class InProcessBackend final : public Backend {
 public:
  explicit InProcessBackend(MemoryLimits limits)
      : memory_(limits, [this] { return now_.load(); }) {}
  ConversationStore& store() override { return memory_; }
  void Advance(std::chrono::milliseconds d) override { now_ = now_.load() + d; }
  size_t Stored() override { return memory_.size(); }

 private:
  std::atomic<std::chrono::steady_clock::time_point> now_{std::chrono::steady_clock::time_point{} +
                                                          std::chrono::hours(1)};
  ConversationMemory memory_;
};

// One redis-server for the whole suite, emptied before each test.
testing::RedisServer* SharedRedis() {
  static std::unique_ptr<testing::RedisServer> server = testing::RedisServer::Start();
  return server.get();
}

class RedisBackend final : public Backend {
 public:
  explicit RedisBackend(MemoryLimits limits) {
    auto client = store::RedisClient::Create({.url = SharedRedis()->url()}, nullptr);
    EXPECT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (client_->status().health != store::BackendHealth::kHealthy &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(Raw({"FLUSHALL"}).ok());
    store_ = std::make_unique<RedisConversationStore>(client_.get(), limits);
  }
  ConversationStore& store() override { return *store_; }
  void Advance(std::chrono::milliseconds d) override { std::this_thread::sleep_for(d); }
  size_t Stored() override {
    auto n = Raw({"DBSIZE"});
    return n.ok() ? static_cast<size_t>(n->integer) : 0;
  }
  absl::StatusOr<store::RedisReply> Raw(std::vector<std::string> argv) {
    std::promise<absl::StatusOr<store::RedisReply>> p;
    auto f = p.get_future();
    client_->Command("test", std::move(argv), [&p](auto r) { p.set_value(std::move(r)); });
    return f.get();
  }

 private:
  std::unique_ptr<store::RedisClient> client_;
  std::unique_ptr<RedisConversationStore> store_;
};

using Factory = std::function<std::unique_ptr<Backend>(MemoryLimits)>;
struct Param {
  std::string name;
  Factory make;
};

class ConversationStoreContract : public ::testing::TestWithParam<Param> {
 protected:
  ConversationStore& Make(MemoryLimits limits = {}) {
    backend_ = GetParam().make(limits);
    return backend_->store();
  }

  ChatHistory Read(const ConversationKey& key) {
    std::promise<absl::StatusOr<ChatHistory>> p;
    auto f = p.get_future();
    backend_->store().History(key, [&p](auto h) { p.set_value(std::move(h)); });
    auto history = f.get();
    EXPECT_TRUE(history.ok()) << history.status();
    return history.ok() ? *history : ChatHistory();
  }

  void Write(const ConversationKey& key, std::string_view user, std::string_view assistant) {
    std::promise<absl::Status> p;
    auto f = p.get_future();
    backend_->store().Append(key, user, assistant, [&p](absl::Status s) { p.set_value(s); });
    absl::Status status = f.get();
    EXPECT_TRUE(status.ok()) << status;
  }

  // The user messages of `key`'s turns, oldest first.
  std::vector<std::string> Users(const ConversationKey& key) {
    std::vector<std::string> out;
    auto history = Read(key);
    for (int i = 0; i < history.size(); i += 2) out.push_back(history[i].content());
    return out;
  }

  std::unique_ptr<Backend> backend_;
};

TEST_P(ConversationStoreContract, TurnsComeBackOldestFirstAsUserThenAssistant) {
  Make();
  Write({"p", "c"}, "q1", "a1");
  Write({"p", "c"}, "q2", "a2");
  Write({"p", "c"}, "q3", "a3");
  auto history = Read({"p", "c"});
  ASSERT_EQ(history.size(), 6);
  const char* expected[][2] = {{"user", "q1"},      {"assistant", "a1"}, {"user", "q2"},
                               {"assistant", "a2"}, {"user", "q3"},      {"assistant", "a3"}};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(history[i].role(), expected[i][0]) << i;
    EXPECT_EQ(history[i].content(), expected[i][1]) << i;
  }
  EXPECT_TRUE(Read({"p", "other"}).empty());
}

TEST_P(ConversationStoreContract, KeepsTheLastMaxTurns) {
  Make({.max_turns = 2});
  for (int i = 1; i <= 5; ++i) Write({"p", "c"}, "q" + std::to_string(i), "a");
  EXPECT_EQ(Users({"p", "c"}), (std::vector<std::string>{"q4", "q5"}));
}

TEST_P(ConversationStoreContract, TheOldestTurnsGoWhenTheConversationPassesItsByteBound) {
  Make({.max_message_bytes = 300, .max_conversation_bytes = 1000});
  std::string half(250, 'x');  // a turn of 500 bytes
  Write({"p", "c"}, "1" + half.substr(1), half);
  Write({"p", "c"}, "2" + half.substr(1), half);
  EXPECT_EQ(Read({"p", "c"}).size(), 4) << "1000 bytes: exactly the bound";
  Write({"p", "c"}, "3" + half.substr(1), half);
  auto users = Users({"p", "c"});
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users[0][0], '2');
  EXPECT_EQ(users[1][0], '3');
  // A bigger turn (600 bytes) leaves room for nothing older.
  std::string big(300, 'y');
  Write({"p", "c"}, "4" + big.substr(1), big);
  users = Users({"p", "c"});
  ASSERT_EQ(users.size(), 1u);
  EXPECT_EQ(users[0][0], '4');
}

TEST_P(ConversationStoreContract, ATurnLargerThanTheBoundIsNotKept) {
  Make({.max_message_bytes = 300, .max_conversation_bytes = 100});
  Write({"p", "c"}, "small", "turn");
  Write({"p", "c"}, std::string(80, 'q'), std::string(80, 'a'));
  EXPECT_TRUE(Read({"p", "c"}).empty());
  EXPECT_EQ(backend_->Stored(), 0u);
}

TEST_P(ConversationStoreContract, LongMessagesAreCutWithTheMarkerAndWholeCharacters) {
  Make({.max_message_bytes = 100});
  std::string huge(1 << 20, 'x');
  Write({"p", "c"}, huge, huge);
  auto history = Read({"p", "c"});
  ASSERT_EQ(history.size(), 2);
  for (const auto& m : history) {
    EXPECT_EQ(m.content().size(), 100u);
    EXPECT_TRUE(m.content().ends_with(ConversationStore::kTruncatedMarker));
    EXPECT_EQ(m.content().rfind(std::string(88, 'x'), 0), 0u);
  }
  std::string accents = "x";
  while (accents.size() < 300) accents += "\xc3\xa9";
  Write({"p", "utf8"}, accents, "short");
  history = Read({"p", "utf8"});
  ASSERT_EQ(history.size(), 2);
  std::string cut = history[0].content();
  std::string kept = cut.substr(0, cut.size() - ConversationStore::kTruncatedMarker.size());
  EXPECT_EQ(kept.size() % 2, 1u) << "x, then whole two-byte characters";
  EXPECT_EQ(history[1].content(), "short");
}

TEST_P(ConversationStoreContract, TheSameIdOfTwoPrincipalsIsTwoConversations) {
  Make();
  Write({"alice", "conv-1"}, "alice asks", "to alice");
  EXPECT_TRUE(Read({"bob", "conv-1"}).empty());
  Write({"bob", "conv-1"}, "bob asks", "to bob");
  EXPECT_EQ(Users({"alice", "conv-1"}), std::vector<std::string>{"alice asks"});
  EXPECT_EQ(Users({"bob", "conv-1"}), std::vector<std::string>{"bob asks"});
  // No principal/id pair can be spelled as another one.
  Write({"ab", "c"}, "x", "y");
  EXPECT_TRUE(Read({"a", "bc"}).empty());
  Write({"p}", "x"}, "x", "y");
  EXPECT_TRUE(Read({"p", "}x"}).empty());
  Write({"p:", "x"}, "x", "y");
  EXPECT_TRUE(Read({"p", ":x"}).empty());
}

TEST_P(ConversationStoreContract, AConversationIdleForMaxAgeIsForgotten) {
  Make({.max_age = 1500ms});
  Write({"p", "c"}, "q", "a");
  EXPECT_EQ(Read({"p", "c"}).size(), 2);
  // Reading does not keep it alive; only a new turn would.
  bool forgotten = false;
  for (int i = 0; i < 200 && !forgotten; ++i) {
    backend_->Advance(100ms);
    forgotten = Read({"p", "c"}).empty();
  }
  EXPECT_TRUE(forgotten);
}

TEST_P(ConversationStoreContract, AnEmptyConversationIdStoresNothing) {
  Make();
  Write({"p", ""}, "q", "a");
  EXPECT_TRUE(Read({"p", ""}).empty());
  EXPECT_EQ(backend_->Stored(), 0u);
}

TEST_P(ConversationStoreContract, NoTurnsMeansNoMemory) {
  Make({.max_turns = 0});
  Write({"p", "c"}, "q", "a");
  EXPECT_TRUE(Read({"p", "c"}).empty());
  EXPECT_EQ(backend_->Stored(), 0u);
}

TEST_P(ConversationStoreContract, HostileIdsNeitherCollideNorBreakTheKeys) {
  Make();
  std::string long_id(1 << 20, 'x');
  std::string long_id2 = long_id;
  long_id2.back() = 'y';
  std::vector<std::string> ids = {
      long_id,
      long_id2,
      std::string("\0bin\0ary\xff", 10),
      std::string("\0bin\0ary\xfe", 10),
      ":",
      "a:b",
      "a%3Ab",  // what an escaped "a:b" would look like
      "{",
      "}",
      "{p}",
      "*",
      "conv-*",
      "#" + std::string(64, '0'),  // what a hashed long id looks like
      "\r\n",
      "anima:conv:{p}:x",
  };
  for (size_t i = 0; i < ids.size(); ++i) {
    Write({"p", ids[i]}, "q" + std::to_string(i), "a");
    Write({ids[i], "c"}, "principal " + std::to_string(i), "a");
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(Users({"p", ids[i]}), std::vector<std::string>{"q" + std::to_string(i)}) << i;
    EXPECT_EQ(Users({ids[i], "c"}), std::vector<std::string>{"principal " + std::to_string(i)})
        << i;
  }
  EXPECT_EQ(backend_->Stored(), 2 * ids.size());
}

TEST_P(ConversationStoreContract, ConcurrentTurnsKeepTheBound) {
  Make({.max_turns = 3});
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([this, t] {
      for (int i = 0; i < 20; ++i) Write({"p", "c"}, "t" + std::to_string(t), "a");
    });
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(Read({"p", "c"}).size(), 6);
}

INSTANTIATE_TEST_SUITE_P(Stores, ConversationStoreContract,
                         ::testing::Values(Param{"InProcess",
                                                 [](MemoryLimits l) -> std::unique_ptr<Backend> {
                                                   return std::make_unique<InProcessBackend>(l);
                                                 }},
                                           Param{"Redis",
                                                 [](MemoryLimits l) -> std::unique_ptr<Backend> {
                                                   return std::make_unique<RedisBackend>(l);
                                                 }}),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return info.param.name;
                         });

// What only the Redis store does: fail when Redis is away (the caller carries on), report it,
// and come back with Redis.
TEST(RedisConversationStoreTest, FailsWhileRedisIsAwayAndRecovers) {
  auto server = testing::RedisServer::Start();
  ASSERT_NE(server, nullptr);
  auto client = store::RedisClient::Create(
      {.url = server->url(), .backoff_min = 20ms, .backoff_max = 200ms}, nullptr);
  ASSERT_TRUE(client.ok());
  RedisConversationStore memory(client->get(), {});
  auto healthy = [&] { return memory.status().health == store::BackendHealth::kHealthy; };
  auto history = [&] {
    std::promise<absl::StatusOr<ChatHistory>> p;
    auto f = p.get_future();
    memory.History({"p", "c"}, [&p](auto h) { p.set_value(std::move(h)); });
    return f.get();
  };
  auto append = [&] {
    std::promise<absl::Status> p;
    auto f = p.get_future();
    memory.Append({"p", "c"}, "q", "a", [&p](absl::Status s) { p.set_value(s); });
    return f.get();
  };
  for (int i = 0; i < 1000 && !healthy(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(healthy());
  EXPECT_EQ(memory.status().detail, "redis " + (*client)->endpoint());
  ASSERT_TRUE(append().ok());

  server->Stop();
  EXPECT_FALSE(history().ok());
  EXPECT_FALSE(append().ok());
  for (int i = 0; i < 1000 && memory.status().health != store::BackendHealth::kDown; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(memory.status().health, store::BackendHealth::kDown);
  EXPECT_NE(memory.status().detail.find("redis 127.0.0.1:"), std::string::npos);

  ASSERT_TRUE(server->Restart());
  for (int i = 0; i < 1000 && !healthy(); ++i) std::this_thread::sleep_for(10ms);
  auto back = history();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->size(), 2) << "the turn stored before the outage (Stop saves the data)";
}

TEST(RedisConversationStoreTest, KeysNameThePrincipalAsTheHashTag) {
  EXPECT_EQ(RedisConversationStore::KeyOf({"alice", "conv-1"}), "anima:conv:{alice}:conv-1");
  EXPECT_EQ(RedisConversationStore::KeyOf({"a}b", "x:y"}), "anima:conv:{a%7Db}:x%3Ay");
  std::string key = RedisConversationStore::KeyOf({"p", std::string(1000, 'z')});
  EXPECT_LT(key.size(), 100u);
}

}  // namespace
}  // namespace anima::router
