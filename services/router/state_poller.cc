#include "services/router/state_poller.h"

#include "grpc/health/v1/health.grpc.pb.h"
#include "services/common/harmony.h"
#include "services/common/metrics.h"
#include "services/common/process.h"
#include "spdlog/spdlog.h"

namespace anima::router {

namespace {

constexpr std::chrono::milliseconds kProbeTimeout{1000};

anima::v1::ModuleStatus ServiceModule(const Backend& backend, anima::v1::ModuleHealth health,
                                      const std::string& detail) {
  anima::v1::ModuleStatus m;
  m.set_name(backend.name);
  m.set_service(backend.name);
  m.set_kind("service");
  m.set_health(health);
  m.set_detail(detail);
  return m;
}

}  // namespace

StatePoller::StatePoller(std::vector<Backend> backends, std::chrono::milliseconds interval,
                         const DispatchCounters* counters, const ConversationStore* memory)
    : backends_(std::move(backends)), interval_(interval), counters_(counters), memory_(memory) {}

StatePoller::~StatePoller() { Stop(); }

void StatePoller::SetScheduler(PriorityScheduler* scheduler, PriorityScheduler::Options options) {
  scheduler_ = scheduler;
  scheduler_options_ = options;
}

void StatePoller::AddQueueModules(std::vector<anima::v1::ModuleStatus>* modules) {
  if (scheduler_ == nullptr) return;
  auto stats = scheduler_->stats();
  for (Priority p : {Priority::kHigh, Priority::kNormal, Priority::kLow}) {
    int i = static_cast<int>(p);
    anima::v1::ModuleStatus m;
    m.set_name(std::string("router/queue-") + PriorityName(p));
    m.set_service("router");
    m.set_kind("queue");
    size_t capacity = scheduler_options_.queue_capacity[i];
    bool rejecting = stats.rejected[i] > last_rejected_[i];
    last_rejected_[i] = stats.rejected[i];
    if (rejecting) {
      m.set_health(anima::v1::MODULE_HEALTH_DOWN);
      m.set_detail("full: rejecting requests with overloaded");
    } else if (capacity > 0 && stats.queue_depth[i] * 5 >= capacity * 4) {
      m.set_health(anima::v1::MODULE_HEALTH_DEGRADED);
      m.set_detail("over 80% full");
    } else {
      m.set_health(anima::v1::MODULE_HEALTH_HEALTHY);
    }
    m.set_in_flight(stats.in_flight[i]);
    (*m.mutable_counters())["queue_depth"] = static_cast<double>(stats.queue_depth[i]);
    (*m.mutable_counters())["capacity"] = static_cast<double>(capacity);
    (*m.mutable_counters())["started_total"] = static_cast<double>(stats.started[i]);
    (*m.mutable_counters())["rejected_total"] = static_cast<double>(stats.rejected[i]);
    modules->push_back(std::move(m));
  }
}

anima::v1::ModuleStatus StatePoller::MemoryModule() const {
  store::BackendStatus status = memory_->status();
  anima::v1::ModuleStatus m;
  m.set_name("router/memory");
  m.set_service("router");
  m.set_kind("store");
  switch (status.health) {
    case store::BackendHealth::kHealthy:
      m.set_health(anima::v1::MODULE_HEALTH_HEALTHY);
      break;
    case store::BackendHealth::kDegraded:
      m.set_health(anima::v1::MODULE_HEALTH_DEGRADED);
      break;
    case store::BackendHealth::kDown:
      m.set_health(anima::v1::MODULE_HEALTH_DOWN);
      break;
  }
  m.set_detail(status.detail);
  return m;
}

void StatePoller::Start() {
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      lock.unlock();
      PollOnce();
      lock.lock();
      wake_.wait_for(lock, interval_, [this] { return stopping_; });
    }
  });
}

void StatePoller::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<anima::v1::ModuleStatus> StatePoller::Describe(const Backend& backend) {
  auto stub = anima::v1::Introspection::NewStub(backend.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kProbeTimeout);
  anima::v1::DescribeResponse res;
  grpc::Status status = stub->Describe(&ctx, anima::v1::DescribeRequest(), &res);
  if (status.ok()) {
    std::vector<anima::v1::ModuleStatus> modules(res.modules().begin(), res.modules().end());
    if (modules.empty()) {
      modules.push_back(ServiceModule(backend, anima::v1::MODULE_HEALTH_HEALTHY, ""));
    }
    return modules;
  }
  if (status.error_code() != grpc::StatusCode::UNIMPLEMENTED) {
    return {ServiceModule(backend, anima::v1::MODULE_HEALTH_DOWN,
                          "unreachable at " + backend.address + ": " + status.error_message())};
  }
  auto health = grpc::health::v1::Health::NewStub(backend.channel);
  grpc::ClientContext hctx;
  hctx.set_deadline(std::chrono::system_clock::now() + kProbeTimeout);
  grpc::health::v1::HealthCheckResponse hres;
  status = health->Check(&hctx, grpc::health::v1::HealthCheckRequest(), &hres);
  if (!status.ok()) {
    return {ServiceModule(backend, anima::v1::MODULE_HEALTH_DOWN, status.error_message())};
  }
  bool serving = hres.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  return {ServiceModule(backend,
                        serving ? anima::v1::MODULE_HEALTH_HEALTHY : anima::v1::MODULE_HEALTH_DOWN,
                        serving ? "" : "not serving")};
}

anima::v1::ModuleStatus StatePoller::RouterModule(std::chrono::steady_clock::time_point now) {
  int64_t handled = counters_ != nullptr ? counters_->handled.load() : 0;
  int64_t failed = counters_ != nullptr ? counters_->failed.load() : 0;
  double seconds = last_poll_ == std::chrono::steady_clock::time_point{}
                       ? 0
                       : std::chrono::duration<double>(now - last_poll_).count();
  anima::v1::ModuleStatus m;
  m.set_name("router");
  m.set_service("router");
  m.set_kind("service");
  m.set_health(anima::v1::MODULE_HEALTH_HEALTHY);
  m.set_in_flight(counters_ != nullptr ? counters_->in_flight.load() : 0);
  if (seconds > 0) {
    int64_t done = handled - last_handled_;
    m.set_requests_per_second(static_cast<double>(done) / seconds);
    m.set_error_rate(done > 0 ? static_cast<double>(failed - last_failed_) / done : 0);
    if (done > 0) last_active_ = common::Rfc3339Now();
  }
  m.set_last_active(last_active_);
  (*m.mutable_counters())["requests_total"] = static_cast<double>(handled);
  (*m.mutable_counters())["failures_total"] = static_cast<double>(failed);
  last_handled_ = handled;
  last_failed_ = failed;
  return m;
}

void StatePoller::PollOnce() {
  std::vector<anima::v1::ModuleStatus> modules;
  for (const auto& backend : backends_) {
    auto described = Describe(backend);
    modules.insert(modules.end(), described.begin(), described.end());
  }
  auto now = std::chrono::steady_clock::now();
  common::ProcessUsage usage = common::ReadProcessUsage();
  std::vector<Listener> listeners;
  {
    std::lock_guard lock(mu_);
    modules.insert(modules.begin(), RouterModule(now));
    std::vector<anima::v1::ModuleStatus> own;
    AddQueueModules(&own);
    if (memory_ != nullptr) own.push_back(MemoryModule());
    modules.insert(modules.begin() + 1, own.begin(), own.end());
    double seconds = last_poll_ == std::chrono::steady_clock::time_point{}
                         ? 0
                         : std::chrono::duration<double>(now - last_poll_).count();
    if (seconds > 0) cpu_percent_ = 100.0 * (usage.cpu_seconds - last_cpu_seconds_) / seconds;
    last_cpu_seconds_ = usage.cpu_seconds;
    rss_bytes_ = usage.rss_bytes;
    last_poll_ = now;
    modules_ = std::move(modules);
    for (const auto& [id, l] : listeners_) listeners.push_back(l);
  }
  if (!listeners.empty()) {
    auto state = Snapshot(-1);
    for (const auto& l : listeners) l(state);
  }
}

anima::v1::ConsciousnessState StatePoller::Snapshot(int64_t connections) {
  anima::v1::ConsciousnessState state;
  std::lock_guard lock(mu_);
  state.set_ts(common::Rfc3339Now());
  double harmony = Harmony(modules_);
  state.set_harmony(harmony);
  state.set_status(HarmonyStatus(harmony, !modules_.empty()));
  for (const auto& m : modules_) *state.add_modules() = m;
  auto* load = state.mutable_load();
  load->set_connections(connections < 0 ? 0 : connections);
  PriorityScheduler::Stats stats;
  if (scheduler_ != nullptr) stats = scheduler_->stats();
  for (Priority p : {Priority::kHigh, Priority::kNormal, Priority::kLow}) {
    (*load->mutable_queue_depth())[PriorityName(p)] =
        static_cast<int64_t>(stats.queue_depth[static_cast<int>(p)]);
  }
  load->set_cpu_percent(cpu_percent_);
  load->set_rss_bytes(rss_bytes_);
  return state;
}

int StatePoller::Subscribe(Listener listener) {
  std::lock_guard lock(mu_);
  int id = next_listener_++;
  listeners_[id] = std::move(listener);
  return id;
}

void StatePoller::Unsubscribe(int id) {
  std::lock_guard lock(mu_);
  listeners_.erase(id);
}

}  // namespace anima::router
