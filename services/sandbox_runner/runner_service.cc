#include "services/sandbox_runner/runner_service.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_posix.h"
#include "spdlog/spdlog.h"

namespace anima::sandboxrunner {
namespace {

using anima::v1::RunCommandEvent;

constexpr size_t kMaxOutputMessage = 64 * 1024;
constexpr std::chrono::milliseconds kCancelPoll{20};

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Output handed from the command's thread to the RPC's thread. What arrives while the RPC's
// thread is writing piles up here and goes out merged; it is bounded by the command's output
// limit, since the sandbox passes on only what it keeps.
class OutputQueue {
 public:
  void Append(std::string_view piece) {
    {
      std::lock_guard lock(mu_);
      pending_.append(piece.data(), piece.size());
    }
    cv_.notify_one();
  }
  void Close() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    cv_.notify_one();
  }
  // Waits up to `wait` for output; moves at most `max` bytes of it into `out` (empty when none
  // came). False once closed with nothing left.
  bool Take(std::string* out, size_t max, std::chrono::milliseconds wait) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, wait, [&] { return closed_ || !pending_.empty(); });
    out->clear();
    if (pending_.empty()) return !closed_;
    if (pending_.size() <= max) {
      out->swap(pending_);
    } else {
      out->assign(pending_, 0, max);
      pending_.erase(0, max);
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  bool closed_ = false;
};

selfcoding::SandboxCommand ToCommand(const anima::v1::RunCommandRequest& request) {
  selfcoding::SandboxCommand command;
  command.argv.assign(request.argv().begin(), request.argv().end());
  command.input = request.input();
  command.report = request.report();
  // Fields left at 0 stay 0: Runner::Clamp gives them the ceiling.
  const auto& l = request.limits();
  command.limits.cpu_seconds = l.cpu_seconds();
  command.limits.memory_bytes = l.memory_bytes();
  command.limits.max_processes = l.max_processes();
  command.limits.file_size_bytes = l.file_size_bytes();
  command.limits.output_bytes = l.output_bytes();
  command.limits.wall_time = std::chrono::milliseconds(l.wall_time_ms());
  return command;
}

}  // namespace

grpc::Status RunnerService::Authenticate(grpc::ServerContext* context, const char* method) const {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  std::string_view authorization;
  if (it != metadata.end()) authorization = std::string_view(it->second.data(), it->second.size());
  absl::Status s = runner_->Authenticate(authorization);
  if (s.ok()) return grpc::Status::OK;
  spdlog::warn("{} from {} refused: {}", method, context->peer(), std::string(s.message()));
  return ToGrpc(s);
}

grpc::Status RunnerService::Bind(grpc::ServerContext* context,
                                 const anima::v1::BindRequest* request,
                                 anima::v1::BindResponse* response) {
  // Not a CallScope: refused Binds (anyone may send one) must not keep a bound runner alive.
  if (absl::Status s = runner_->Bind(request->secret()); !s.ok()) {
    spdlog::warn("Bind from {} refused: {}", context->peer(), std::string(s.message()));
    return ToGrpc(s);
  }
  spdlog::info("bound by {}", context->peer());
  response->set_runner("anima-sandbox-runner " ANIMA_VERSION);
  return grpc::Status::OK;
}

grpc::Status RunnerService::PutWorkspace(grpc::ServerContext* context,
                                         const anima::v1::PutWorkspaceRequest* request,
                                         anima::v1::PutWorkspaceResponse* response) {
  if (grpc::Status s = Authenticate(context, "PutWorkspace"); !s.ok()) return s;
  Runner::CallScope call(runner_);
  std::vector<FileView> files;
  files.reserve(request->files_size());
  for (const auto& file : request->files()) files.emplace_back(file.path(), file.content());
  auto info = runner_->PutWorkspace(files, request->max_bytes(), request->max_files());
  if (!info.ok()) return ToGrpc(info.status());
  response->set_bytes(info->bytes);
  response->set_files(info->files);
  response->set_workspace(info->path);
  return grpc::Status::OK;
}

grpc::Status RunnerService::Run(grpc::ServerContext* context,
                                const anima::v1::RunCommandRequest* request,
                                grpc::ServerWriter<RunCommandEvent>* writer) {
  if (grpc::Status s = Authenticate(context, "Run"); !s.ok()) return s;
  Runner::CallScope call(runner_);
  selfcoding::SandboxCommand command = ToCommand(*request);
  OutputQueue queue;
  command.on_output = [&queue](std::string_view piece) { queue.Append(piece); };
  selfcoding::CancelToken cancel;
  absl::StatusOr<selfcoding::SandboxResult> result = absl::UnknownError("not run");
  std::thread command_thread([&] {
    result = runner_->Run(std::move(command), &cancel);
    queue.Close();
  });
  int64_t streamed = 0;
  bool write_failed = false;
  std::string chunk;
  while (queue.Take(&chunk, kMaxOutputMessage, kCancelPoll)) {
    if (!cancel.cancelled() && context->IsCancelled()) cancel.Cancel();
    if (chunk.empty() || write_failed) continue;  // after a failed write: drain until the end
    const auto size = static_cast<int64_t>(chunk.size());
    RunCommandEvent event;
    event.set_output(std::move(chunk));
    if (!writer->Write(event)) {
      write_failed = true;  // the call is over (cancelled, or the connection went)
      cancel.Cancel();
      continue;
    }
    streamed += size;
  }
  command_thread.join();
  if (!result.ok()) return ToGrpc(result.status());
  if (write_failed || context->IsCancelled()) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
  }
  RunCommandEvent last;
  auto* r = last.mutable_result();
  r->set_exit_code(result->exit_code);
  r->set_signal(result->signal);
  r->set_report(result->report);
  r->set_reason(result->reason);
  r->set_cancelled(result->cancelled);
  r->set_output_bytes(streamed);
  writer->Write(last);
  return grpc::Status::OK;
}

grpc::Status RunnerService::Release(grpc::ServerContext* context,
                                    const anima::v1::ReleaseRequest* /*request*/,
                                    anima::v1::ReleaseResponse* /*response*/) {
  if (grpc::Status s = Authenticate(context, "Release"); !s.ok()) return s;
  Runner::CallScope call(runner_);
  runner_->Release();
  return grpc::Status::OK;
}

int64_t MaxRequestBytes(const RunnerCeilings& ceilings) {
  // Each file costs its path (at most 255 bytes, UnsafePathReason) and a few bytes of framing.
  return ceilings.workspace_bytes + static_cast<int64_t>(ceilings.workspace_files) * 300 +
         (1 << 20);
}

absl::StatusOr<std::unique_ptr<RunnerServer>> RunnerServer::Start(RunnerService* service,
                                                                  RunnerServerOptions options) {
  grpc::EnableDefaultHealthCheckService(true);
  std::unique_ptr<RunnerServer> server(new RunnerServer());
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(options.max_receive_bytes, INT32_MAX)));
  if (options.fd < 0) {
    builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &server->port_);
  }
  builder.RegisterService(service);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || (options.fd < 0 && server->port_ == 0)) {
    return absl::UnavailableError(options.fd < 0
                                      ? absl::StrCat("gRPC: cannot listen on ", options.listen)
                                      : std::string("gRPC: cannot start the server"));
  }
  if (options.fd >= 0) {
    // A duplicate, for the watcher: gRPC owns `fd` from here on and closes it when it likes.
    int watched = fcntl(options.fd, F_DUPFD_CLOEXEC, 0);
    if (watched < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("fd ", options.fd, " is not open: ", strerror(errno)));
    }
    // gRPC's endpoints assume a non-blocking socket; an inherited one usually is not (a
    // socketpair's ends start blocking), and a blocking read would stall the transport.
    if (int flags = fcntl(options.fd, F_GETFL);
        flags < 0 || fcntl(options.fd, F_SETFL, flags | O_NONBLOCK) != 0) {
      close(watched);
      return absl::FailedPreconditionError(
          absl::StrCat("fd ", options.fd, ": cannot make it non-blocking: ", strerror(errno)));
    }
    grpc::AddInsecureChannelFromFd(server->server_.get(), options.fd);
    if (options.on_connection_closed) {
      server->WatchConnection(watched, std::move(options.on_connection_closed));
    } else {
      close(watched);
    }
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  return server;
}

void RunnerServer::WatchConnection(int fd, std::function<void()> on_closed) {
  if (pipe2(wake_, O_CLOEXEC) != 0) {
    close(fd);
    spdlog::warn("cannot watch the connection: {}", strerror(errno));
    return;
  }
  watcher_ = std::thread([this, fd, on_closed = std::move(on_closed)] {
    // POLLRDHUP alone: data arriving (POLLIN) is gRPC's to read and must not wake this.
    pollfd p[2] = {{fd, POLLRDHUP, 0}, {wake_[0], POLLIN, 0}};
    while (poll(p, 2, -1) < 0 && errno == EINTR) {
    }
    const bool closed = p[0].revents != 0 && p[1].revents == 0;
    close(fd);
    if (closed) on_closed();
  });
}

void RunnerServer::Shutdown(std::chrono::milliseconds grace) {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() + grace);
}

RunnerServer::~RunnerServer() {
  if (watcher_.joinable()) {
    (void)!write(wake_[1], "x", 1);
    watcher_.join();
  }
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
}

}  // namespace anima::sandboxrunner
