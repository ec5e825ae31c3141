#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "anima/v1/sandbox_runner.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "services/sandbox_runner/runner.h"

namespace anima::sandboxrunner {

// anima.v1.SandboxRunner over a Runner: checks the bearer secret, translates proto and status,
// and streams a command's output.
//
// The synchronous API, deliberately: every handler here blocks (a workspace written to disk, a
// command run to its end), so each would hand its work to a thread of its own under the callback
// API anyway; a sync handler already is that thread. Run's handler thread writes the output (one
// write in flight, what arrives meanwhile merged into the next message) while the command runs
// on a second thread, and between writes polls ServerContext::IsCancelled() every 20 ms: a
// client's cancel, its deadline or a dropped connection fires the command's CancelToken well
// within 100 ms. A write blocked on a slow client ends as soon as the call is cancelled.
class RunnerService final : public anima::v1::SandboxRunner::Service {
 public:
  explicit RunnerService(Runner* runner) : runner_(runner) {}

  grpc::Status Bind(grpc::ServerContext* context, const anima::v1::BindRequest* request,
                    anima::v1::BindResponse* response) override;
  grpc::Status PutWorkspace(grpc::ServerContext* context,
                            const anima::v1::PutWorkspaceRequest* request,
                            anima::v1::PutWorkspaceResponse* response) override;
  grpc::Status Run(grpc::ServerContext* context, const anima::v1::RunCommandRequest* request,
                   grpc::ServerWriter<anima::v1::RunCommandEvent>* writer) override;
  grpc::Status Release(grpc::ServerContext* context, const anima::v1::ReleaseRequest* request,
                       anima::v1::ReleaseResponse* response) override;

 private:
  // OK when the call carries `authorization: Bearer <secret>`; else UNAUTHENTICATED, logged with
  // the peer and the reason, never with what was sent.
  grpc::Status Authenticate(grpc::ServerContext* context, const char* method) const;

  Runner* runner_;
};

// The largest PutWorkspace request the ceilings allow, with room for the paths and framing.
int64_t MaxRequestBytes(const RunnerCeilings& ceilings);

struct RunnerServerOptions {
  std::string listen = "0.0.0.0:7070";  // host:port; port 0 picks a free one
  int fd = -1;  // >= 0: serve this connected socket (taken over) instead of listening
  int64_t max_receive_bytes = 4 << 20;
  // Serving an fd: called (on a thread of the server's) once the other end has closed it.
  std::function<void()> on_connection_closed;
};

// The runner's gRPC server: the service, and grpc.health.v1 (unauthenticated, for a kubelet
// probe; SERVING until Shutdown). No reflection: nothing here is for browsing.
class RunnerServer {
 public:
  static absl::StatusOr<std::unique_ptr<RunnerServer>> Start(RunnerService* service,
                                                             RunnerServerOptions options);
  ~RunnerServer();

  int port() const { return port_; }  // 0 when serving an fd
  // Marks the health NOT_SERVING, lets calls in flight finish for up to `grace`, then cancels
  // the rest.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  RunnerServer() = default;
  void WatchConnection(int fd, std::function<void()> on_closed);

  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  int wake_[2] = {-1, -1};  // a pipe that ends the connection watcher
  std::thread watcher_;
};

}  // namespace anima::sandboxrunner
