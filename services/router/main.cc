// anima-router: every client request passes through here (Router.Dispatch).
#include <iostream>

#include "services/common/config.h"
#include "services/common/flags.h"
#include "services/common/grpc_server.h"
#include "services/common/metrics.h"
#include "services/common/process.h"
#include "services/common/service_flags.h"
#include "services/router/conversation_memory.h"
#include "services/router/redis_conversation_store.h"
#include "services/router/router_config.h"
#include "services/router/router_metrics.h"
#include "services/router/router_service.h"
#include "services/router/state_poller.h"
#include "services/store/redis_client.h"
#include "spdlog/spdlog.h"

namespace {

struct Options {
  anima::common::ServiceFlags service{.port = 50051, .metrics_port = 9101};
  std::string broker = "127.0.0.1:50052";
  std::string self_coding;
  std::string config;
  int64_t poll_interval_ms = 1000;
  int64_t state_interval_ms = 5000;
  int64_t chat_deadline_ms = 0;
  int memory_turns = 10;
  int memory_conversations = 10000;
  int64_t memory_max_age_s = 3600;
  int64_t memory_max_bytes = int64_t{64} << 20;
  int64_t memory_max_message_bytes = 16384;
  int64_t memory_max_conversation_bytes = 262144;
  std::string redis;
};

int Run(int argc, char** argv) {
  anima::common::BlockShutdownSignals();
  Options o;
  anima::common::FlagSet flags("anima-router");
  anima::common::AddServiceFlags(flags, "ANIMA_ROUTER", "gRPC port (0 picks a free one)",
                                 &o.service);
  flags.Add("broker", &o.broker, "ANIMA_ROUTER_BROKER", "llm-broker gRPC address");
  flags.Add("self-coding", &o.self_coding, "ANIMA_ROUTER_SELF_CODING",
            "self-coding gRPC address (empty: not deployed, its requests get unavailable)");
  flags.Add("config", &o.config, "ANIMA_ROUTER_CONFIG",
            "routing table, priorities, deadlines and scheduler limits (JSON; see "
            "docs/configuration.md)");
  flags.Add("poll-interval-ms", &o.poll_interval_ms, "ANIMA_ROUTER_POLL_INTERVAL_MS",
            "how often every back end is asked for its state");
  flags.Add("state-interval-ms", &o.state_interval_ms, "ANIMA_ROUTER_STATE_INTERVAL_MS",
            "default interval of WatchState streams");
  flags.Add("chat-deadline-ms", &o.chat_deadline_ms, "ANIMA_ROUTER_CHAT_DEADLINE_MS",
            "deadline of a chat request, lowered by the client's timeout_ms (0: the config's, "
            "120000 by default)");
  flags.Add("memory-turns", &o.memory_turns, "ANIMA_ROUTER_MEMORY_TURNS",
            "turns remembered per conversation (0 disables memory)");
  flags.Add("memory-conversations", &o.memory_conversations, "ANIMA_ROUTER_MEMORY_CONVERSATIONS",
            "conversations remembered at most");
  flags.Add("memory-max-age-s", &o.memory_max_age_s, "ANIMA_ROUTER_MEMORY_MAX_AGE_S",
            "a conversation idle this long is forgotten");
  flags.Add("memory-max-bytes", &o.memory_max_bytes, "ANIMA_ROUTER_MEMORY_MAX_BYTES",
            "bytes all remembered conversations may take; the least recently used go first");
  flags.Add("memory-max-message-bytes", &o.memory_max_message_bytes,
            "ANIMA_ROUTER_MEMORY_MAX_MESSAGE_BYTES",
            "a remembered user message or answer longer than this is cut (64 to 1048576)");
  flags.Add("memory-max-conversation-bytes", &o.memory_max_conversation_bytes,
            "ANIMA_ROUTER_MEMORY_MAX_CONVERSATION_BYTES",
            "bytes the turns of one conversation may take; the oldest go first (at least twice "
            "--memory-max-message-bytes)");
  flags.Add("redis", &o.redis, "ANIMA_REDIS_URL",
            "conversation memory in Redis, shared by every router replica: "
            "redis://[:password@]host:port[/db] (no TLS); empty: in this process");
  if (auto s = flags.Parse(argc, argv); !s.ok()) {
    std::cerr << "anima-router: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  if (o.poll_interval_ms < 100 || o.state_interval_ms < 100 || o.chat_deadline_ms < 0 ||
      o.memory_turns < 0 || o.memory_conversations < 0 || o.memory_max_age_s < 1 ||
      o.memory_max_bytes < 0) {
    std::cerr << "anima-router: --poll-interval-ms and --state-interval-ms must be >= 100, the "
                 "deadline and memory limits positive\n";
    return 2;
  }
  if (o.memory_max_message_bytes < 64 || o.memory_max_message_bytes > (1 << 20)) {
    std::cerr << "anima-router: --memory-max-message-bytes must be between 64 and 1048576\n";
    return 2;
  }
  if (o.memory_max_conversation_bytes < 2 * o.memory_max_message_bytes) {
    std::cerr << "anima-router: --memory-max-conversation-bytes must be at least twice "
                 "--memory-max-message-bytes (one whole turn)\n";
    return 2;
  }
  anima::router::MemoryLimits memory_limits;
  memory_limits.max_turns = static_cast<size_t>(o.memory_turns);
  memory_limits.max_conversations = static_cast<size_t>(o.memory_conversations);
  memory_limits.max_age = std::chrono::seconds(o.memory_max_age_s);
  memory_limits.max_bytes = static_cast<size_t>(o.memory_max_bytes);
  memory_limits.max_message_bytes = static_cast<size_t>(o.memory_max_message_bytes);
  memory_limits.max_conversation_bytes = static_cast<size_t>(o.memory_max_conversation_bytes);
  if (!o.redis.empty()) {
    if (auto url = anima::store::ParseRedisUrl(o.redis); !url.ok()) {
      std::cerr << "anima-router: --redis: " << url.status().message() << "\n";
      return 2;
    }
  }
  if (auto s = anima::common::InitService(o.service, "router"); !s.ok()) {
    std::cerr << "anima-router: " << s.message() << "\n";
    return 2;
  }
  anima::router::RouterConfig config = anima::router::DefaultRouterConfig();
  if (!o.config.empty()) {
    auto json = anima::common::LoadJsonFile(o.config);
    if (!json.ok()) {
      std::cerr << "anima-router: " << json.status().message() << "\n";
      return 2;
    }
    auto parsed = anima::router::ParseRouterConfig(*json);
    if (!parsed.ok()) {
      std::cerr << "anima-router: " << o.config << ": " << parsed.status().message() << "\n";
      return 2;
    }
    config = std::move(*parsed);
  }

  auto metrics = anima::common::StartMetricsServer(o.service);
  if (!metrics.ok()) {
    spdlog::error("{}", std::string(metrics.status().message()));
    return 1;
  }
  auto broker_channel = anima::common::MakeChannel(o.broker, &(*metrics)->registry());
  std::vector<anima::router::Backend> backends = {{"llm-broker", o.broker, broker_channel}};
  anima::router::Downstreams downstreams;
  downstreams.broker = broker_channel;
  if (!o.self_coding.empty()) {
    downstreams.self_coding = anima::common::MakeChannel(o.self_coding, &(*metrics)->registry());
    backends.push_back({"self-coding", o.self_coding, downstreams.self_coding});
  }
  for (const auto& m : config.modules) {
    auto channel = anima::common::MakeChannel(m.address, &(*metrics)->registry());
    downstreams.modules[m.name] = channel;
    backends.push_back({m.name, m.address, channel});
  }
  // Conversation memory: in this process, or in Redis when --redis is set. The client connects
  // in the background; until it does, chats go on without memory.
  std::unique_ptr<anima::store::RedisClient> redis;
  std::unique_ptr<anima::router::ConversationStore> memory;
  if (o.redis.empty()) {
    memory = std::make_unique<anima::router::ConversationMemory>(memory_limits);
  } else {
    auto client = anima::store::RedisClient::Create({.url = o.redis}, &(*metrics)->registry());
    if (!client.ok()) {
      spdlog::error("--redis: {}", std::string(client.status().message()));
      return 2;
    }
    redis = std::move(*client);
    memory = std::make_unique<anima::router::RedisConversationStore>(redis.get(), memory_limits);
  }

  anima::router::DispatchCounters counters;
  anima::router::StatePoller poller(backends, std::chrono::milliseconds(o.poll_interval_ms),
                                    &counters, memory.get());

  anima::router::RouterOptions options;
  if (o.chat_deadline_ms > 0)
    config.deadlines["chat"] = std::chrono::milliseconds(o.chat_deadline_ms);
  options.watch_interval = std::chrono::milliseconds(o.state_interval_ms);
  options.memory = memory_limits;
  anima::router::RouterService service(downstreams, &config, &poller, &counters,
                                       (*metrics)->registry(), options, memory.get());
  poller.SetScheduler(&service.scheduler(), config.scheduler);
  anima::router::StateMetrics state_metrics((*metrics)->registry());
  poller.Subscribe(
      [&state_metrics](const anima::v1::ConsciousnessState& s) { state_metrics.Record(s); });

  auto server = anima::common::GrpcServer::Start(
      o.service.bind + ":" + std::to_string(o.service.port), {&service}, (*metrics)->registry());
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  poller.Start();
  spdlog::info(
      "listening on {}:{} (gRPC), metrics on :{}, llm-broker at {}, self-coding {}, memory {}",
      o.service.bind, (*server)->port(), (*metrics)->port(), o.broker,
      o.self_coding.empty() ? "not deployed" : "at " + o.self_coding,
      redis ? "in redis " + redis->endpoint() : std::string("in-process"));
  if (auto s = anima::common::WriteReadyFile(
          o.service.ready_file, {{"grpc", (*server)->port()}, {"metrics", (*metrics)->port()}});
      !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }

  int sig = anima::common::WaitForShutdownSignal();
  spdlog::info("signal {}: draining", sig);
  (*server)->Shutdown(std::chrono::seconds(10));
  poller.Stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return anima::common::RunMain("anima-router", Run, argc, argv); }
