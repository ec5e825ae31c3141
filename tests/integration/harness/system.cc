#include "tests/integration/harness/system.h"

#include <iostream>
#include <utility>

namespace anima::testing {

namespace {

std::unique_ptr<Process> Launch(const std::string& binary, int port,
                                const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"--port=" + std::to_string(port), "--metrics-port=0"};
  args.insert(args.end(), flags.begin(), flags.end());
  return Process::Start(binary, std::move(args));
}

// Whether `dependency` runs; if not, says that `binary` needs it.
bool Started(const Process* dependency, const std::string& dependency_name,
             const std::string& binary) {
  if (dependency != nullptr) return true;
  std::cerr << binary << " needs " << dependency_name << ", which is not running\n";
  return false;
}

}  // namespace

System::~System() {
  for (auto it = services_.rbegin(); it != services_.rend(); ++it) it->process.reset();
}

bool System::StartSim(std::vector<std::string> flags) { return Start(kSim, std::move(flags)); }

bool System::StartBroker(std::vector<std::string> flags) {
  if (!Started(sim(), kSim, kBroker)) return false;
  flags.insert(
      flags.begin(),
      {"--config=" + SourceDir() + "/services/llm_broker/config.sim.json",
       "--openai-base-url=http://127.0.0.1:" + std::to_string(sim()->port("http")) + "/v1"});
  return Start(kBroker, std::move(flags));
}

bool System::StartSelfCoding(const std::string& data_dir) {
  if (!Started(broker(), kBroker, kSelfCoding)) return false;
  return Start(kSelfCoding, {"--broker=" + broker()->address("grpc"), "--data-dir=" + data_dir});
}

bool System::StartWordCount() { return Start(kWordCount, {}); }

bool System::StartRouter(std::vector<std::string> flags) {
  if (broker() != nullptr) flags.push_back("--broker=" + broker()->address("grpc"));
  if (self_coding() != nullptr) flags.push_back("--self-coding=" + self_coding()->address("grpc"));
  return Start(kRouter, std::move(flags));
}

bool System::StartGateway(std::vector<std::string> flags) {
  if (!Started(router(), kRouter, kGateway)) return false;
  flags.insert(flags.begin(), "--router=" + router()->address("grpc"));
  return Start(kGateway, std::move(flags));
}

bool System::Restart(Process* service) {
  if (service == nullptr) return false;
  for (auto& s : services_) {
    if (s.process.get() != service) continue;
    int port = service->port("grpc");
    s.process.reset();  // killed if it still runs, so that its port is free
    s.process = Launch(s.binary, port, s.flags);
    return s.process != nullptr;
  }
  return false;
}

bool System::Start(const std::string& binary, std::vector<std::string> flags) {
  auto process = Launch(binary, 0, flags);
  if (process == nullptr) return false;
  services_.push_back({binary, std::move(flags), std::move(process)});
  return true;
}

Process* System::Find(const std::string& binary) const {
  for (const auto& s : services_) {
    if (s.binary == binary) return s.process.get();
  }
  return nullptr;
}

}  // namespace anima::testing
