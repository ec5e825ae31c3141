#include "tests/integration/gateway/fake_router.h"

#include <condition_variable>
#include <thread>
#include <vector>

#include "grpcpp/health_check_service_interface.h"

namespace anima::gateway::testing {

namespace {

grpc::StatusCode CodeByName(const std::string& name) {
  static const std::pair<const char*, grpc::StatusCode> kCodes[] = {
      {"UNAVAILABLE", grpc::StatusCode::UNAVAILABLE},
      {"DEADLINE_EXCEEDED", grpc::StatusCode::DEADLINE_EXCEEDED},
      {"INTERNAL", grpc::StatusCode::INTERNAL},
      {"RESOURCE_EXHAUSTED", grpc::StatusCode::RESOURCE_EXHAUSTED},
      {"OK", grpc::StatusCode::OK}};
  for (const auto& [n, c] : kCodes) {
    if (name == n) return c;
  }
  return grpc::StatusCode::UNKNOWN;
}

std::vector<anima::v1::Event> AnswerFor(const anima::v1::Envelope& e) {
  std::vector<anima::v1::Event> out;
  if (e.has_chat()) {
    if (e.chat().stream()) {
      out.emplace_back().mutable_chat_delta()->set_delta("Hel");
      auto* d = out.emplace_back().mutable_chat_delta();
      d->set_delta("lo!");
      d->set_index(0);
    }
    auto* r = out.emplace_back().mutable_chat_response();
    r->set_conversation_id(e.chat().conversation_id());
    const std::string& m = e.chat().message();
    r->set_message(m.rfind("big:", 0) == 0 ? std::string(std::stoul(m.substr(4)), 'x')
                                           : "echo: " + m);
    r->set_provider("fake");
    r->set_model("fake-1");
    r->set_finish_reason("stop");
    r->mutable_usage()->set_prompt_tokens(3);
    r->mutable_usage()->set_completion_tokens(2);
    r->mutable_usage()->set_total_tokens(5);
    r->set_latency_ms(1);
    if (m.rfind("cost:", 0) == 0) {  // cost:<tokens>:<usd>: what every candidate together cost
      auto colon = m.find(':', 5);
      r->mutable_billed_usage()->set_total_tokens(std::stoll(m.substr(5, colon - 5)));
      r->set_cost_usd(std::stod(m.substr(colon + 1)));
    }
  } else if (e.has_consciousness_query()) {
    auto* s = out.emplace_back().mutable_consciousness_state();
    s->set_ts("2026-11-25T10:00:00.000Z");
    s->set_harmony(1.0);
    s->set_status("healthy");
    auto* m = s->add_modules();
    m->set_name("router");
    m->set_service("router");
    m->set_kind("service");
    m->set_health(anima::v1::MODULE_HEALTH_HEALTHY);
    s->mutable_load()->set_connections(1);
  } else if (e.has_self_coding()) {
    out.emplace_back().mutable_self_coding_accepted()->set_job_id("job-1");
    auto* p = out.emplace_back().mutable_self_coding_progress();
    p->set_job_id("job-1");
    p->set_seq(1);
    p->set_stage("queued");
    auto* r = out.emplace_back().mutable_self_coding_result();
    r->set_job_id("job-1");
    r->set_status("succeeded");
    r->set_attempts(1);
  } else if (e.has_raw_json() && e.type() != "weather" && e.type() != "low_work") {
    // As the real router does for a type no module handles.
    auto* err = out.emplace_back().mutable_error();
    err->set_code("unknown_type");
    err->set_message("no module handles messages of type \"" + e.type() + "\"");
  } else if (e.has_raw_json()) {
    out.emplace_back().set_raw_json("{\"type\":\"" + e.type() +
                                    "_result\",\"echo\":" + e.raw_json() + "}");
  }
  return out;
}

}  // namespace

// Writes its events one at a time, then finishes; a hanging call finishes only when cancelled.
class FakeDispatch final : public grpc::ServerWriteReactor<anima::v1::Event> {
 public:
  FakeDispatch(FakeRouter* owner, std::vector<anima::v1::Event> events, grpc::Status final,
               bool hang, std::chrono::milliseconds delay = std::chrono::milliseconds(0))
      : owner_(owner), events_(std::move(events)), final_(std::move(final)), hang_(hang) {
    if (delay.count() == 0) {
      NextWrite();
      return;
    }
    // The call cannot end before the first write starts, so `this` outlives the sleep.
    std::thread([this, delay] {
      std::this_thread::sleep_for(delay);
      NextWrite();
    }).detach();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    NextWrite();
  }

  void OnCancel() override {
    owner_->cancelled_++;
    if (hang_) FinishOnce(grpc::Status::CANCELLED);
  }

  void OnDone() override { delete this; }

 private:
  void NextWrite() {
    if (next_ < events_.size()) {
      StartWrite(&events_[next_++]);
    } else if (!hang_) {
      FinishOnce(final_);
    }
  }
  void FinishOnce(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  FakeRouter* owner_;
  std::vector<anima::v1::Event> events_;
  size_t next_ = 0;
  grpc::Status final_;
  bool hang_;
  std::mutex mu_;
  bool finished_ = false;
};

// One WatchState stream: a thread writes a state, waits for the write, waits the interval.
class FakeWatch final : public grpc::ServerWriteReactor<anima::v1::ConsciousnessState> {
 public:
  explicit FakeWatch(std::chrono::milliseconds interval)
      : interval_(interval), thread_([this] { Run(); }) {}

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    write_done_ = true;
    if (!ok) stop_ = true;
    cv_.notify_all();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  void OnDone() override {
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
    delete this;
  }

 private:
  void Run() {
    for (int n = 1;; ++n) {
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_) break;
      state_.Clear();
      state_.set_ts("2026-11-25T10:00:" + std::to_string(n % 60) + ".000Z");
      state_.set_harmony(1.0);
      state_.set_status("healthy");
      state_.mutable_load()->set_connections(999);
      write_done_ = false;
      lock.unlock();
      StartWrite(&state_);
      lock.lock();
      cv_.wait(lock, [this] { return write_done_; });
      if (cv_.wait_for(lock, interval_, [this] { return stop_; })) break;
    }
    Finish(grpc::Status::OK);  // the last use of `this` on this thread
  }

  std::chrono::milliseconds interval_;
  anima::v1::ConsciousnessState state_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool write_done_ = false;
  bool stop_ = false;
  std::thread thread_;
};

std::unique_ptr<FakeRouter> FakeRouter::Start(int port) {
  grpc::EnableDefaultHealthCheckService(true);
  std::unique_ptr<FakeRouter> router(new FakeRouter());
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &router->port_);
  builder.RegisterService(router.get());
  router->server_ = builder.BuildAndStart();
  if (router->server_ == nullptr || router->port_ == 0) return nullptr;
  return router;
}

FakeRouter::~FakeRouter() { Stop(); }

void FakeRouter::Stop() {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
}

std::string FakeRouter::last_request_id() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_request_id_;
}

common::Identity FakeRouter::last_identity() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_identity_;
}

anima::v1::Envelope FakeRouter::last_envelope() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_envelope_;
}

grpc::ServerWriteReactor<anima::v1::Event>* FakeRouter::Dispatch(
    grpc::CallbackServerContext* context, const anima::v1::Envelope* request) {
  dispatched_++;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = context->client_metadata().find("x-request-id");
    last_request_id_ = it == context->client_metadata().end()
                           ? ""
                           : std::string(it->second.data(), it->second.size());
    last_identity_ = common::IdentityOf(*context);
    last_envelope_ = *request;
    dispatched_ids_.push_back(request->client_id());
  }
  if (request->type() == "low_work" &&
      request->raw_json().find("\"hang\":true") != std::string::npos) {
    return new FakeDispatch(this, {}, grpc::Status::OK, /*hang=*/true);
  }
  // A watch of a job that runs for ever: a stream that only ends when cancelled.
  if (request->has_self_coding_watch() && request->self_coding_watch().job_id() == "job-hang") {
    return new FakeDispatch(this, {}, grpc::Status::OK, /*hang=*/true);
  }
  if (request->has_chat()) {
    const std::string& m = request->chat().message();
    if (m == "hang") return new FakeDispatch(this, {}, grpc::Status::OK, /*hang=*/true);
    if (m.rfind("slow:", 0) == 0) {
      return new FakeDispatch(this, AnswerFor(*request), grpc::Status::OK, false,
                              std::chrono::milliseconds(std::stoi(m.substr(5))));
    }
    if (m.rfind("error:", 0) == 0) {
      std::vector<anima::v1::Event> events;
      if (request->chat().stream()) events.emplace_back().mutable_chat_delta()->set_delta("Hel");
      auto* error = events.emplace_back().mutable_error();
      error->set_code(m.substr(6));
      error->set_message("fake " + m.substr(6));
      if (m.substr(6) == "overloaded" || m.substr(6) == "rate_limited") {
        error->set_retry_after_ms(1500);
      }
      if (m.substr(6) == "provider_error") {
        auto* cause = error->add_causes();
        cause->set_provider("fake");
        cause->set_code("http_500");
        cause->set_message("upstream broke");
      }
      return new FakeDispatch(this, std::move(events), grpc::Status::OK, false);
    }
    if (m.rfind("fail:", 0) == 0) {
      return new FakeDispatch(this, {}, grpc::Status(CodeByName(m.substr(5)), "fake failure"),
                              false);
    }
  }
  return new FakeDispatch(this, AnswerFor(*request), grpc::Status::OK, false);
}

std::vector<std::string> FakeRouter::dispatched_ids() {
  std::lock_guard<std::mutex> lock(mu_);
  return dispatched_ids_;
}

grpc::ServerUnaryReactor* FakeRouter::ListRoutes(grpc::CallbackServerContext* context,
                                                 const anima::v1::ListRoutesRequest*,
                                                 anima::v1::ListRoutesResponse* response) {
  routes_listed_++;
  for (auto [type, priority] : {std::pair{"chat", "high"}, std::pair{"consciousness_query", "high"},
                                std::pair{"self_coding_request", "high"},
                                std::pair{"weather", "normal"}, std::pair{"low_work", "low"}}) {
    auto* route = response->add_routes();
    route->set_type(type);
    route->set_priority(priority);
  }
  response->set_default_priority("normal");
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<anima::v1::ConsciousnessState>* FakeRouter::WatchState(
    grpc::CallbackServerContext*, const anima::v1::WatchStateRequest* request) {
  watches_++;
  return new FakeWatch(
      std::chrono::milliseconds(request->interval_ms() > 0 ? request->interval_ms() : 1000));
}

grpc::ServerUnaryReactor* FakeRouter::ListModels(grpc::CallbackServerContext* context,
                                                 const anima::v1::ListModelsRequest*,
                                                 anima::v1::ListModelsResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (fail_list_models_) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "broker down"));
    return reactor;
  }
  for (auto [provider, model] : {std::pair{"fake", "fake-1"}, std::pair{"sim", "sim-large"}}) {
    auto* m = response->add_models();
    m->set_id(std::string(provider) + "/" + model);
    m->set_provider(provider);
    m->set_model(model);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace anima::gateway::testing
