// The remote sandbox: each attempt on an anima-sandbox-runner, over gRPC.
#include "services/self_coding/remote_sandbox.h"

#include <grpcpp/grpcpp.h>

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "anima/v1/sandbox_runner.grpc.pb.h"
#include "services/common/identity.h"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {
namespace {

using anima::v1::SandboxRunner;

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

// A workspace that lives on a runner: what the service writes is checked here against the same
// rules as a local workspace and kept until the first command sends it in one PutWorkspace.
class RemoteWorkspace : public Workspace {
 public:
  RemoteWorkspace(std::unique_ptr<RunnerLease> lease, WorkspaceLimits limits)
      : Workspace(-1, -1, limits),
        lease_(std::move(lease)),
        stub_(SandboxRunner::NewStub(lease_->channel())) {}

  ~RemoteWorkspace() override {
    // The runner deletes the workspace (and a pod's or bubblewrap's runner exits); the lease,
    // destroyed next, gives the runner back whatever the answer.
    grpc::ClientContext context;
    Authorize(context, std::chrono::seconds(5));
    anima::v1::ReleaseResponse response;
    grpc::Status s = stub_->Release(&context, {}, &response);
    if (!s.ok()) {
      spdlog::debug("sandbox: release of {}: {}", lease_->describe(), s.error_message());
    }
  }

  absl::Status WriteFile(std::string_view path_view, std::string_view content) override {
    const std::string path(path_view);
    if (std::string reason = UnsafePathReason(path); !reason.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("refused to write \"", path, "\": ", reason));
    }
    if (sent_) return absl::FailedPreconditionError("the workspace was already sent to the runner");
    if (bytes_ + static_cast<int64_t>(content.size()) > limits().max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the files are too large for the workspace (", bytes_ + content.size(),
                       " bytes with ", path, ", at most ", limits().max_bytes, ")"));
    }
    if (files_.contains(path) || dirs_.contains(path)) {
      return absl::FailedPreconditionError(absl::StrCat("create ", path, ": File exists"));
    }
    // Directories count against the file limit, as they do on disk.
    std::vector<std::string> new_dirs;
    std::string prefix;
    std::vector<std::string> parts = absl::StrSplit(path, '/');
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      prefix += (i ? "/" : "") + parts[i];
      if (files_.contains(prefix)) {
        return absl::FailedPreconditionError(
            absl::StrCat("open the directory of ", path, ": Not a directory"));
      }
      if (!dirs_.contains(prefix)) new_dirs.push_back(prefix);
    }
    if (static_cast<int>(files_.size() + dirs_.size() + new_dirs.size()) + 1 > limits().max_files) {
      return absl::ResourceExhaustedError(absl::StrCat("too many files for the workspace (at most ",
                                                       limits().max_files,
                                                       " files and directories)"));
    }
    dirs_.insert(new_dirs.begin(), new_dirs.end());
    files_.emplace(path, std::string(content));
    bytes_ += static_cast<int64_t>(content.size());
    return absl::OkStatus();
  }

  // What the service wrote (the runner's copy, which the commands may have changed, stays there).
  absl::StatusOr<std::string> ReadFile(std::string_view path, size_t max_bytes) const override {
    auto it = files_.find(std::string(path));
    if (it == files_.end()) {
      return absl::NotFoundError(absl::StrCat(std::string(path), " was not written"));
    }
    if (it->second.size() > max_bytes) return absl::OutOfRangeError("the file is too large");
    return it->second;
  }

  // Sends the files once, before the first command.
  absl::Status EnsureSent(std::chrono::milliseconds timeout) {
    if (sent_) return absl::OkStatus();
    anima::v1::PutWorkspaceRequest request;
    request.set_max_bytes(limits().max_bytes);
    request.set_max_files(limits().max_files);
    for (const auto& [path, content] : files_) {
      auto* f = request.add_files();
      f->set_path(path);
      f->set_content(content);
    }
    grpc::ClientContext context;
    Authorize(context, timeout);
    anima::v1::PutWorkspaceResponse response;
    grpc::Status s = stub_->PutWorkspace(&context, request, &response);
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return FromGrpc(s, "the runner (" + lease_->describe() + ") went away before the workspace");
    }
    if (!s.ok()) {
      return FromGrpc(s, "the runner refused the workspace (" + lease_->describe() + ")");
    }
    sent_ = true;
    return absl::OkStatus();
  }

  void Authorize(grpc::ClientContext& context, std::chrono::milliseconds timeout) const {
    context.AddMetadata("authorization", "Bearer " + lease_->secret());
    context.set_deadline(std::chrono::system_clock::now() + timeout);
  }

  SandboxRunner::Stub& stub() { return *stub_; }
  const RunnerLease& lease() const { return *lease_; }

 private:
  std::unique_ptr<RunnerLease> lease_;
  std::unique_ptr<SandboxRunner::Stub> stub_;
  std::map<std::string, std::string> files_;
  std::set<std::string> dirs_;
  int64_t bytes_ = 0;
  bool sent_ = false;
};

class RemoteSandbox : public Sandbox {
 public:
  RemoteSandbox(std::unique_ptr<RunnerProvider> provider, RemoteSandboxOptions options)
      : provider_(std::move(provider)), options_(options) {}

  absl::Status Available() const override { return provider_->Available(); }
  std::string Degraded() const override { return provider_->Degraded(); }
  std::string name() const override { return "runner/" + provider_->name(); }
  // Each session's directory on its runner; relative paths are what callers use.
  std::string workspace_mount() const override { return ""; }

  absl::StatusOr<std::unique_ptr<Workspace>> CreateWorkspace(
      const std::string& /*parent_dir*/, const std::string& /*name*/, const WorkspaceLimits& limits,
      const AttemptContext& context) override {
    if (limits.max_bytes < 4096 || limits.max_files < 1) {
      return absl::InvalidArgumentError("workspace limits must allow at least 4 KiB and one file");
    }
    auto lease = provider_->Acquire(limits, context);
    if (!lease.ok()) return lease.status();
    if ((*lease)->needs_bind()) {
      auto stub = SandboxRunner::NewStub((*lease)->channel());
      grpc::ClientContext call;
      call.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
      // A runner that is Ready has its port open; the first call may still race its start.
      call.set_wait_for_ready(true);
      anima::v1::BindRequest request;
      request.set_secret((*lease)->secret());
      anima::v1::BindResponse response;
      grpc::Status s = stub->Bind(&call, request, &response);
      if (!s.ok()) {
        // PERMISSION_DENIED: someone bound it first. Nothing of ours reached it; say so loudly.
        if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
          spdlog::error("sandbox: {} was already bound by another caller; not used",
                        (*lease)->describe());
        }
        return FromGrpc(s, "cannot bind the runner (" + (*lease)->describe() + ")");
      }
    }
    return std::make_unique<RemoteWorkspace>(*std::move(lease), limits);
  }

  absl::StatusOr<SandboxResult> Run(const SandboxCommand& command, Workspace& workspace,
                                    CancelToken* cancel) override {
    if (command.argv.empty()) return absl::InvalidArgumentError("empty command");
    if (command.connection_fd >= 0 || !command.program.empty()) {
      return absl::InvalidArgumentError("a remote runner runs only commands found in its PATH");
    }
    auto* remote = dynamic_cast<RemoteWorkspace*>(&workspace);
    if (remote == nullptr) return absl::InvalidArgumentError("not a remote workspace");
    if (auto s = remote->EnsureSent(options_.call_timeout); !s.ok()) return s;

    anima::v1::RunCommandRequest request;
    for (const auto& arg : command.argv) request.add_argv(arg);
    const SandboxLimits& lim = command.limits;
    auto* limits = request.mutable_limits();
    limits->set_cpu_seconds(lim.cpu_seconds);
    limits->set_memory_bytes(lim.memory_bytes);
    limits->set_max_processes(lim.max_processes);
    limits->set_file_size_bytes(lim.file_size_bytes);
    limits->set_output_bytes(lim.output_bytes);
    limits->set_wall_time_ms(lim.wall_time.count());
    request.set_input(command.input);
    request.set_report(command.report);

    grpc::ClientContext context;
    remote->Authorize(context, lim.wall_time + options_.run_grace);
    int cancel_id = -1;
    if (cancel != nullptr) cancel_id = cancel->OnCancel([&context] { context.TryCancel(); });
    auto reader = remote->stub().Run(&context, request);
    SandboxResult result;
    bool got_result = false;
    anima::v1::RunCommandEvent event;
    while (reader->Read(&event)) {
      if (event.has_result()) {
        const auto& r = event.result();
        result.exit_code = r.exit_code();
        result.signal = r.signal();
        result.report = r.report().substr(0, kReportBytes);
        result.reason = r.reason();
        result.cancelled = r.cancelled();
        got_result = true;
      } else if (!got_result) {
        // The runner caps output; this side holds it to the same limit whatever it sends.
        const std::string& piece = event.output();
        size_t room = static_cast<size_t>(
            std::max<int64_t>(lim.output_bytes - static_cast<int64_t>(result.output.size()), 0));
        result.output.append(piece, 0, std::min(room, piece.size()));
        if (command.on_output) command.on_output(piece);
      }
    }
    grpc::Status s = reader->Finish();
    if (cancel != nullptr) cancel->Remove(cancel_id);
    if (cancel != nullptr && cancel->cancelled()) {
      result.cancelled = true;
      result.reason = "cancelled";
      return result;
    }
    if (!s.ok() || !got_result) {
      if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        return absl::DeadlineExceededError(absl::StrCat(
            "the runner (", remote->lease().describe(), ") did not answer within the wall time (",
            lim.wall_time.count() / 1000.0, " s) and its grace"));
      }
      return absl::UnavailableError(
          absl::StrCat("the runner (", remote->lease().describe(), ") went away mid-command: ",
                       s.ok() ? "the stream ended without a result" : s.error_message()));
    }
    return result;
  }

 private:
  std::unique_ptr<RunnerProvider> provider_;
  RemoteSandboxOptions options_;
};

}  // namespace

std::string NewRunnerSecret() { return common::RandomHex(32); }

std::unique_ptr<Sandbox> MakeRemoteSandbox(std::unique_ptr<RunnerProvider> provider,
                                           RemoteSandboxOptions options) {
  return std::make_unique<RemoteSandbox>(std::move(provider), options);
}

}  // namespace anima::selfcoding
