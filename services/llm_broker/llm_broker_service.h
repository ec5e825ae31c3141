#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "anima/v1/introspection.grpc.pb.h"
#include "anima/v1/llm_broker.grpc.pb.h"
#include "services/llm_broker/broker.h"
#include "services/llm_broker/broker_metrics.h"
#include "services/llm_broker/instrumented_provider.h"

namespace anima::broker {

// Translates a canonical outcome to the RPC status: UNAVAILABLE (provider_error),
// DEADLINE_EXCEEDED, CANCELLED, INVALID_ARGUMENT (invalid_message), INTERNAL, with a serialized
// anima.v1.BrokerFailure in error_details.
grpc::Status FailureStatus(const StrategyOutcome& outcome);

// anima.v1.LlmBroker over the callback API. Complete and StreamComplete run the request through
// the Broker; the call's deadline bounds it and the client's cancellation cancels the provider
// request (its connection is closed). StreamComplete keeps one write in flight and coalesces
// deltas that arrive meanwhile.
class LlmBrokerService final : public anima::v1::LlmBroker::CallbackService {
 public:
  LlmBrokerService(std::shared_ptr<Broker> broker, std::shared_ptr<BrokerMetrics> metrics);

  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* context,
                                     const anima::v1::CompletionRequest* request,
                                     anima::v1::CompletionResponse* response) override;
  grpc::ServerWriteReactor<anima::v1::CompletionChunk>* StreamComplete(
      grpc::CallbackServerContext* context, const anima::v1::CompletionRequest* request) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const anima::v1::ListModelsRequest* request,
                                       anima::v1::ListModelsResponse* response) override;

  int64_t in_flight() const { return in_flight_.load(); }
  int64_t requests() const { return requests_.load(); }
  int64_t failures() const { return failures_.load(); }

  // Shared by the reactors (not part of the public contract).
  Broker& broker() { return *broker_; }
  BrokerMetrics* metrics() { return metrics_.get(); }
  void RequestStarted() {
    ++in_flight_;
    ++requests_;
  }
  void RequestEnded(bool ok) {
    --in_flight_;
    if (!ok) ++failures_;
  }

 private:
  std::shared_ptr<Broker> broker_;
  std::shared_ptr<BrokerMetrics> metrics_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> requests_{0};
  std::atomic<int64_t> failures_{0};
};

// anima.v1.Introspection: the module "llm-broker" (the service) and "llm-broker/<provider>" for
// each provider, with health from its recent outcomes.
class BrokerIntrospectionService final : public anima::v1::Introspection::CallbackService {
 public:
  BrokerIntrospectionService(const LlmBrokerService* service,
                             std::vector<std::shared_ptr<InstrumentedProvider>> providers);

  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* context,
                                     const anima::v1::DescribeRequest* request,
                                     anima::v1::DescribeResponse* response) override;

  anima::v1::DescribeResponse Snapshot() const;

 private:
  const LlmBrokerService* service_;
  std::vector<std::shared_ptr<InstrumentedProvider>> providers_;
};

}  // namespace anima::broker
