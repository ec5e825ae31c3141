#pragma once

#include <string>

#include "anima/v1/introspection.grpc.pb.h"
#include "anima/v1/self_coding.grpc.pb.h"
#include "services/self_coding/blocking_executor.h"
#include "services/self_coding/job_manager.h"
#include "services/self_coding/sandbox_setup.h"

namespace anima::selfcoding {

// anima.v1.SelfCoding over a JobManager: translates proto and status at the RPC edge. Every RPC
// acts for common::IdentityOf(context), which the manager holds to job ownership and quotas; a
// refusal's BrokerFailure goes out as the status's binary error details. Watch and Run end with
// the result event and then OK; a client that goes away just ends its stream (the job goes on).
//
// The manager's calls may wait on the job store's network: every one of them runs on
// `executor`, never on a gRPC callback thread, and finishes the reactor from there. A full
// executor answers UNAVAILABLE at once.
class SelfCodingService : public anima::v1::SelfCoding::CallbackService {
 public:
  SelfCodingService(JobManager* manager, BlockingExecutor* executor)
      : manager_(manager), executor_(executor) {}

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* context,
                                   const anima::v1::SubmitRequest* request,
                                   anima::v1::SubmitResponse* response) override;
  grpc::ServerWriteReactor<anima::v1::JobEvent>* Watch(
      grpc::CallbackServerContext* context, const anima::v1::WatchRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context,
                                   const anima::v1::CancelRequest* request,
                                   anima::v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const anima::v1::GetJobRequest* request,
                                anima::v1::Job* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const anima::v1::ListJobsRequest* request,
                                 anima::v1::ListJobsResponse* response) override;
  grpc::ServerWriteReactor<anima::v1::JobEvent>* Run(
      grpc::CallbackServerContext* context, const anima::v1::SubmitRequest* request) override;

 private:
  JobManager* manager_;
  BlockingExecutor* executor_;
};

// anima.v1.Introspection for this service: the service, its job store, its sandbox, its queue.
// Describe runs on `executor` (the queue depth is read from the store).
class SelfCodingIntrospection : public anima::v1::Introspection::CallbackService {
 public:
  // `canary` (optional) is the start-up canary job whose outcome the sandbox module reports.
  SelfCodingIntrospection(JobManager* manager, BlockingExecutor* executor,
                          const SandboxCanary* canary = nullptr)
      : manager_(manager), executor_(executor), canary_(canary) {}
  // May block on the job store: call it from a worker thread.
  anima::v1::DescribeResponse Snapshot();
  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* context,
                                     const anima::v1::DescribeRequest* request,
                                     anima::v1::DescribeResponse* response) override;

 private:
  JobManager* manager_;
  BlockingExecutor* executor_;
  const SandboxCanary* canary_;
};

// The proto view of a stored job.
anima::v1::Job ToProto(const JobRecord& record);

}  // namespace anima::selfcoding
