// anima-gateway: the WebSocket front door (PROTOCOL.md), translating client frames to
// Router.Dispatch calls.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "boost/asio/ip/address.hpp"
#include "gateway/gateway_server.h"
#include "gateway/keys_reloader.h"
#include "gateway/redis_quota_store.h"
#include "gateway/usage_ledger.h"
#include "services/common/flags.h"
#include "services/common/metrics.h"
#include "services/common/process.h"
#include "services/common/service_flags.h"
#include "services/common/tls_front.h"
#include "services/store/postgres_client.h"
#include "services/store/redis_client.h"
#include "spdlog/spdlog.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "anima-gateway: %s\n", message.c_str());
  return 2;
}

int Main(int argc, char** argv) {
  anima::common::BlockShutdownSignals();
  anima::gateway::KeysReloader::BlockReloadSignal();
  anima::gateway::GatewaySettings settings;
  anima::common::ServiceFlags service{
      .bind = settings.bind, .port = settings.port, .metrics_port = 9100};
  int max_message_bytes = static_cast<int>(settings.max_message_bytes);
  int tls_port = -1;
  std::string tls_cert, tls_key;

  anima::common::FlagSet flags("anima-gateway");
  anima::common::AddServiceFlags(flags, "ANIMA_GATEWAY", "WebSocket/HTTP port (0 picks a free one)",
                                 &service);
  flags.Add("router", &settings.router, "ANIMA_GATEWAY_ROUTER", "router gRPC address host:port");
  flags.Add("threads", &settings.threads, "ANIMA_GATEWAY_THREADS", "io threads");
  flags.Add("max-message-bytes", &max_message_bytes, "ANIMA_GATEWAY_MAX_MESSAGE_BYTES",
            "largest client frame; larger: too_large and close 1009");
  flags.Add("max-in-flight", &settings.max_in_flight, "ANIMA_GATEWAY_MAX_IN_FLIGHT",
            "requests in flight per connection");
  flags.Add("messages-per-second", &settings.messages_per_second,
            "ANIMA_GATEWAY_MESSAGES_PER_SECOND",
            "client frames per second per connection (token bucket, burst of one second)");
  flags.Add("max-connections", &settings.max_connections, "ANIMA_GATEWAY_MAX_CONNECTIONS",
            "WebSocket connections open at once; more: HTTP 503");
  flags.Add("max-new-connections-per-second", &settings.max_new_connections_per_second,
            "ANIMA_GATEWAY_MAX_NEW_CONNECTIONS_PER_SECOND",
            "WebSocket upgrades per second, whole gateway; more: HTTP 429");
  int handshake_timeout_ms = static_cast<int>(settings.handshake_timeout.count());
  flags.Add("handshake-timeout-ms", &handshake_timeout_ms, "ANIMA_GATEWAY_HANDSHAKE_TIMEOUT_MS",
            "from TCP accept to a complete request, and for the WebSocket handshake");
  int idle_timeout_ms = static_cast<int>(settings.idle_timeout.count());
  flags.Add("idle-timeout-ms", &idle_timeout_ms, "ANIMA_GATEWAY_IDLE_TIMEOUT_MS",
            "ping after half of it without a client frame; close after all of it");
  int state_interval_ms = static_cast<int>(settings.state_interval.count());
  flags.Add("state-interval-ms", &state_interval_ms, "ANIMA_GATEWAY_STATE_INTERVAL_MS",
            "how often subscribed connections get consciousness_state");
  int max_send_queue_bytes = static_cast<int>(settings.max_send_queue_bytes);
  flags.Add("max-send-queue-bytes", &max_send_queue_bytes, "ANIMA_GATEWAY_MAX_SEND_QUEUE_BYTES",
            "frames queued for one connection; a client that stays over it is closed with 1008");
  int slow_reader_timeout_ms = static_cast<int>(settings.slow_reader_timeout.count());
  flags.Add("slow-reader-timeout-ms", &slow_reader_timeout_ms,
            "ANIMA_GATEWAY_SLOW_READER_TIMEOUT_MS",
            "how long a connection may stay over --max-send-queue-bytes");
  int drain_timeout_ms = static_cast<int>(settings.drain_timeout.count());
  flags.Add("drain-timeout-ms", &drain_timeout_ms, "ANIMA_GATEWAY_DRAIN_TIMEOUT_MS",
            "on SIGTERM: how long requests in flight get to finish before connections close 1001");
  flags.Add("admission", &settings.admission, "ANIMA_GATEWAY_ADMISSION",
            "hold every request to an adaptive concurrency limit per type, and refuse what "
            "would wait too long (overloaded)");
  flags.Add("admission-max-in-flight", &settings.admission_limit.max,
            "ANIMA_GATEWAY_ADMISSION_MAX_IN_FLIGHT",
            "the most requests of one type in flight from this gateway");
  flags.Add("admission-tolerance", &settings.admission_limit.tolerance,
            "ANIMA_GATEWAY_ADMISSION_TOLERANCE",
            "a normal or low type's limit shrinks while its median round trip is over this x its "
            "baseline");
  flags.Add("admission-tolerance-high", &settings.admission_high_tolerance,
            "ANIMA_GATEWAY_ADMISSION_TOLERANCE_HIGH",
            "the same for high-priority types (chat): their limit is for overload only");
  int probe_interval_ms = static_cast<int>(settings.admission_limit.probe_interval.count());
  flags.Add("admission-probe-interval-ms", &probe_interval_ms,
            "ANIMA_GATEWAY_ADMISSION_PROBE_INTERVAL_MS",
            "how often each type's baseline round trip is measured again");
  int queue_target_ms = static_cast<int>(settings.admission_queue_target.count());
  flags.Add("admission-queue-target-ms", &queue_target_ms,
            "ANIMA_GATEWAY_ADMISSION_QUEUE_TARGET_MS",
            "once a type's oldest held request has waited this long, new ones are refused "
            "`overloaded` at once");
  int max_queue_wait_ms = static_cast<int>(settings.admission_max_queue_wait.count());
  flags.Add("admission-max-queue-wait-ms", &max_queue_wait_ms,
            "ANIMA_GATEWAY_ADMISSION_MAX_QUEUE_WAIT_MS",
            "a held request still waiting for admission after this is refused `overloaded`");
  flags.Add("console", &settings.console, "ANIMA_GATEWAY_CONSOLE",
            "serve the web console on GET / and /console/* (static files embedded in the binary; "
            "its WebSocket authenticates like any client's)");
  anima::gateway::AuthOptions auth_options;
  flags.Add("auth-keys-file", &auth_options.keys_file, "ANIMA_GATEWAY_AUTH_KEYS_FILE",
            "principals, tiers, quotas and the SHA-256 of each key (docs/security.md); reloaded "
            "on SIGHUP and when it changes");
  flags.Add("auth-jwt-secret-file", &auth_options.jwt_secret_file,
            "ANIMA_GATEWAY_AUTH_JWT_SECRET_FILE",
            "HS256 secret for JWT bearer tokens (sub: the principal; exp required)");
  flags.Add("auth-jwt-audience", &auth_options.jwt_audience, "ANIMA_GATEWAY_AUTH_JWT_AUDIENCE",
            "when set, a JWT's aud must contain it");
  flags.Add("auth-jwt-issuer", &auth_options.jwt_issuer, "ANIMA_GATEWAY_AUTH_JWT_ISSUER",
            "when set, a JWT's iss must equal it");
  int jwt_max_lifetime_s = static_cast<int>(auth_options.jwt_max_lifetime.count());
  flags.Add("auth-jwt-max-lifetime-s", &jwt_max_lifetime_s, "ANIMA_GATEWAY_AUTH_JWT_MAX_LIFETIME_S",
            "a JWT valid for longer than this (exp - iat, or exp - now) is refused");
  std::string allowed_origins;
  flags.Add("allowed-origins", &allowed_origins, "ANIMA_GATEWAY_ALLOWED_ORIGINS",
            "comma-separated browser origins allowed besides the gateway's own (* for any); "
            "requests without Origin pass");
  flags.Add("client-address-xff-hops", &settings.access.forwarded_hops,
            "ANIMA_GATEWAY_CLIENT_ADDRESS_XFF_HOPS",
            "behind proxies: the client address is the X-Forwarded-For entry this many from the "
            "right (Google's L7 load balancer: 2); 0: the peer address");
  bool allow_unauthenticated = false;
  flags.Add("allow-unauthenticated", &allow_unauthenticated, "ANIMA_GATEWAY_ALLOW_UNAUTHENTICATED",
            "listen on a non-loopback address without auth (anyone who reaches it spends the "
            "provider keys)");
  std::string redis_url;
  flags.Add("redis", &redis_url, "ANIMA_REDIS_URL",
            "redis://[:password@]host:port[/db]: principals' quotas shared with every gateway on "
            "it (docs/security.md); empty: counted by this gateway alone");
  std::string postgres_url;
  flags.Add("postgres", &postgres_url, "ANIMA_POSTGRES_URL",
            "postgresql://user:password@host:port/db: the usage ledger (requests, tokens and "
            "dollars per principal per day, shared by every gateway); empty: none");
  flags.Add("tls-port", &tls_port, "ANIMA_GATEWAY_TLS_PORT",
            "also serve wss:// and https:// here (0: any free; -1: no TLS)");
  flags.Add("tls-cert", &tls_cert, "ANIMA_GATEWAY_TLS_CERT", "PEM certificate chain for TLS");
  flags.Add("tls-key", &tls_key, "ANIMA_GATEWAY_TLS_KEY", "PEM private key of --tls-cert");
  if (auto s = flags.Parse(argc, argv); !s.ok()) {
    return Fail(std::string(s.message()) + "\n" + flags.Usage());
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  settings.bind = service.bind;
  settings.port = service.port;
  if (settings.threads < 1 || settings.threads > 256) return Fail("--threads: expected 1 to 256");
  if (max_message_bytes < 64 || max_message_bytes > 16 * 1024 * 1024) {
    return Fail("--max-message-bytes: expected 64 to 16777216");
  }
  settings.max_message_bytes = static_cast<size_t>(max_message_bytes);
  if (settings.max_in_flight < 1 || settings.max_in_flight > 100000) {
    return Fail("--max-in-flight: expected 1 to 100000");
  }
  if (settings.router.empty()) return Fail("--router: required host:port");
  if (settings.messages_per_second < 1 || settings.messages_per_second > 1000000) {
    return Fail("--messages-per-second: expected 1 to 1000000");
  }
  if (settings.max_connections < 1 || settings.max_connections > 10000000) {
    return Fail("--max-connections: expected 1 to 10000000");
  }
  if (settings.max_new_connections_per_second < 1 ||
      settings.max_new_connections_per_second > 1000000) {
    return Fail("--max-new-connections-per-second: expected 1 to 1000000");
  }
  if (handshake_timeout_ms < 10 || handshake_timeout_ms > 3600000) {
    return Fail("--handshake-timeout-ms: expected 10 to 3600000");
  }
  settings.handshake_timeout = std::chrono::milliseconds(handshake_timeout_ms);
  if (idle_timeout_ms < 10 || idle_timeout_ms > 86400000) {
    return Fail("--idle-timeout-ms: expected 10 to 86400000");
  }
  settings.idle_timeout = std::chrono::milliseconds(idle_timeout_ms);
  if (state_interval_ms < 10 || state_interval_ms > 3600000) {
    return Fail("--state-interval-ms: expected 10 to 3600000");
  }
  settings.state_interval = std::chrono::milliseconds(state_interval_ms);
  if (max_send_queue_bytes < 65536 || max_send_queue_bytes > 1024 * 1024 * 1024) {
    return Fail("--max-send-queue-bytes: expected 65536 to 1073741824");
  }
  settings.max_send_queue_bytes = static_cast<size_t>(max_send_queue_bytes);
  if (slow_reader_timeout_ms < 1 || slow_reader_timeout_ms > 3600000) {
    return Fail("--slow-reader-timeout-ms: expected 1 to 3600000");
  }
  settings.slow_reader_timeout = std::chrono::milliseconds(slow_reader_timeout_ms);
  if (drain_timeout_ms < 0 || drain_timeout_ms > 3600000) {
    return Fail("--drain-timeout-ms: expected 0 to 3600000");
  }
  settings.drain_timeout = std::chrono::milliseconds(drain_timeout_ms);
  if (settings.admission_limit.max < 1 || settings.admission_limit.max > 100000) {
    return Fail("--admission-max-in-flight: expected 1 to 100000");
  }
  settings.admission_limit.initial =
      std::min(settings.admission_limit.initial, settings.admission_limit.max);
  if (!(settings.admission_limit.tolerance >= 1.1 && settings.admission_limit.tolerance <= 100)) {
    return Fail("--admission-tolerance: expected 1.1 to 100");
  }
  if (!(settings.admission_high_tolerance >= 1.1 && settings.admission_high_tolerance <= 100)) {
    return Fail("--admission-tolerance-high: expected 1.1 to 100");
  }
  if (probe_interval_ms < 1000 || probe_interval_ms > 3600000) {
    return Fail("--admission-probe-interval-ms: expected 1000 to 3600000");
  }
  settings.admission_limit.probe_interval = std::chrono::milliseconds(probe_interval_ms);
  if (queue_target_ms < 1 || queue_target_ms > 60000) {
    return Fail("--admission-queue-target-ms: expected 1 to 60000");
  }
  if (max_queue_wait_ms < queue_target_ms || max_queue_wait_ms > 600000) {
    return Fail("--admission-max-queue-wait-ms: expected --admission-queue-target-ms to 600000");
  }
  settings.admission_queue_target = std::chrono::milliseconds(queue_target_ms);
  settings.admission_max_queue_wait = std::chrono::milliseconds(max_queue_wait_ms);
  if (tls_port < -1 || tls_port > 65535) return Fail("--tls-port: expected -1 to 65535");
  if (tls_port >= 0 && (tls_cert.empty() || tls_key.empty())) {
    return Fail("--tls-port: needs --tls-cert and --tls-key");
  }
  if (jwt_max_lifetime_s < 1) return Fail("--auth-jwt-max-lifetime-s: expected at least 1");
  if (settings.access.forwarded_hops < 0 || settings.access.forwarded_hops > 16) {
    return Fail("--client-address-xff-hops: expected 0 to 16");
  }
  if (!redis_url.empty()) {
    if (auto endpoint = anima::store::ParseRedisUrl(redis_url); !endpoint.ok()) {
      return Fail("--redis: " + std::string(endpoint.status().message()));
    }
  }
  auth_options.jwt_max_lifetime = std::chrono::seconds(jwt_max_lifetime_s);
  auto auth = anima::gateway::Authenticator::Load(auth_options);
  if (!auth.ok()) return Fail(std::string(auth.status().message()));
  settings.auth = std::move(*auth);
  for (absl::string_view origin : absl::StrSplit(allowed_origins, ',', absl::SkipWhitespace())) {
    settings.access.allowed_origins.emplace_back(absl::StripAsciiWhitespace(origin));
  }
  if (!settings.auth) {
    boost::system::error_code ec;
    auto address = boost::asio::ip::make_address(settings.bind, ec);
    bool loopback = !ec && address.is_loopback();
    if (!loopback && !allow_unauthenticated) {
      return Fail("--bind=" + settings.bind +
                  ": refusing to listen beyond loopback without auth: anyone who reaches the "
                  "port could spend the provider keys and run code. Give --auth-keys-file or "
                  "--auth-jwt-secret-file, or --allow-unauthenticated to accept that risk");
    }
  }
  // Per-principal metric labels only while the keys file bounds the principals (JWT subjects
  // are not bounded).
  settings.metrics_per_principal = settings.auth &&
                                   settings.auth->options().jwt_secret_file.empty() &&
                                   settings.auth->keys()->principal_count() <= 100;
  if (auto s = anima::common::InitService(service, "gateway"); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  std::unique_ptr<anima::gateway::KeysReloader> reloader;
  if (settings.auth) {
    auto keys = settings.auth->keys();
    spdlog::info("auth on: {} principals, {} keys{}", keys->principal_count(), keys->key_count(),
                 settings.auth->options().jwt_secret_file.empty() ? "" : ", HS256 JWTs");
    if (!auth_options.keys_file.empty()) {
      reloader = std::make_unique<anima::gateway::KeysReloader>(settings.auth);
    }
  } else if (allow_unauthenticated) {
    spdlog::warn(
        "AUTH IS OFF on {} (--allow-unauthenticated): anyone who reaches this port acts as the "
        "principal `local`, spends the provider keys and runs self-coding jobs",
        settings.bind);
  } else {
    spdlog::info("auth off: every client is the principal `local` (loopback only)");
  }

  auto metrics = anima::common::StartMetricsServer(service);
  if (!metrics.ok()) {
    spdlog::error("{}", metrics.status().ToString());
    return 1;
  }
  if (!redis_url.empty()) {
    anima::store::RedisOptions options;
    options.url = redis_url;
    // An admission waits for its answer: a Redis that hangs costs the requests waiting on it this
    // much, then the local fallback answers at once (docs/security.md).
    options.call_timeout = std::chrono::milliseconds(200);
    auto client = anima::store::RedisClient::Create(options, &(*metrics)->registry());
    if (!client.ok()) return Fail("--redis: " + std::string(client.status().message()));
    std::string endpoint = (*client)->endpoint();
    anima::gateway::RedisQuotaOptions quota_options;
    // The pod's name in Kubernetes: says whose leases an in-flight set holds.
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') quota_options.instance = host;
    settings.quotas = std::make_shared<anima::gateway::RedisQuotaStore>(
        std::move(*client), quota_options, &(*metrics)->registry());
    spdlog::info("quotas: shared on redis {} (local limits while it cannot be reached)", endpoint);
  }
  if (!postgres_url.empty()) {
    anima::store::PostgresOptions options;
    options.url = postgres_url;
    options.connections = 2;  // the ledger's thread, and a spare while one reconnects
    // A usage answer waits for its read: keep a hung server from holding it for long.
    options.connect_timeout = std::chrono::milliseconds(1000);
    options.statement_timeout = std::chrono::milliseconds(2000);
    options.call_timeout = std::chrono::milliseconds(3000);
    options.acquire_timeout = std::chrono::milliseconds(3000);
    options.application_name = "anima-gateway";
    auto client = anima::store::PostgresClient::Create(options, &(*metrics)->registry());
    if (!client.ok()) return Fail("--postgres: " + std::string(client.status().message()));
    std::string endpoint = (*client)->endpoint();
    std::shared_ptr<anima::gateway::QuotaStore> inner = settings.quotas;
    if (!inner) inner = std::make_shared<anima::gateway::LocalQuotaStore>();
    settings.quotas = std::make_shared<anima::gateway::LedgerQuotaStore>(
        std::move(inner), std::make_unique<anima::gateway::UsageLedger>(
                              std::move(*client), anima::gateway::UsageLedger::Options{}));
    spdlog::info("usage ledger: postgres {}", endpoint);
  }
  std::string router = settings.router;
  int threads = settings.threads;
  auto server = anima::gateway::GatewayServer::Start(std::move(settings), (*metrics)->registry());
  if (!server.ok()) {
    spdlog::error("{}", server.status().ToString());
    return 1;
  }
  // TLS is terminated in front of the plain listener, in this process (services/common/
  // tls_front.h); the plain port keeps serving, for health checks and in-cluster clients.
  std::unique_ptr<anima::common::TlsFront> tls;
  std::map<std::string, int> ports = {{"http", (*server)->port()}, {"metrics", (*metrics)->port()}};
  if (tls_port >= 0) {
    anima::common::TlsFrontOptions options;
    options.bind = service.bind;
    options.port = tls_port;
    options.cert_file = tls_cert;
    options.key_file = tls_key;
    options.backend_port = (*server)->port();
    options.threads = threads;  // TLS handshakes and crypto get as many threads as plain I/O
    options.handshake_timeout = std::chrono::milliseconds(handshake_timeout_ms);
    auto started = anima::common::TlsFront::Start(options);
    if (!started.ok()) {
      spdlog::error("--tls-port: {}", started.status().ToString());
      return 2;
    }
    tls = std::move(*started);
    ports["https"] = tls->port();
    spdlog::info("TLS: wss://{}:{}/ and https://{}:{}/", service.bind, tls->port(), service.bind,
                 tls->port());
  }
  if (auto s = anima::common::WriteReadyFile(service.ready_file, ports); !s.ok()) {
    spdlog::error("{}", s.ToString());
    return 1;
  }
  spdlog::info("listening on ws://{}:{}/ (metrics :{}), router {}", service.bind, (*server)->port(),
               (*metrics)->port(), router);
  int sig = anima::common::WaitForShutdownSignal();
  spdlog::info("signal {}: shutting down", sig);
  (*server)->Shutdown();  // drains; connections over TLS close through their tunnels
  server->reset();
  if (tls) tls->Stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return anima::common::RunMain("anima-gateway", Main, argc, argv);
}
