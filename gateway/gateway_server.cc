#include "gateway/gateway_server.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "boost/asio.hpp"
#include "gateway/ws_session.h"
#include "services/common/grpc_server.h"
#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace net = boost::asio;

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Start(
    GatewaySettings settings, prometheus::Registry& registry) {
  boost::system::error_code ec;
  auto address = net::ip::make_address(settings.bind, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--bind: bad address ", settings.bind));

  std::unique_ptr<GatewayServer> server(new GatewayServer());
  server->metrics_ = std::make_unique<GatewayMetrics>(registry);
  if (settings.metrics_per_principal) server->metrics_->EnablePrincipalLabels();
  server->router_ = std::make_unique<RouterClient>(common::MakeChannel(settings.router, &registry));
  Admission::Options admission;
  admission.enabled = settings.admission;
  admission.limit = settings.admission_limit;
  admission.high_tolerance = settings.admission_high_tolerance;
  admission.queue_target = settings.admission_queue_target;
  admission.max_queue_wait = settings.admission_max_queue_wait;
  server->admission_ = std::make_unique<Admission>(admission, server->metrics_.get());
  // Its own channel, without the metrics interceptor: probes are not traffic.
  server->readiness_ =
      std::make_unique<ReadinessProbe>(common::MakeChannel(settings.router, nullptr),
                                       settings.readiness_interval, server->admission_.get());
  server->state_watcher_ = std::make_unique<StateWatcher>(
      common::MakeChannel(settings.router, nullptr), settings.state_interval);
  server->context_ = std::make_unique<GatewayContext>(std::move(settings));
  GatewayContext& context = *server->context_;
  context.metrics = server->metrics_.get();
  context.router = server->router_.get();
  context.readiness = server->readiness_.get();
  context.admission = server->admission_.get();
  server->modules_ = std::make_unique<GatewayModules>(GatewayModules::Sources{
      .context = &context,
      .admission = context.settings.admission ? server->admission_.get() : nullptr,
      .state_stream_live = [watcher = server->state_watcher_.get()] { return watcher->Live(); }});
  context.modules = server->modules_.get();

  int threads = std::max(1, context.settings.threads);
  server->ioc_ = std::make_unique<net::io_context>(threads);
  server->listener_ = std::make_shared<Listener>(*server->ioc_, context);
  auto status = server->listener_->Listen(
      net::ip::tcp::endpoint(address, static_cast<unsigned short>(context.settings.port)));
  if (!status.ok()) {
    server->stopped_ = true;  // nothing started that Shutdown would stop
    return status;
  }
  server->listener_->Run();
  server->broadcast_timer_ = std::make_unique<net::steady_timer>(net::make_strand(*server->ioc_));
  server->batch_timer_ =
      std::make_unique<net::steady_timer>(server->broadcast_timer_->get_executor());
  server->ScheduleBroadcast();
  server->admission_timer_ = std::make_unique<net::steady_timer>(net::make_strand(*server->ioc_));
  server->ScheduleAdmissionTick();
  for (int i = 0; i < threads; ++i) {
    server->threads_.emplace_back([ioc = server->ioc_.get()] {
      // A handler that throws is a bug; log it and keep serving the other connections.
      for (;;) {
        try {
          ioc->run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("io thread: uncaught exception: {}", e.what());
        }
      }
    });
  }
  return server;
}

GatewayServer::~GatewayServer() { Shutdown(); }

void GatewayServer::ScheduleBroadcast() {
  broadcast_timer_->expires_after(context_->settings.state_interval);
  broadcast_timer_->async_wait([this](boost::system::error_code ec) {
    if (ec || context_->draining.load()) return;
    BroadcastState();
    ScheduleBroadcast();
  });
}

void GatewayServer::ScheduleAdmissionTick() {
  admission_timer_->expires_after(std::chrono::milliseconds(100));
  admission_timer_->async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    admission_->Tick();
    ScheduleAdmissionTick();
  });
}

void GatewayServer::BroadcastState() {
  auto state = state_watcher_->Latest();
  if (!state) return;  // no live WatchState stream: nothing current to tell
  anima::v1::Event event;
  *event.mutable_consciousness_state() = std::move(*state);
  event.mutable_consciousness_state()->mutable_load()->set_connections(
      context_->open_connections.load());
  modules_->AddTo(*event.mutable_consciousness_state());
  batch_frame_ = std::make_shared<const std::string>(FrameTranslator::Render(event, "").text);
  batch_timer_->cancel();  // a broadcast still going out gives way to the newer state
  batch_sessions_ = context_->sessions.Snapshot();
  modules_->NoteBroadcast(batch_sessions_.size());
  batch_next_ = 0;
  BroadcastBatch();
}

void GatewayServer::BroadcastBatch() {
  // Each session's write holds about a kilobyte until it completes; batches a few milliseconds
  // apart keep that from adding up over every connection at once.
  constexpr size_t kBatch = 256;
  constexpr auto kGap = std::chrono::milliseconds(2);
  size_t end = std::min(batch_sessions_.size(), batch_next_ + kBatch);
  for (; batch_next_ < end; ++batch_next_) batch_sessions_[batch_next_]->Broadcast(batch_frame_);
  if (batch_next_ == batch_sessions_.size()) {
    batch_sessions_.clear();  // sessions are not kept alive between broadcasts
    batch_frame_.reset();
    return;
  }
  batch_timer_->expires_after(kGap);
  batch_timer_->async_wait([this](boost::system::error_code ec) {
    if (!ec) BroadcastBatch();
  });
}

void GatewayServer::Shutdown() {
  if (stopped_) return;
  stopped_ = true;
  context_->draining.store(true);
  listener_->Stop();
  net::post(broadcast_timer_->get_executor(), [this] {
    broadcast_timer_->cancel();
    batch_timer_->cancel();
    batch_sessions_.clear();
  });
  // The admission tick keeps running through the drain: held requests still need their slots.
  auto drain_deadline = std::chrono::steady_clock::now() + context_->settings.drain_timeout;
  auto waited_for = [this] {
    return context_->in_flight.load() - context_->in_flight_resumable.load();
  };
  if (waited_for() > 0) {
    spdlog::info("draining: waiting up to {} ms for {} requests in flight",
                 context_->settings.drain_timeout.count(), waited_for());
  }
  while (waited_for() > 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto sessions = context_->sessions.Snapshot();
  spdlog::info(
      "shutting down: {} requests still in flight answered unavailable, closing {} "
      "connections with 1001",
      context_->in_flight.load(), sessions.size());
  for (auto& session : sessions) session->Close(boost::beast::websocket::close_code::going_away);
  sessions.clear();
  auto deadline = std::chrono::steady_clock::now() + context_->settings.shutdown_grace;
  while (context_->sessions.size() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ioc_->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Calls still open post their last events to the stopped io_context, which must outlive
  // them; destroying it then releases the sessions those handlers hold.
  router_->CancelAllAndWait();
  // Quota answers still on their way post to the io_context too.
  context_->quotas->Quiesce();
  listener_.reset();
  batch_timer_.reset();
  broadcast_timer_.reset();
  admission_timer_.reset();
  ioc_.reset();
  state_watcher_.reset();
}

}  // namespace anima::gateway
