// anima-word-count: an example external module. It implements anima.v1.Module/Handle, and the
// router sends it every `word_count` message once its routing entry (router.json beside this
// file) is in the router's --config. Nothing in the gateway changes for a new module.
#include <atomic>
#include <iostream>

#include "anima/v1/introspection.grpc.pb.h"
#include "anima/v1/module.grpc.pb.h"
#include "services/common/flags.h"
#include "services/common/grpc_server.h"
#include "services/common/metrics.h"
#include "services/common/process.h"
#include "services/common/service_flags.h"
#include "spdlog/spdlog.h"
#include "tools/word_count/word_count.h"

namespace {

class WordCountModule final : public anima::v1::Module::Service {
 public:
  grpc::Status Handle(grpc::ServerContext* context, const anima::v1::ModuleRequest* request,
                      grpc::ServerWriter<anima::v1::ModuleEvent>* writer) override {
    ++handled_;
    auto result = anima::wordcount::CountWords(request->payload_json());
    if (!result.ok()) {
      // Errors travel as gRPC status; the router turns INVALID_ARGUMENT into invalid_message.
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          std::string(result.status().message()));
    }
    anima::v1::ModuleEvent event;
    event.set_payload_json(*result);
    event.set_final(true);
    writer->Write(event);
    return grpc::Status::OK;
  }
  int64_t handled() const { return handled_; }

 private:
  std::atomic<int64_t> handled_{0};
};

class WordCountIntrospection final : public anima::v1::Introspection::Service {
 public:
  explicit WordCountIntrospection(const WordCountModule* module) : module_(module) {}
  grpc::Status Describe(grpc::ServerContext*, const anima::v1::DescribeRequest*,
                        anima::v1::DescribeResponse* response) override {
    response->set_service("word-count");
    auto* m = response->add_modules();
    m->set_name("word-count");
    m->set_service("word-count");
    m->set_kind("module");
    m->set_health(anima::v1::MODULE_HEALTH_HEALTHY);
    (*m->mutable_counters())["handled_total"] = static_cast<double>(module_->handled());
    return grpc::Status::OK;
  }

 private:
  const WordCountModule* module_;
};

int Run(int argc, char** argv) {
  anima::common::BlockShutdownSignals();
  anima::common::ServiceFlags service{.port = 50060, .metrics_port = 9105};
  anima::common::FlagSet flags("anima-word-count");
  anima::common::AddServiceFlags(flags, "ANIMA_WORD_COUNT", "gRPC port (0 picks a free one)",
                                 &service);
  if (auto s = flags.Parse(argc, argv); !s.ok()) {
    std::cerr << "anima-word-count: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  if (auto s = anima::common::InitService(service, "word-count"); !s.ok()) {
    std::cerr << "anima-word-count: " << s.message() << "\n";
    return 2;
  }
  auto metrics = anima::common::StartMetricsServer(service);
  if (!metrics.ok()) {
    spdlog::error("{}", std::string(metrics.status().message()));
    return 1;
  }
  WordCountModule module;
  WordCountIntrospection introspection(&module);
  auto server = anima::common::GrpcServer::Start(service.bind + ":" + std::to_string(service.port),
                                                 {&module, &introspection}, (*metrics)->registry());
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  spdlog::info("listening on {}:{} (gRPC), metrics on :{}", service.bind, (*server)->port(),
               (*metrics)->port());
  if (auto s = anima::common::WriteReadyFile(
          service.ready_file, {{"grpc", (*server)->port()}, {"metrics", (*metrics)->port()}});
      !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }
  anima::common::WaitForShutdownSignal();
  (*server)->Shutdown(std::chrono::seconds(5));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return anima::common::RunMain("anima-word-count", Run, argc, argv);
}
