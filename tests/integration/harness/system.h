#pragma once

// Anima as the system tests run it: the real binaries, each on free ports and wired to the ones
// started before it. A test starts the parts it needs, back ends first:
//
//   System system;
//   ASSERT_TRUE(system.StartSim({"--rules=" + rules}));
//   ASSERT_TRUE(system.StartBroker());
//   ASSERT_TRUE(system.StartRouter());
//   ASSERT_TRUE(system.StartGateway());
//   WsClient ws;
//   ASSERT_TRUE(ws.Connect(system.gateway()->port("http")));
//
// Every binary gets --port=0 and --metrics-port=0 first, then its own flags. When the System goes
// away it kills what it started, the last started first.

#include <memory>
#include <string>
#include <vector>

#include "tests/integration/harness/harness.h"

namespace anima::testing {

class System {
 public:
  System() = default;
  System(const System&) = delete;
  System& operator=(const System&) = delete;
  ~System();

  // Each Start* returns false (the process's log printed) when the binary did not become ready,
  // or when a service it needs has not been started. Start each service at most once.

  // anima-llm-sim with `flags`, e.g. --rules=<file>.
  bool StartSim(std::vector<std::string> flags = {});
  // anima-llm-broker with the simulator's config and its OpenAI provider at the simulator, then
  // `flags` (e.g. more providers' base URLs).
  bool StartBroker(std::vector<std::string> flags = {});
  // anima-self-coding, generating through the broker and keeping its jobs in `data_dir`.
  bool StartSelfCoding(const std::string& data_dir);
  // anima-word-count, a module that a router --config can route to.
  bool StartWordCount();
  // anima-router with `flags`, then --broker and --self-coding for those of them that run.
  bool StartRouter(std::vector<std::string> flags = {});
  // anima-gateway in front of the router, then `flags` (e.g. --auth-keys-file=...).
  bool StartGateway(std::vector<std::string> flags = {});

  // Starts a gRPC service (broker, self-coding, word-count or router) that the test has stopped
  // again, with the flags it had and on the gRPC port it had, so that the services in front of it
  // can reconnect. False as Start* is.
  bool Restart(Process* service);

  // The running services; nullptr for one not started.
  Process* sim() const { return Find(kSim); }
  Process* broker() const { return Find(kBroker); }
  Process* self_coding() const { return Find(kSelfCoding); }
  Process* word_count() const { return Find(kWordCount); }
  Process* router() const { return Find(kRouter); }
  Process* gateway() const { return Find(kGateway); }

 private:
  static constexpr char kSim[] = "anima-llm-sim";
  static constexpr char kBroker[] = "anima-llm-broker";
  static constexpr char kSelfCoding[] = "anima-self-coding";
  static constexpr char kWordCount[] = "anima-word-count";
  static constexpr char kRouter[] = "anima-router";
  static constexpr char kGateway[] = "anima-gateway";

  struct Service {
    std::string binary;
    std::vector<std::string> flags;  // after --port and --metrics-port
    std::unique_ptr<Process> process;
  };

  bool Start(const std::string& binary, std::vector<std::string> flags);
  Process* Find(const std::string& binary) const;

  std::vector<Service> services_;  // in the order they were started
};

}  // namespace anima::testing
