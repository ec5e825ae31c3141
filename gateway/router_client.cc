#include "gateway/router_client.h"

#include <chrono>
#include <vector>

#include "services/common/grpc_server.h"

namespace anima::gateway {

// One call. Keeps itself alive (self_) from StartCall until OnDone; holders of the returned
// shared_ptr may keep it longer, to cancel it without racing its end.
class RouterClient::Reactor final : public grpc::ClientReadReactor<anima::v1::Event>,
                                    public DispatchCall,
                                    public std::enable_shared_from_this<Reactor> {
 public:
  Reactor(RouterClient* client, anima::v1::Envelope envelope, DispatchCallbacks callbacks)
      : client_(client), envelope_(std::move(envelope)), callbacks_(std::move(callbacks)) {}

  void Start(const common::Identity& identity) {
    self_ = shared_from_this();
    context_.AddMetadata(common::kRequestIdKey, envelope_.request_id());
    common::AttachIdentity(identity, &context_);
    if (envelope_.timeout_ms() > 0) {
      context_.set_deadline(std::chrono::system_clock::now() +
                            std::chrono::milliseconds(envelope_.timeout_ms()));
    }
    client_->stub_->async()->Dispatch(&context_, &envelope_, this);
    StartRead(&event_);
    StartCall();
  }

  void Cancel() override { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    callbacks_.on_event(std::move(event_));
    event_.Clear();
    StartRead(&event_);
  }

  void OnDone(const grpc::Status& status) override {
    callbacks_.on_done(status);
    callbacks_ = {};  // drops whatever the callbacks captured (the session)
    client_->Unregister(this);
    self_.reset();  // may destroy this
  }

 private:
  RouterClient* client_;
  grpc::ClientContext context_;
  anima::v1::Envelope envelope_;
  anima::v1::Event event_;
  DispatchCallbacks callbacks_;
  std::shared_ptr<Reactor> self_;
};

struct RouterClient::UnaryCall {
  grpc::ClientContext context;
  anima::v1::ListModelsRequest request;
  anima::v1::ListModelsResponse response;
};

RouterClient::RouterClient(std::shared_ptr<grpc::ChannelInterface> channel)
    : stub_(anima::v1::Router::NewStub(std::move(channel))) {}

RouterClient::~RouterClient() { CancelAllAndWait(); }

std::shared_ptr<DispatchCall> RouterClient::Dispatch(anima::v1::Envelope envelope,
                                                     const common::Identity& identity,
                                                     DispatchCallbacks callbacks) {
  auto call = std::make_shared<Reactor>(this, std::move(envelope), std::move(callbacks));
  Register(call);
  call->Start(identity);
  return call;
}

void RouterClient::ListModels(
    std::function<void(const grpc::Status&, anima::v1::ListModelsResponse)> done) {
  auto call = std::make_shared<UnaryCall>();
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  {
    std::lock_guard<std::mutex> lock(mu_);
    unary_.emplace(call.get(), call);
  }
  UnaryCall* raw = call.get();
  stub_->async()->ListModels(&raw->context, &raw->request, &raw->response,
                             [this, raw, done = std::move(done)](grpc::Status status) {
                               done(status, std::move(raw->response));
                               std::lock_guard<std::mutex> lock(mu_);
                               unary_.erase(raw);  // destroys the call
                               if (live_.empty() && unary_.empty()) idle_.notify_all();
                             });
}

void RouterClient::Register(const std::shared_ptr<Reactor>& call) {
  std::lock_guard<std::mutex> lock(mu_);
  live_.emplace(call.get(), call);
}

void RouterClient::Unregister(Reactor* call) {
  std::lock_guard<std::mutex> lock(mu_);
  live_.erase(call);
  if (live_.empty() && unary_.empty()) idle_.notify_all();
}

void RouterClient::CancelAllAndWait() {
  std::vector<std::shared_ptr<Reactor>> calls;
  std::vector<std::shared_ptr<UnaryCall>> unary;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [ptr, weak] : live_) {
      if (auto call = weak.lock()) calls.push_back(std::move(call));
    }
    for (auto& [ptr, call] : unary_) unary.push_back(call);
  }
  // Outside the lock: gRPC may run OnDone, which takes it, before TryCancel returns.
  for (auto& call : calls) call->Cancel();
  for (auto& call : unary) call->context.TryCancel();
  calls.clear();
  unary.clear();
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return live_.empty() && unary_.empty(); });
}

}  // namespace anima::gateway
