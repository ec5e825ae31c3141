#pragma once

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "anima/v1/sandbox_runner.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace anima::sandboxrunner::testing {

inline constexpr char kSecret[] = "0123456789abcdef0123456789abcdef-s3cret";

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/anima-runner-test-XXXXXX";
    path_ = mkdtemp(name) != nullptr ? name : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Polls `condition` every 10 ms for up to `timeout`.
inline bool Eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

// A client of one runner, as the self-coding service's would be.
class RunnerClient {
 public:
  explicit RunnerClient(std::shared_ptr<grpc::Channel> channel)
      : stub_(anima::v1::SandboxRunner::NewStub(std::move(channel))) {}

  // The context of a call carrying `secret` (none when empty).
  static void Authorize(grpc::ClientContext& context, const std::string& secret) {
    if (!secret.empty()) context.AddMetadata("authorization", "Bearer " + secret);
  }

  grpc::Status Bind(const std::string& secret, anima::v1::BindResponse* response = nullptr) {
    grpc::ClientContext context;
    anima::v1::BindRequest request;
    request.set_secret(secret);
    anima::v1::BindResponse ignored;
    return stub_->Bind(&context, request, response != nullptr ? response : &ignored);
  }

  grpc::Status Put(const std::vector<std::pair<std::string, std::string>>& files,
                   anima::v1::PutWorkspaceResponse* response = nullptr, int64_t max_bytes = 0,
                   int max_files = 0, const std::string& secret = kSecret) {
    grpc::ClientContext context;
    Authorize(context, secret);
    anima::v1::PutWorkspaceRequest request;
    for (const auto& [path, content] : files) {
      auto* file = request.add_files();
      file->set_path(path);
      file->set_content(content);
    }
    request.set_max_bytes(max_bytes);
    request.set_max_files(max_files);
    anima::v1::PutWorkspaceResponse ignored;
    return stub_->PutWorkspace(&context, request, response != nullptr ? response : &ignored);
  }

  grpc::Status Release(const std::string& secret = kSecret) {
    grpc::ClientContext context;
    Authorize(context, secret);
    anima::v1::ReleaseResponse response;
    return stub_->Release(&context, anima::v1::ReleaseRequest(), &response);
  }

  // Everything one Run call returned.
  struct RunOutcome {
    grpc::Status status;
    std::vector<std::string> outputs;  // the output events, in order
    std::optional<anima::v1::RunCommandResult> result;
    int events_after_result = 0;
    std::string output() const {
      std::string all;
      for (const auto& o : outputs) all += o;
      return all;
    }
  };

  // `prepare` may set a deadline or keep the context to cancel the call from another thread.
  RunOutcome Run(const anima::v1::RunCommandRequest& request, const std::string& secret = kSecret,
                 const std::function<void(grpc::ClientContext&)>& prepare = nullptr) {
    grpc::ClientContext context;
    Authorize(context, secret);
    if (prepare) prepare(context);
    RunOutcome out;
    auto reader = stub_->Run(&context, request);
    anima::v1::RunCommandEvent event;
    while (reader->Read(&event)) {
      if (out.result) out.events_after_result++;
      if (event.has_result()) {
        out.result = event.result();
      } else {
        out.outputs.push_back(event.output());
      }
    }
    out.status = reader->Finish();
    return out;
  }

  static anima::v1::RunCommandRequest Command(std::vector<std::string> argv) {
    anima::v1::RunCommandRequest request;
    for (auto& a : argv) request.add_argv(std::move(a));
    return request;
  }

  anima::v1::SandboxRunner::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<anima::v1::SandboxRunner::Stub> stub_;
};

}  // namespace anima::sandboxrunner::testing
