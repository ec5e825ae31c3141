// Every Anima gRPC service answers server reflection as grpcurl asks it: the list of its services,
// and the description of each, grpc.health.v1.Health included (docs/grpcurl.md). The client is
// gRPC's own reflection protocol, generated from Debian's grpc-proto.
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/harness/system.h"

namespace anima::testing {
namespace {

namespace reflection = grpc::reflection::v1alpha;

// One reflection stream to a service at `port`, as grpcurl opens it.
class ReflectionClient {
 public:
  explicit ReflectionClient(int port)
      : stub_(reflection::ServerReflection::NewStub(grpc::CreateChannel(
            "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()))) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    stream_ = stub_->ServerReflectionInfo(&context_);
  }

  ~ReflectionClient() {
    stream_->WritesDone();
    reflection::ServerReflectionResponse rest;
    while (stream_->Read(&rest)) {
    }
    stream_->Finish().IgnoreError();
  }

  std::set<std::string> ListServices() {
    reflection::ServerReflectionRequest request;
    request.set_list_services("");
    std::set<std::string> names;
    auto response = Ask(request);
    for (const auto& service : response.list_services_response().service()) {
      names.insert(service.name());
    }
    return names;
  }

  // The files describing `symbol` (the file declaring it first), or none with the error.
  std::vector<google::protobuf::FileDescriptorProto> FilesFor(const std::string& symbol,
                                                              std::string* error) {
    reflection::ServerReflectionRequest request;
    request.set_file_containing_symbol(symbol);
    auto response = Ask(request);
    std::vector<google::protobuf::FileDescriptorProto> files;
    error->clear();
    if (response.has_error_response()) {
      *error = response.error_response().error_message();
      return files;
    }
    for (const auto& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      files.emplace_back().ParseFromString(bytes);
    }
    return files;
  }

 private:
  reflection::ServerReflectionResponse Ask(const reflection::ServerReflectionRequest& request) {
    reflection::ServerReflectionResponse response;
    EXPECT_TRUE(stream_->Write(request));
    EXPECT_TRUE(stream_->Read(&response));
    return response;
  }

  std::unique_ptr<reflection::ServerReflection::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<reflection::ServerReflectionRequest,
                                           reflection::ServerReflectionResponse>>
      stream_;
};

// The methods of service `name` in the first of `files` that declares it.
std::vector<std::string> MethodsOf(const std::vector<google::protobuf::FileDescriptorProto>& files,
                                   const std::string& package, const std::string& name) {
  std::vector<std::string> methods;
  for (const auto& file : files) {
    if (file.package() != package) continue;
    for (const auto& service : file.service()) {
      if (service.name() != name) continue;
      for (const auto& method : service.method()) methods.push_back(method.name());
      return methods;
    }
  }
  return methods;
}

class GrpcReflectionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    system_ = new System();
    data_dir_ =
        std::filesystem::temp_directory_path() / ("anima-reflection-" + std::to_string(::getpid()));
    ASSERT_TRUE(system_->StartSim());
    ASSERT_TRUE(system_->StartBroker());
    ASSERT_TRUE(system_->StartSelfCoding(data_dir_.string()));
    ASSERT_TRUE(system_->StartWordCount());
    ASSERT_TRUE(system_->StartRouter());
  }
  static void TearDownTestSuite() {
    delete system_;
    system_ = nullptr;
    std::filesystem::remove_all(data_dir_);
  }

  // Lists `own` (package.Service) and grpc.health.v1.Health, and describes both.
  static void ExpectDescribed(Process* service, const std::string& package, const std::string& name,
                              const std::string& method) {
    ASSERT_NE(service, nullptr);
    ReflectionClient client(service->port("grpc"));
    std::set<std::string> listed = client.ListServices();
    EXPECT_TRUE(listed.count(package + "." + name)) << package << "." << name;
    EXPECT_TRUE(listed.count("grpc.health.v1.Health"));
    EXPECT_TRUE(listed.count("grpc.reflection.v1alpha.ServerReflection"));

    std::string error;
    auto health = client.FilesFor("grpc.health.v1.Health", &error);
    EXPECT_EQ(error, "");
    EXPECT_EQ(MethodsOf(health, "grpc.health.v1", "Health"),
              (std::vector<std::string>{"Check", "Watch"}));
    auto own = client.FilesFor(package + "." + name, &error);
    EXPECT_EQ(error, "");
    auto methods = MethodsOf(own, package, name);
    EXPECT_NE(std::find(methods.begin(), methods.end(), method), methods.end())
        << package << "." << name << " has no method " << method;

    auto unknown = client.FilesFor("anima.v1.NoSuchService", &error);
    EXPECT_TRUE(unknown.empty());
    EXPECT_NE(error, "");
  }

  static System* system_;
  static std::filesystem::path data_dir_;
};

System* GrpcReflectionTest::system_ = nullptr;
std::filesystem::path GrpcReflectionTest::data_dir_;

TEST_F(GrpcReflectionTest, BrokerDescribesItselfAndHealth) {
  ExpectDescribed(system_->broker(), "anima.v1", "LlmBroker", "StreamComplete");
}

TEST_F(GrpcReflectionTest, SelfCodingDescribesItselfAndHealth) {
  ExpectDescribed(system_->self_coding(), "anima.v1", "SelfCoding", "Watch");
}

TEST_F(GrpcReflectionTest, RouterDescribesItselfAndHealth) {
  ExpectDescribed(system_->router(), "anima.v1", "Router", "Dispatch");
}

TEST_F(GrpcReflectionTest, WordCountModuleDescribesItselfAndHealth) {
  ExpectDescribed(system_->word_count(), "anima.v1", "Module", "Handle");
}

}  // namespace
}  // namespace anima::testing
